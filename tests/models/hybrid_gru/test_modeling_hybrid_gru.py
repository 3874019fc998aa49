"""Core model tests: cached == uncached, padded == unpadded, saved == reloaded, and transformers' common checks."""

import warnings

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DynamicCache,
)

from hf_gru import (
    HybridGRUForCausalLM,
    HybridGRUForQuestionAnswering,
    HybridGRUForSequenceClassification,
    HybridGRUForTokenClassification,
    HybridGRUModel,
)
from tests.helpers import assert_close, run_without_hf_gru, tiny_config

VARIANTS = ["gru", "mingru"]
PATTERNS = ["GGA", "GAG", "GA"]
CASES = [(v, p) for v in VARIANTS for p in PATTERNS]
ATOL = 1e-4  # the bar for cached vs full logits; observed differences are ~1e-7


def lm(variant: str = "gru", pattern: str = "GGA", **overrides) -> HybridGRUForCausalLM:
    return HybridGRUForCausalLM(tiny_config(gru_variant=variant, block_pattern=pattern, **overrides)).eval()


def random_ids(batch: int, length: int, low: int = 3) -> torch.Tensor:
    return torch.randint(low, 99, (batch, length))


# --- cached vs uncached ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "pattern"), CASES)
def test_prefill_then_single_token_decode_matches_full_forward(variant, pattern):
    model, ids = lm(variant, pattern), random_ids(2, 12)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :5], use_cache=True)
        steps = [out.logits]
        for t in range(5, ids.shape[1]):
            out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
    assert_close(torch.cat(steps, 1), full, ATOL)


@pytest.mark.parametrize(("variant", "pattern"), CASES)
def test_prefill_then_multi_token_chunks_match_full_forward(variant, pattern):
    model, ids = lm(variant, pattern), random_ids(2, 14)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :5], use_cache=True)
        chunks = [out.logits]
        for start in range(5, ids.shape[1], 3):
            out = model(ids[:, start : start + 3], cache=out.cache, use_cache=True)
            chunks.append(out.logits)
    assert_close(torch.cat(chunks, 1), full, ATOL)


def test_gru_state_is_stored_in_cache_and_read_back():
    """Corrupting the cached GRU state must change the next step: the state really is carried in the cache."""
    model, ids = lm("gru", "GGA"), random_ids(1, 6)
    with torch.no_grad():
        out = model(ids, use_cache=True)
        nxt = model(ids[:, -1:], cache=out.cache, use_cache=True).logits
        cache = model(ids, use_cache=True).cache
        cache.update_recurrent_state(torch.zeros_like(cache.get_recurrent_state(0)), 0)
        corrupted = model(ids[:, -1:], cache=cache, use_cache=True).logits
    assert (nxt - corrupted).abs().max() > 1e-4


# --- padding ---------------------------------------------------------------------------------------------------


def left_pad(rows: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :], mask[i, width - len(row) :] = row, 1
    return ids, mask


@pytest.mark.parametrize(("variant", "pattern"), CASES)
def test_left_padded_batch_matches_rows_run_alone(variant, pattern):
    model = lm(variant, pattern)
    rows = [random_ids(1, n)[0] for n in (9, 4, 6)]
    ids, mask = left_pad(rows)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            alone = model(row[None]).logits[0]
            assert_close(batched[i, -len(row) :], alone, ATOL, f"row {i}")


@pytest.mark.parametrize(("variant", "pattern"), CASES)
def test_left_padded_greedy_generate_matches_rows_run_alone(variant, pattern):
    model = lm(variant, pattern)
    rows = [random_ids(1, n)[0] for n in (7, 3)]
    ids, mask = left_pad(rows)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        batched = model.generate(ids, attention_mask=mask, **kwargs)
        for i, row in enumerate(rows):
            alone = model.generate(row[None], **kwargs)
            assert torch.equal(batched[i, -(len(row) + 6) :], alone[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_right_padding_does_not_change_real_tokens(variant):
    model = lm(variant, "GAG")
    ids = random_ids(2, 8)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        alone = model(ids[1:, :5]).logits
    assert_close(batched[1, :5], alone[0], ATOL)


# --- generate --------------------------------------------------------------------------------------------------


def generate(model, ids, **kwargs):
    kwargs = {"max_new_tokens": 6, "pad_token_id": 0, "eos_token_id": None, "return_dict_in_generate": True, **kwargs}
    with torch.no_grad():
        return model.generate(ids, output_scores=True, **kwargs)


@pytest.mark.parametrize(("variant", "pattern"), CASES)
@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_with_and_without_cache_agree(variant, pattern, num_beams):
    model, ids = lm(variant, pattern), random_ids(2, 5)
    cached = generate(model, ids, num_beams=num_beams, do_sample=False)
    uncached = generate(model, ids, num_beams=num_beams, do_sample=False, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.scores, uncached.scores, strict=True):
        finite = torch.isfinite(a) & torch.isfinite(b)
        assert_close(a[finite], b[finite], ATOL)


@pytest.mark.parametrize(("variant", "pattern"), CASES)
def test_static_cache_matches_dynamic_cache(variant, pattern):
    model, ids = lm(variant, pattern), random_ids(2, 5)
    dynamic = generate(model, ids, do_sample=False)
    static = generate(model, ids, do_sample=False, cache_implementation="static")
    assert torch.equal(dynamic.sequences, static.sequences)
    for a, b in zip(dynamic.scores, static.scores, strict=True):
        assert_close(a, b, ATOL)


def test_beam_search_reorders_gru_state():
    """Beams that diverge must each keep their own GRU state: compare every returned beam with a cache-free rescoring."""
    model, ids = lm("gru", "GGA"), random_ids(1, 4)
    out = generate(model, ids, num_beams=4, num_return_sequences=4, do_sample=False, output_logits=True)
    assert len({tuple(s.tolist()) for s in out.sequences}) > 1, "beams did not diverge; the test would be vacuous"
    with torch.no_grad():
        for sequence, score in zip(out.sequences, out.sequences_scores, strict=True):
            log_probs = model(sequence[None]).logits.log_softmax(-1)[0, ids.shape[1] - 1 : -1]
            new_tokens = sequence[ids.shape[1] :]
            total = log_probs.gather(-1, new_tokens[:, None]).sum()
            assert_close(total / len(new_tokens), score, 1e-3)


def test_sampling_is_reproducible_and_matches_uncached():
    model, ids = lm("mingru", "GGA"), random_ids(2, 5)
    torch.manual_seed(7)
    a = generate(model, ids, do_sample=True, top_k=20).sequences
    torch.manual_seed(7)
    b = generate(model, ids, do_sample=True, top_k=20, use_cache=False).sequences
    assert torch.equal(a, b)


# --- save / load ----------------------------------------------------------------------------------------------

HEADS = [
    (AutoModel, HybridGRUModel, {}),
    (AutoModelForCausalLM, HybridGRUForCausalLM, {}),
    (AutoModelForSequenceClassification, HybridGRUForSequenceClassification, {"num_labels": 3}),
    (AutoModelForTokenClassification, HybridGRUForTokenClassification, {"num_labels": 5}),
    (AutoModelForQuestionAnswering, HybridGRUForQuestionAnswering, {}),
]


def first_output(outputs) -> torch.Tensor:
    return outputs.to_tuple()[0] if outputs.get("loss") is None else outputs.to_tuple()[1]


@pytest.mark.parametrize(("auto_class", "model_class", "overrides"), HEADS)
def test_save_and_reload_through_auto_classes(tmp_path, auto_class, model_class, overrides):
    model = model_class(tiny_config(**overrides)).eval()
    ids = random_ids(2, 7)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded) is model_class
    with torch.no_grad():
        assert torch.equal(first_output(model(ids)), first_output(reloaded(ids)))


def test_saved_folder_has_full_auto_map_and_code(tmp_path):
    HybridGRUForCausalLM(tiny_config()).save_pretrained(tmp_path)
    auto_map = AutoConfig.from_pretrained(tmp_path).auto_map
    for name in ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification",
                 "AutoModelForTokenClassification", "AutoModelForQuestionAnswering"):  # fmt: skip
        module = auto_map[name].split(".")[0]
        assert (tmp_path / f"{module}.py").is_file(), name


REMOTE_LOAD = """
import json, torch
from transformers import AutoConfig, {auto_class}
ids = torch.tensor({ids})
config = AutoConfig.from_pretrained("{folder}", trust_remote_code=True)
model = {auto_class}.from_pretrained("{folder}", trust_remote_code=True).eval()
with torch.no_grad():
    out = model(ids).logits
print(json.dumps({{"config": type(config).__name__, "model": type(model).__name__, "logits": out.tolist()}}))
"""


@pytest.mark.parametrize(
    ("auto_class", "model_class", "overrides"),
    [HEADS[1], (AutoModelForSequenceClassification, HybridGRUForSequenceClassification, {"num_labels": 3})],
)
def test_trust_remote_code_load_without_hf_gru(tmp_path, auto_class, model_class, overrides):
    model = model_class(tiny_config(**overrides)).eval()
    ids = random_ids(2, 6)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    code = REMOTE_LOAD.format(auto_class=auto_class.__name__, ids=ids.tolist(), folder=folder)
    result = run_without_hf_gru(code, cwd=tmp_path)
    assert result["config"] == "HybridGRUConfig" and result["model"] == model_class.__name__
    with torch.no_grad():
        assert_close(torch.tensor(result["logits"]), model(ids).logits, 1e-6)


def test_trust_remote_code_auto_model_without_hf_gru(tmp_path):
    model = HybridGRUModel(tiny_config()).eval()
    ids = random_ids(1, 5)
    model.save_pretrained(tmp_path / "ckpt")
    code = (
        "import json, torch\nfrom transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True).eval()\n"
        f"print(json.dumps({{'h': m(torch.tensor({ids.tolist()})).last_hidden_state.tolist()}}))"
    )
    result = run_without_hf_gru(code, cwd=tmp_path)
    with torch.no_grad():
        assert_close(torch.tensor(result["h"]), model(ids).last_hidden_state, 1e-6)


# --- heads -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_sequence_classification_ignores_padding(bidirectional):
    model = HybridGRUForSequenceClassification(tiny_config(num_labels=3, bidirectional=bidirectional)).eval()
    rows = [random_ids(1, n)[0] for n in (8, 5)]
    ids, mask = left_pad(rows)
    right_ids = torch.zeros_like(ids)
    right_mask = torch.zeros_like(mask)
    for i, row in enumerate(rows):
        right_ids[i, : len(row)], right_mask[i, : len(row)] = row, 1
    with torch.no_grad():
        left = model(ids, attention_mask=mask).logits
        right = model(right_ids, attention_mask=right_mask).logits
        alone = torch.cat([model(row[None]).logits for row in rows])
    assert_close(left, alone, ATOL)
    assert_close(right, alone, ATOL)


def test_sequence_classification_loss_and_pad_token_fallback():
    model = HybridGRUForSequenceClassification(tiny_config(num_labels=3)).eval()
    ids = random_ids(2, 6)
    ids[1, 4:] = 0  # right padding with pad_token_id, no attention mask given
    out = model(ids, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.ndim == 0
    with torch.no_grad():
        assert_close(out.logits[1], model(ids[1:, :4]).logits[0], ATOL)


def test_token_classification_and_question_answering_shapes_and_losses():
    token_model = HybridGRUForTokenClassification(tiny_config(num_labels=5, bidirectional=True))
    ids = random_ids(2, 7)
    labels = torch.randint(0, 5, (2, 7))
    labels[:, 0] = -100
    out = token_model(ids, labels=labels)
    assert out.logits.shape == (2, 7, 5) and torch.isfinite(out.loss)
    qa_model = HybridGRUForQuestionAnswering(tiny_config())
    out = qa_model(ids, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 6]))
    assert out.start_logits.shape == out.end_logits.shape == (2, 7) and torch.isfinite(out.loss)


def test_bidirectional_encoder_sees_the_future():
    model = HybridGRUModel(tiny_config(bidirectional=True, block_pattern="GA")).eval()
    ids = random_ids(1, 6)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 99
    with torch.no_grad():
        a, b = model(ids).last_hidden_state, model(changed).last_hidden_state
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-6  # the first position depends on the last token


def test_all_gru_pattern_forward_and_cached_decode():
    model, ids = lm("mingru", "G"), random_ids(2, 8)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :4], use_cache=True)
        steps = [out.logits]
        for t in range(4, 8):
            out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
    assert_close(torch.cat(steps, 1), full, ATOL)


# --- transformers' common-model checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_hidden_states_and_attentions_are_recorded(attn_implementation):
    config = tiny_config(block_pattern="GGA", num_hidden_layers=6)
    model = HybridGRUModel(config).eval()
    model.set_attn_implementation(attn_implementation)
    ids = random_ids(2, 5)
    out = model(ids, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert_close(out.hidden_states[0], model.embed_tokens(ids))
    assert len(out.attentions) == config.layer_types.count("full_attention") == 2
    assert out.attentions[0].shape == (2, config.num_attention_heads, 5, 5)
    assert_close(out.attentions[0].sum(-1), torch.ones(2, config.num_attention_heads, 5))


def padded_batch(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of lengths 7, 5, 4, padded to 7 on `side` with pad id 0 (mask 0 there)."""
    rows = [random_ids(1, n)[0] for n in (7, 5, 4)]
    ids, mask = left_pad(rows)
    if side == "right":
        ids, mask = (
            torch.stack([row.roll(-int((1 - m).sum())) for row, m in zip(ids, mask, strict=True)]),
            mask.flip(1),
        )
    return ids, mask


def attention_runs(variant: str, implementations: tuple[str, ...], side: str) -> dict:
    """Last hidden states, per-layer hidden states and attention weights of one saved model loaded with each attention
    implementation, with and without `output_attentions`."""
    base = HybridGRUModel(tiny_config(num_hidden_layers=2, block_pattern="GA", gru_variant=variant)).eval()
    ids, mask = padded_batch(side)
    runs = {}
    for implementation in implementations:
        model = HybridGRUModel(base.config).eval()
        model.load_state_dict(base.state_dict())
        model.set_attn_implementation(implementation)
        for output_attentions in (False, True):
            with torch.no_grad():
                out = model(ids, attention_mask=mask, output_attentions=output_attentions, output_hidden_states=True)
            runs[implementation, output_attentions] = out
    return {"runs": runs, "real": mask.bool()}


def check_attention_runs_agree(results: dict) -> None:
    runs, real = results["runs"], results["real"]
    reference = runs["eager", True]
    for key, out in runs.items():
        assert_close(out.last_hidden_state[real], reference.last_hidden_state[real], 1e-5, f"{key}")
        for layer, (hidden, expected) in enumerate(zip(out.hidden_states, reference.hidden_states, strict=True)):
            assert_close(hidden[real], expected[real], 1e-5, f"{key} hidden state {layer}")
        if key[1]:  # weights asked for: the same weights, and real queries put none on padded keys
            (weights,) = out.attentions
            assert_close(weights, reference.attentions[0], 1e-6, f"{key} attention weights")
            real_query_padded_key = real[:, None, :, None] & ~real[:, None, None, :]
            on_padding = weights.masked_select(real_query_padded_key.expand_as(weights))
            assert on_padding.abs().max() == 0, f"{key}: weight {on_padding.abs().max().item()} on a padded key"


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_eager_and_sdpa_agree_with_and_without_attention_outputs(variant, side):
    """Asking SDPA for the weights runs eager attention for that call, with a mask built for eager (issue: the SDPA
    mask added as 0/1 to the scores put weight on padded keys and moved real tokens' outputs by ~1)."""
    check_attention_runs_agree(attention_runs(variant, ("eager", "sdpa"), side))


@pytest.mark.slow
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_flex_attention_agrees_with_eager(variant, side):
    """flex_attention on CPU compiles its kernel on first use (a minute here), hence slow."""
    check_attention_runs_agree(attention_runs(variant, ("eager", "flex_attention"), side))


def test_return_dict_false_matches_dict_outputs():
    model, ids = lm("gru", "GGA"), random_ids(2, 5)
    labels = ids.clone()
    with torch.no_grad():
        as_dict = model(ids, labels=labels, use_cache=True)
        as_tuple = model(ids, labels=labels, use_cache=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], as_dict.loss) and torch.equal(as_tuple[1], as_dict.logits)


@pytest.mark.parametrize(
    "rope_parameters",
    [
        {"rope_type": "linear", "factor": 2.0},
        {"rope_type": "dynamic", "factor": 2.0},
        {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64},
        {
            "rope_type": "longrope",
            "short_factor": [1.0] * 4,
            "long_factor": [2.0] * 4,
            "original_max_position_embeddings": 64,
        },
        {
            "rope_type": "llama3",
            "factor": 2.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ],
)
def test_rope_scaling_types(rope_parameters):
    base = lm("gru", "GA", max_position_embeddings=64)
    scaled = lm("gru", "GA", max_position_embeddings=64, rope_parameters={"rope_theta": 10000.0, **rope_parameters})
    scaled.load_state_dict(base.state_dict())
    ids = random_ids(1, 100)
    with torch.no_grad():
        full = scaled(ids).logits
        out = scaled(ids[:, :90], use_cache=True)
        for t in range(90, 100):
            out = scaled(ids[:, t : t + 1], cache=out.cache, use_cache=True)
        assert (full - base(ids).logits).abs().max() > 1e-6  # the scaling is actually applied
    assert torch.isfinite(full).all()
    if rope_parameters["rope_type"] != "dynamic":  # dynamic rescales with the current length, by design
        assert_close(out.logits[:, -1], full[:, -1], ATOL)


def test_deprecated_past_key_values_argument_still_works():
    model, ids = lm("gru", "GGA"), random_ids(1, 6)
    with torch.no_grad():
        out = model(ids[:, :5], use_cache=True)
        expected = model(ids[:, 5:], cache=out.cache, use_cache=True).logits
        out = model(ids[:, :5], use_cache=True)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            legacy = model(ids[:, 5:], past_key_values=out.cache, use_cache=True).logits
    assert_close(legacy, expected, 1e-6)


def test_unknown_keywords_are_type_errors_and_single_segment_token_type_ids_are_accepted():
    model, ids = lm("gru", "GGA"), random_ids(2, 6)
    with pytest.raises(TypeError, match=r"\['past_key_value'\]"):
        model(ids, past_key_value=None)  # a typo of the deprecated name: refused, not dropped
    with torch.no_grad():
        plain = model(ids).logits
        # what model(**bert_tokenizer(texts)) passes
        assert_close(model(ids, token_type_ids=torch.zeros_like(ids)).logits, plain, 0.0)
    pairs = torch.zeros_like(ids)
    pairs[:, 3:] = 1
    with pytest.raises(ValueError, match=r"token_type_ids.*\[0, 1\]"):
        model(ids, token_type_ids=pairs)


def test_torch_compile_forward_matches_eager():
    model, ids = lm("mingru", "GGA"), random_ids(2, 6)
    compiled = torch.compile(model, backend="eager")  # exercises dynamo tracing without a C++ toolchain
    with torch.no_grad():
        assert_close(compiled(ids).logits, model(ids).logits, 1e-5)


def test_explicit_dynamic_cache_from_config():
    model, ids = lm("gru", "GAG"), random_ids(1, 6)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(ids[:, :3], cache=cache, use_cache=True)
        step = model(ids[:, 3:], cache=cache, use_cache=True).logits
        full = model(ids).logits
    assert_close(step, full[:, 3:], ATOL)
    assert cache.get_seq_length() == 6


def test_inputs_embeds_equal_input_ids():
    model, ids = lm("gru", "GGA"), random_ids(2, 5)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        assert_close(model(inputs_embeds=embeds).logits, model(ids).logits, 1e-6)


def test_push_to_hub_uploads_the_save_pretrained_folder(tmp_path, monkeypatch):
    """Stubs only the network calls; the folder handed to the uploader must be exactly what save_pretrained writes."""
    import transformers.utils.hub as hub

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

    uploaded = {}

    def fake_upload(self, folder, repo_id, **kwargs):
        uploaded.update({p.name: p.read_bytes() for p in sorted(__import__("pathlib").Path(folder).iterdir())})

    monkeypatch.setattr(hub, "hf_api", lambda: FakeApi())
    monkeypatch.setattr(
        hub, "create_and_tag_model_card", lambda *a, **k: type("Card", (), {"save": lambda s, p: None})()
    )
    monkeypatch.setattr(HybridGRUForCausalLM, "_upload_modified_files", fake_upload)
    model = lm("gru", "GGA")
    model.push_to_hub("someone/hybrid-gru-test")
    model.save_pretrained(tmp_path)
    saved = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert uploaded.keys() == saved.keys()
    assert {
        "config.json",
        "model.safetensors",
        "modeling_hybrid_gru.py",
        "configuration_hybrid_gru.py",
    } <= saved.keys()
    assert uploaded["model.safetensors"] == saved["model.safetensors"]


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_sliding_window_layers_cached_and_static_match_full(attn_implementation):
    model = lm("gru", "GLA", sliding_window=4)
    model.set_attn_implementation(attn_implementation)
    ids = random_ids(2, 12)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :5], use_cache=True)
        steps = [out.logits]
        for t in range(5, 12):
            out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
    assert_close(torch.cat(steps, 1), full, ATOL)
    dynamic = generate(model, ids, do_sample=False, max_new_tokens=8)
    static = generate(model, ids, do_sample=False, max_new_tokens=8, cache_implementation="static")
    assert torch.equal(dynamic.sequences, static.sequences)


@pytest.mark.parametrize(
    ("model_class", "overrides", "labels", "needle"),
    [
        (HybridGRUForCausalLM, {}, torch.tensor([[1, 2, 99]]), "99"),
        (HybridGRUForCausalLM, {}, torch.tensor([[1, -5, 3]]), "-5"),
        (HybridGRUForSequenceClassification, {"num_labels": 3}, torch.tensor([3]), "3"),
        (HybridGRUForTokenClassification, {"num_labels": 5}, torch.tensor([[0, -100, 7]]), "7"),
    ],
)
def test_out_of_range_labels_raise_value_error(model_class, overrides, labels, needle):
    model = model_class(tiny_config(**overrides))
    ids = random_ids(1, labels.shape[-1] if labels.ndim == 2 else 3)
    with pytest.raises(ValueError, match=f"`labels` contains {needle}, outside"):
        model(ids, labels=labels)
