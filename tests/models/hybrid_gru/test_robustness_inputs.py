"""Bad input at the model boundary: each case alone gets a ValueError naming the argument and its bad value.

Covers `check_inputs` (every head goes through it) and the input checks of the time-series and CTC heads. The cases
are listed in .notes/issue-7.md with the error each one gets.
"""

import re

import pytest
import torch
from transformers import DynamicCache

from hf_gru import (
    HybridGRUForCausalLM,
    HybridGRUForQuestionAnswering,
    HybridGRUForSequenceClassification,
    HybridGRUForTokenClassification,
    HybridGRUModel,
)
from hf_gru.models.hybrid_gru.modeling_hybrid_gru_ctc import HybridGRUForCTC
from hf_gru.models.hybrid_gru.modeling_hybrid_gru_time_series import HybridGRUForTimeSeriesPrediction
from tests.helpers import assert_close, tiny_config

VOCAB, WIDTH, BATCH, LENGTH = 99, 32, 2, 7


def ids() -> torch.Tensor:
    return torch.randint(3, VOCAB, (BATCH, LENGTH))


def with_value(tensor: torch.Tensor, value, index=(1, 3)) -> torch.Tensor:
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


def embeds(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*(shape or (BATCH, LENGTH, WIDTH))).to(dtype)


def mask(*shape: int) -> torch.Tensor:
    return torch.ones(*(shape or (BATCH, LENGTH)), dtype=torch.long)


# (case id, inputs, pieces the message must contain: the argument's name and the bad value)
CORE_CASES = [
    ("both-ids-and-embeds", lambda: {"input_ids": ids(), "inputs_embeds": embeds()}, ["`input_ids`", "both"]),
    ("neither-ids-nor-embeds", lambda: {}, ["`inputs_embeds`", "neither"]),
    ("ids-float", lambda: {"input_ids": ids().float()}, ["`input_ids`", "torch.float32"]),
    ("ids-bool", lambda: {"input_ids": ids() > 50}, ["`input_ids`", "torch.bool"]),
    ("ids-uint8", lambda: {"input_ids": ids().to(torch.uint8)}, ["`input_ids`", "torch.uint8"]),
    ("ids-int16", lambda: {"input_ids": ids().to(torch.int16)}, ["`input_ids`", "torch.int16"]),
    ("ids-list", lambda: {"input_ids": ids().tolist()}, ["`input_ids`", "list"]),
    ("ids-1d", lambda: {"input_ids": ids()[0]}, ["`input_ids`", f"({LENGTH},)"]),
    ("ids-3d", lambda: {"input_ids": ids()[None]}, ["`input_ids`", f"(1, {BATCH}, {LENGTH})"]),
    ("ids-empty-sequence", lambda: {"input_ids": ids()[:, :0]}, ["`input_ids`", f"({BATCH}, 0)"]),
    ("ids-empty-batch", lambda: {"input_ids": ids()[:0]}, ["`input_ids`", f"(0, {LENGTH})"]),
    ("id-equals-vocab-size", lambda: {"input_ids": with_value(ids(), VOCAB)}, ["`input_ids`", "99", "vocab_size=99"]),
    ("id-negative", lambda: {"input_ids": with_value(ids(), -1)}, ["`input_ids`", "-1"]),
    ("id-huge", lambda: {"input_ids": with_value(ids(), 2**40)}, ["`input_ids`", str(2**40)]),
    ("embeds-wrong-width", lambda: {"inputs_embeds": embeds(BATCH, LENGTH, 31)}, ["`inputs_embeds`", "(2, 7, 31)"]),
    ("embeds-2d", lambda: {"inputs_embeds": embeds(LENGTH, WIDTH)}, ["`inputs_embeds`", "(7, 32)"]),
    ("embeds-int", lambda: {"inputs_embeds": embeds(dtype=torch.long)}, ["`inputs_embeds`", "torch.int64"]),
    ("embeds-float64", lambda: {"inputs_embeds": embeds(dtype=torch.float64)}, ["`inputs_embeds`", "torch.float64"]),
    ("embeds-empty-sequence", lambda: {"inputs_embeds": embeds(BATCH, 0, WIDTH)}, ["`inputs_embeds`", "(2, 0, 32)"]),
    ("embeds-empty-batch", lambda: {"inputs_embeds": embeds(0, LENGTH, WIDTH)}, ["`inputs_embeds`", "(0, 7, 32)"]),
    ("embeds-list", lambda: {"inputs_embeds": embeds().tolist()}, ["`inputs_embeds`", "list"]),
    ("embeds-nan", lambda: {"inputs_embeds": with_value(embeds(), float("nan"), (1, 3, 5))},
     ["`inputs_embeds`", "nan", "batch 1, position 3, channel 5"]),
    ("embeds-inf", lambda: {"inputs_embeds": with_value(embeds(), float("inf"), (0, 6, 0))},
     ["`inputs_embeds`", "inf", "batch 0, position 6"]),
    ("embeds-minus-inf", lambda: {"inputs_embeds": with_value(embeds(), -float("inf"), (1, 0, 2))},
     ["`inputs_embeds`", "-inf", "batch 1, position 0"]),
    ("mask-wrong-batch", lambda: {"input_ids": ids(), "attention_mask": mask(3, LENGTH)},
     ["`attention_mask`", "(3, 7)"]),
    ("mask-too-short", lambda: {"input_ids": ids(), "attention_mask": mask(BATCH, 6)}, ["`attention_mask`", "(2, 6)"]),
    ("mask-too-long-without-cache", lambda: {"input_ids": ids(), "attention_mask": mask(BATCH, 9)},
     ["`attention_mask`", "(2, 9)", "expected (2, 7)"]),
    ("mask-1d", lambda: {"input_ids": ids(), "attention_mask": mask(LENGTH)}, ["`attention_mask`", "(7,)"]),
    ("mask-4d", lambda: {"input_ids": ids(), "attention_mask": mask(BATCH, 1, LENGTH, LENGTH)},
     ["`attention_mask`", "(2, 1, 7, 7)"]),
    ("mask-list", lambda: {"input_ids": ids(), "attention_mask": mask().tolist()}, ["`attention_mask`", "list"]),
    ("mask-value-2", lambda: {"input_ids": ids(), "attention_mask": with_value(mask(), 2)}, ["`attention_mask`", "2"]),
    ("mask-value-minus-1", lambda: {"input_ids": ids(), "attention_mask": with_value(mask(), -1)},
     ["`attention_mask`", "-1"]),
    ("mask-value-half", lambda: {"input_ids": ids(), "attention_mask": with_value(mask().float(), 0.5)},
     ["`attention_mask`", "0.5"]),
    ("mask-nan", lambda: {"input_ids": ids(), "attention_mask": with_value(mask().float(), float("nan"))},
     ["`attention_mask`", "nan"]),
    ("positions-float", lambda: {"input_ids": ids(), "position_ids": torch.arange(float(LENGTH))[None]},
     ["`position_ids`", "torch.float32"]),
    ("positions-too-short", lambda: {"input_ids": ids(), "position_ids": torch.arange(LENGTH - 1)[None]},
     ["`position_ids`", "(1, 6)"]),
    ("positions-1d", lambda: {"input_ids": ids(), "position_ids": torch.arange(LENGTH)}, ["`position_ids`", "(7,)"]),
    ("positions-wrong-batch", lambda: {"input_ids": ids(), "position_ids": torch.arange(LENGTH).expand(3, -1)},
     ["`position_ids`", "(3, 7)"]),
    ("positions-negative", lambda: {"input_ids": ids(), "position_ids": torch.arange(LENGTH)[None] - 1},
     ["`position_ids`", "-1"]),
    ("cache-legacy-tuple", lambda: {"input_ids": ids(), "cache": ((torch.zeros(1),) * 2,), "use_cache": True},
     ["`cache`", "tuple"]),
    ("cache-without-config", lambda: {"input_ids": ids(), "cache": DynamicCache(), "use_cache": True},
     ["`cache`", "layer 0 is a GRU layer", "DynamicCache(config=model.config)"]),
    ("cache-of-another-pattern",
     lambda: {"input_ids": ids(), "cache": DynamicCache(config=tiny_config(block_pattern="AGA")), "use_cache": True},
     ["`cache`", "DynamicLayer at index 0"]),
]  # fmt: skip


def assert_value_error(call, pieces: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        call()
    for piece in pieces:
        assert piece in str(info.value), f"{piece!r} not in: {info.value}"


@pytest.mark.parametrize(("inputs", "pieces"), [c[1:] for c in CORE_CASES], ids=[c[0] for c in CORE_CASES])
def test_bad_input_gets_value_error_naming_argument_and_value(inputs, pieces):
    model = HybridGRUModel(tiny_config()).eval()
    assert_value_error(lambda: model(**inputs()), pieces)


HEADS = [
    (HybridGRUForCausalLM, {}),
    (HybridGRUForSequenceClassification, {"num_labels": 3}),
    (HybridGRUForTokenClassification, {"num_labels": 3, "bidirectional": True}),
    (HybridGRUForQuestionAnswering, {"bidirectional": True}),
]


@pytest.mark.parametrize(("head", "overrides"), HEADS, ids=[h[0].__name__ for h in HEADS])
def test_every_head_reports_out_of_range_ids_and_bad_mask(head, overrides):
    model = head(tiny_config(**overrides)).eval()
    assert_value_error(lambda: model(input_ids=with_value(ids(), VOCAB + 5)), ["`input_ids`", "104"])
    assert_value_error(lambda: model(input_ids=ids(), attention_mask=mask(BATCH, 3)), ["`attention_mask`", "(2, 3)"])


def test_mask_must_cover_cached_tokens():
    """Under a cache the 2-D mask spans past + new tokens (transformers' convention); a chunk-only mask would restart
    the positions at 0 and silently shift RoPE."""
    model = HybridGRUForCausalLM(tiny_config()).eval()
    tokens = ids()
    with torch.no_grad():
        out = model(tokens[:, :5], attention_mask=mask(BATCH, 5), use_cache=True)
        assert_value_error(
            lambda: model(tokens[:, 5:], attention_mask=mask(BATCH, 2), cache=out.cache, use_cache=True),
            ["`attention_mask`", "(2, 2)", "after 5 cached tokens", "expected (2, 7)"],
        )
        model(tokens[:, 5:], attention_mask=mask(BATCH, 7), cache=out.cache, use_cache=True)  # the right one works


def test_all_gru_cache_accepts_any_mask_that_covers_the_chunk():
    """An all-GRU cache counts no tokens, so only `>= seq_len` can be checked; a shorter mask is still refused."""
    model = HybridGRUForCausalLM(tiny_config(block_pattern="G")).eval()
    tokens = ids()
    with torch.no_grad():
        out = model(tokens[:, :5], use_cache=True)
        model(tokens[:, 5:], attention_mask=mask(BATCH, 7), cache=out.cache, use_cache=True)
        assert_value_error(
            lambda: model(tokens[:, 5:], attention_mask=mask(BATCH, 1), cache=out.cache, use_cache=True),
            ["`attention_mask`", "(2, 1)", "unknown number of cached tokens"],
        )


# --- accepted on purpose ------------------------------------------------------------------------------------------


def test_accepted_variants_of_valid_input():
    model = HybridGRUForCausalLM(tiny_config()).eval()
    tokens, padded = ids(), mask()
    padded[1] = 0  # a row of padding only (a chunked prefill of a left-padded batch feeds such rows)
    with torch.no_grad():
        reference = model(tokens).logits
        assert_close(model(tokens.int()).logits, reference, 0.0)
        assert_close(model(tokens, attention_mask=mask().bool()).logits, reference, 0.0)
        assert_close(model(tokens, attention_mask=mask().float()).logits, reference, 0.0)
        assert torch.isfinite(model(tokens, attention_mask=padded).logits).all()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # dtype mismatch is fine under autocast
            assert torch.isfinite(model(inputs_embeds=embeds(dtype=torch.bfloat16)).logits).all()


@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_sequences_beyond_max_position_embeddings_run_and_stream_consistently(variant):
    """Documented choice: RoPE extrapolates instead of raising. A 3x longer sequence runs, stays finite, and one call
    equals the same tokens streamed through the cache (positions continue past the limit)."""
    model = HybridGRUForCausalLM(tiny_config(gru_variant=variant, max_position_embeddings=16)).eval()
    tokens = torch.randint(3, VOCAB, (1, 48))
    with torch.no_grad():
        full = model(tokens).logits
        assert torch.isfinite(full).all()
        out, chunks = None, []
        for start in range(0, 48, 12):
            out = model(tokens[:, start : start + 12], cache=out.cache if out else None, use_cache=True)
            chunks.append(out.logits)
    assert_close(torch.cat(chunks, 1), full, 1e-4)


# --- time-series and CTC heads ------------------------------------------------------------------------------------


def ts_model(**overrides) -> HybridGRUForTimeSeriesPrediction:
    config = tiny_config(vocab_size=1, pad_token_id=None, bos_token_id=None, eos_token_id=None, block_pattern="GA",
                         num_hidden_layers=2, context_length=12, prediction_length=4, num_input_channels=2,
                         patch_length=2, **overrides)  # fmt: skip
    return HybridGRUForTimeSeriesPrediction(config).eval()


def series(*shape: int) -> torch.Tensor:
    return torch.randn(*(shape or (3, 12, 2)))


TS_CASES = [
    ("past-wrong-channels", lambda m: m(past_values=series(3, 12, 3)), ["`past_values`", "(3, 12, 3)"]),
    ("past-2d", lambda m: m(past_values=series(3, 12)), ["`past_values`", "(3, 12)"]),
    ("past-empty", lambda m: m(past_values=series(3, 0, 2)), ["`past_values`", "(3, 0, 2)"]),
    ("past-nan-without-mask", lambda m: m(past_values=with_value(series(), float("nan"), (0, 3, 1))),
     ["`past_values`", "NaN", "`past_observed_mask`"]),
    ("past-nan-marked-observed",
     lambda m: m(past_values=with_value(series(), float("nan"), (0, 3, 1)), past_observed_mask=torch.ones(3, 12, 2)),
     ["`past_values`", "`past_observed_mask`"]),
    ("observed-mask-shape", lambda m: m(past_values=series(), past_observed_mask=torch.ones(3, 12, 1)),
     ["`past_observed_mask`", "(3, 12, 1)"]),
    ("future-wrong-length", lambda m: m(past_values=series(), future_values=series(3, 5, 2)),
     ["`future_values`", "5"]),
    ("future-inf",
     lambda m: m(past_values=series(), future_values=with_value(series(3, 4, 2), float("inf"), (1, 1, 0))),
     ["`future_values`", "inf"]),
    ("loc-without-scale", lambda m: m(past_values=series(), loc=torch.zeros(3, 1, 2)), ["`loc`", "`scale`"]),
    ("loc-wrong-shape", lambda m: m(past_values=series(), loc=torch.zeros(3, 2), scale=torch.ones(3, 2)),
     ["`loc`", "(3, 2)"]),
    ("stream-without-loc",
     lambda m: m(past_values=series(3, 4, 2), cache=m(past_values=series(), use_cache=True).cache),
     ["`loc`", "`scale`"]),
    ("stream-chunk-not-whole-patches", lambda m: m(past_values=series(3, 3, 2), use_cache=True,
     **{k: v for k, v in m(past_values=series(), use_cache=True).items() if k in ("cache", "loc", "scale")}),
     ["`past_values`", "3 steps", "patch_length=2"]),
    ("stream-legacy-cache", lambda m: m(past_values=series(3, 4, 2), cache=(1,), loc=torch.zeros(3, 1, 2),
     scale=torch.ones(3, 1, 2)), ["`cache`", "tuple"]),
    ("past-list", lambda m: m(past_values=series().tolist()), ["`past_values`", "list"]),
    ("past-int", lambda m: m(past_values=series().long()), ["`past_values`", "torch.int64"]),
    ("past-float64", lambda m: m(past_values=series().double()), ["`past_values`", "torch.float64", "torch.float32"]),
    ("past-empty-batch", lambda m: m(past_values=series(0, 12, 2)), ["`past_values`", "(0, 12, 2)"]),
    ("observed-mask-not-0-1", lambda m: m(past_values=series(), past_observed_mask=torch.full((3, 12, 2), 0.5)),
     ["`past_observed_mask`", "0.5"]),
    ("observed-mask-list", lambda m: m(past_values=series(), past_observed_mask=[[1] * 2] * 12),
     ["`past_observed_mask`", "list"]),
    ("future-float64", lambda m: m(past_values=series(), future_values=series(3, 4, 2).double()),
     ["`future_values`", "torch.float64"]),
    ("scale-zero", lambda m: m(past_values=series(), loc=torch.zeros(3, 1, 2), scale=torch.zeros(3, 1, 2)),
     ["`scale`", "> 0", "0.0"]),
    ("scale-nan", lambda m: m(past_values=series(), loc=torch.zeros(3, 1, 2),
     scale=with_value(torch.ones(3, 1, 2), float("nan"), (2, 0, 1))), ["`scale`", "nan", "batch 2"]),
    ("loc-inf", lambda m: m(past_values=series(), loc=with_value(torch.zeros(3, 1, 2), float("inf"), (0, 0, 0)),
     scale=torch.ones(3, 1, 2)), ["`loc`", "inf"]),
    ("loc-list", lambda m: m(past_values=series(), loc=[[[0.0, 0.0]]] * 3, scale=torch.ones(3, 1, 2)),
     ["`loc`", "list"]),
]  # fmt: skip


@pytest.mark.parametrize(("call", "pieces"), [c[1:] for c in TS_CASES], ids=[c[0] for c in TS_CASES])
def test_time_series_bad_input(call, pieces):
    model = ts_model()
    assert_value_error(lambda: call(model), pieces)


def ctc_model(**overrides) -> HybridGRUForCTC:
    config = tiny_config(vocab_size=20, block_pattern="GA", num_hidden_layers=2, num_mel_bins=8,
                         conv_subsampling_channels=8, **overrides)  # fmt: skip
    return HybridGRUForCTC(config).eval()


def frames(*shape: int) -> torch.Tensor:
    return torch.randn(*(shape or (2, 40, 8)))


CTC_CASES = [
    ("features-wrong-mel-bins", lambda m: m(input_features=frames(2, 40, 7)), ["`input_features`", "(2, 40, 7)"]),
    ("features-2d", lambda m: m(input_features=frames(40, 8)), ["`input_features`", "(40, 8)"]),
    ("features-no-frames", lambda m: m(input_features=frames(2, 0, 8)), ["`input_features`", "(2, 0, 8)"]),
    ("mask-not-frame-level", lambda m: m(input_features=frames(), attention_mask=torch.ones(2, 39)),
     ["`attention_mask`", "(2, 39)"]),
    ("labels-out-of-vocab", lambda m: m(input_features=frames(), labels=torch.tensor([[1, 25], [2, 3]])),
     ["`labels`", "25", "vocab_size=20"]),
    ("stream-padded-chunk", lambda m: m(input_features=frames(), use_cache=True,
     attention_mask=torch.tensor([[1] * 40, [1] * 30 + [0] * 10])), ["`attention_mask`", "padded"]),
    ("features-list", lambda m: m(input_features=frames().tolist()), ["`input_features`", "list"]),
    ("features-int", lambda m: m(input_features=frames().long()), ["`input_features`", "torch.int64"]),
    ("features-float64", lambda m: m(input_features=frames().double()),
     ["`input_features`", "torch.float64", "torch.float32"]),
    ("features-nan", lambda m: m(input_features=with_value(frames(), float("nan"), (1, 5, 2))),
     ["`input_features`", "nan", "batch 1, frame 5, mel bin 2"]),
    ("features-empty-batch", lambda m: m(input_features=frames(0, 40, 8)), ["`input_features`", "(0, 40, 8)"]),
    ("mask-not-0-1", lambda m: m(input_features=frames(), attention_mask=with_value(mask(2, 40), 2)),
     ["`attention_mask`", "2"]),
    ("mask-list", lambda m: m(input_features=frames(), attention_mask=[[1] * 40] * 2), ["`attention_mask`", "list"]),
    ("labels-float", lambda m: m(input_features=frames(), labels=torch.tensor([[1.0, 2.0], [2.0, 3.0]])),
     ["`labels`", "torch.float32"]),
    ("labels-list", lambda m: m(input_features=frames(), labels=[[1, 2], [2, 3]]), ["`labels`", "list"]),
]  # fmt: skip


@pytest.mark.parametrize(("call", "pieces"), [c[1:] for c in CTC_CASES], ids=[c[0] for c in CTC_CASES])
def test_ctc_bad_input(call, pieces):
    model = ctc_model()
    assert_value_error(lambda: call(model), pieces)


def test_bidirectional_heads_refuse_streaming():
    assert_value_error(lambda: ctc_model(bidirectional=True)(input_features=frames(), use_cache=True),
                       ["bidirectional=True"])  # fmt: skip
    assert_value_error(lambda: ts_model(bidirectional=True)(past_values=series(), use_cache=True), ["bidirectional"])


def test_error_messages_name_only_the_argument_at_fault():
    """A message names the bad argument, not a neighbour: an out-of-range id does not blame the mask."""
    model = HybridGRUModel(tiny_config()).eval()
    with pytest.raises(ValueError) as info:
        model(input_ids=with_value(ids(), VOCAB), attention_mask=mask())
    assert re.search(r"`input_ids`", str(info.value)) and "`attention_mask`" not in str(info.value)
