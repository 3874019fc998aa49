"""HybridGRUForCTC: shapes, CTC training, padding, streaming == offline, save/reload (in process and as remote code)."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCTC

from hf_gru import HybridGRUForCTC
from hf_gru.models.hybrid_gru.modeling_hybrid_gru_ctc import HybridGRUConvSubsampler
from hf_gru.tasks.speech import CTC_VOCAB
from tests.helpers import assert_close, run_without_hf_gru, tiny_config

NUM_MEL_BINS = 16
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ctc_config(**overrides):
    values = dict(
        vocab_size=len(CTC_VOCAB),
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
        num_mel_bins=NUM_MEL_BINS,
        conv_subsampling_channels=24,
    )
    values.update(overrides)
    return tiny_config(**values)


def ctc_model(**overrides) -> HybridGRUForCTC:
    return HybridGRUForCTC(ctc_config(**overrides)).eval()


def synthetic_utterances(num: int, frames_per_token: int = 8, seed: int = 0):
    """Each token is a fixed random mel pattern held for `frames_per_token` frames (plus noise); labels are the tokens.

    A stand-in for speech that a CTC model can learn in a few dozen steps. Returns padded features, mask, labels.
    """
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.randn(len(CTC_VOCAB), NUM_MEL_BINS, generator=gen) * 3
    features, labels = [], []
    for _ in range(num):
        tokens = torch.randint(3, 12, (int(torch.randint(3, 7, (1,), generator=gen)),), generator=gen)
        frames = patterns[tokens].repeat_interleave(frames_per_token, dim=0)
        features.append(frames + 0.3 * torch.randn(frames.shape, generator=gen))
        labels.append(tokens)
    length = max(len(f) for f in features)
    padded = torch.zeros(num, length, NUM_MEL_BINS)
    mask = torch.zeros(num, length, dtype=torch.long)
    label_ids = torch.full((num, max(len(t) for t in labels)), -100)
    for i, (f, t) in enumerate(zip(features, labels, strict=True)):
        padded[i, : len(f)], mask[i, : len(f)], label_ids[i, : len(t)] = f, 1, t
    return padded, mask, label_ids


# --- shapes and input checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5, 17, 40])
def test_logits_shape_follows_the_4x_subsampling(frames):
    model = ctc_model()
    with torch.no_grad():
        logits = model(torch.randn(2, frames, NUM_MEL_BINS)).logits
    expected = model.get_output_lengths(torch.tensor([frames])).item()
    assert expected == math.ceil(math.ceil(frames / 2) / 2)
    assert logits.shape == (2, expected, len(CTC_VOCAB))


def test_hidden_states_are_returned_on_request():
    model = ctc_model()
    with torch.no_grad():
        out = model(torch.randn(1, 12, NUM_MEL_BINS), output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1  # the subsampler output, then each layer
    assert out.hidden_states[-1].shape == (1, 3, model.config.hidden_size)


def test_bad_inputs_raise_value_errors_naming_the_value():
    model = ctc_model()
    with pytest.raises(ValueError, match="num_mel_bins=16"):
        model(torch.randn(1, 10, 80))
    with pytest.raises(ValueError, match="no frames"):
        model(torch.randn(1, 0, NUM_MEL_BINS))
    with pytest.raises(ValueError, match="frame level"):
        model(torch.randn(1, 10, NUM_MEL_BINS), attention_mask=torch.ones(1, 1600))
    with pytest.raises(ValueError, match="token id 30"):
        model(torch.randn(1, 10, NUM_MEL_BINS), labels=torch.tensor([[3, 30]]))
    with pytest.raises(ValueError, match="pad_token_id=None"):
        HybridGRUForCTC(ctc_config(pad_token_id=None))


# --- training ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_ctc_loss_decreases_and_greedy_decoding_learns_the_tokens(bidirectional):
    """Three seeds, so one unlucky initialisation does not decide: at least 18 of 24 utterances decoded exactly."""
    correct = 0
    for seed in range(3):
        torch.manual_seed(seed)
        model = HybridGRUForCTC(ctc_config(bidirectional=bidirectional)).train()
        features, mask, labels = synthetic_utterances(8)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(60):
            loss = model(features, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        assert losses[-1] < 0.3 * losses[0], losses[::10]
        model.eval()
        with torch.no_grad():
            logits = model(features, attention_mask=mask).logits
        lengths = model.get_output_lengths(mask.sum(-1))
        for row, n, target in zip(logits.argmax(-1), lengths, labels, strict=True):
            collapsed = torch.unique_consecutive(row[:n])
            correct += collapsed[collapsed != 0].tolist() == target[target >= 0].tolist()
    assert correct >= 18, f"only {correct}/24 utterances decoded exactly"


def test_loss_ignores_label_padding_and_matches_per_utterance_losses():
    model = ctc_model(ctc_loss_reduction="sum")
    features, mask, labels = synthetic_utterances(3)
    with torch.no_grad():
        batch_loss = model(features, attention_mask=mask, labels=labels).loss
        single = sum(
            model(f[None, : m.sum()], labels=y[None, y >= 0]).loss
            for f, m, y in zip(features, mask, labels, strict=True)
        )
    assert_close(batch_loss, single, 1e-4)


# --- padding and streaming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_right_padded_rows_equal_their_unpadded_run(bidirectional):
    model = ctc_model(bidirectional=bidirectional)
    features = torch.randn(2, 29, NUM_MEL_BINS)
    mask = torch.ones(2, 29, dtype=torch.long)
    mask[1, 18:] = 0
    features[1, 18:] = 0.0
    with torch.no_grad():
        padded = model(features, attention_mask=mask).logits
        alone = model(features[1:, :18]).logits
    assert_close(padded[1, : alone.shape[1]], alone[0], ATOL)


@pytest.mark.parametrize("variant", ["gru", "mingru"])
@pytest.mark.parametrize("chunks", [[1] * 37, [5, 3, 7, 1, 21], [4] * 10, [2, 35]])
@pytest.mark.parametrize("with_mask", [False, True], ids=["no-mask", "all-ones-mask"])
def test_streaming_chunks_equal_one_offline_pass(variant, chunks, with_mask):
    model = ctc_model(gru_variant=variant)
    features = torch.randn(2, 37, NUM_MEL_BINS)
    with torch.no_grad():
        offline = model(features).logits
        cache, state, pieces, start = None, None, [], 0
        for size in chunks:
            chunk = features[:, start : start + size]
            mask = {"attention_mask": torch.ones(chunk.shape[:2], dtype=torch.long)} if with_mask else {}
            out = model(chunk, cache=cache, subsampler_state=state, use_cache=True, **mask)
            cache, state = out.cache, out.subsampler_state
            pieces.append(out.logits)
            start += size
    assert start >= 37
    assert_close(torch.cat(pieces, 1), offline, ATOL)


def test_streaming_state_is_really_used():
    """Dropping the subsampler state (or the cache) between chunks changes the logits."""
    model = ctc_model()
    features = torch.randn(1, 24, NUM_MEL_BINS)
    with torch.no_grad():
        offline = model(features).logits  # 6 output frames; the first 12 input frames give the first 3
        first = model(features[:, :12], use_cache=True)
        no_conv_state = model(features[:, 12:], cache=first.cache, use_cache=True).logits
        first = model(features[:, :12], use_cache=True)
        no_cache = model(features[:, 12:], subsampler_state=first.subsampler_state, use_cache=True).logits
    assert no_conv_state.shape == no_cache.shape == offline[:, 3:].shape
    assert (no_conv_state - offline[:, 3:]).abs().max() > 1e-3
    assert (no_cache - offline[:, 3:]).abs().max() > 1e-3


def test_streaming_refuses_bidirectional_models_and_padded_chunks():
    with pytest.raises(ValueError, match="bidirectional=True"):
        ctc_model(bidirectional=True)(torch.randn(1, 8, NUM_MEL_BINS), use_cache=True)
    mask = torch.tensor([[1, 1, 1, 0]])
    with pytest.raises(ValueError, match="unpadded"):
        ctc_model()(torch.randn(1, 4, NUM_MEL_BINS), attention_mask=mask, use_cache=True)


def test_subsampler_output_lengths_match_its_forward():
    subsampler = HybridGRUConvSubsampler(ctc_config())
    for frames in range(1, 12):
        out, _ = subsampler(torch.randn(1, frames, NUM_MEL_BINS))
        assert out.shape[1] == HybridGRUConvSubsampler.output_lengths(torch.tensor(frames)).item()


# --- save / reload -----------------------------------------------------------------------------------------------


def test_save_and_reload_through_auto_model_for_ctc(tmp_path):
    model = ctc_model(bidirectional=True)
    features = torch.randn(2, 21, NUM_MEL_BINS)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCTC"] == "modeling_hybrid_gru_ctc.HybridGRUForCTC"
    assert (tmp_path / "modeling_hybrid_gru_ctc.py").is_file()
    reloaded = AutoModelForCTC.from_pretrained(tmp_path).eval()
    assert type(reloaded) is HybridGRUForCTC
    with torch.no_grad():
        assert_close(reloaded(features).logits, model(features).logits, 0.0)


def test_remote_code_loads_in_a_process_without_hf_gru(tmp_path):
    model = ctc_model()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    features = torch.randn(1, 23, NUM_MEL_BINS)
    torch.save(features, tmp_path / "features.pt")
    code = f"""
import json, torch
from transformers import AutoModelForCTC
model = AutoModelForCTC.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(torch.load({str(tmp_path / "features.pt")!r})).logits
print(json.dumps({{"class": type(model).__module__ + "." + type(model).__name__, "logits": logits.tolist()}}))
"""
    result = run_without_hf_gru(code, cwd=tmp_path)
    assert result["class"].endswith("modeling_hybrid_gru_ctc.HybridGRUForCTC")
    assert not result["class"].startswith("hf_gru")
    with torch.no_grad():
        # same weights and code; another process may order float sums differently (seen: 7e-8)
        assert_close(torch.tensor(result["logits"]), model(features).logits, 1e-6)
