"""Property-based tests (hypothesis) over random tiny configs and inputs: padding invariance (left and right),
cached == uncached, save/load identity, batch independence.

Configs draw the block pattern (all-GRU `G` and all-attention `A` included, `L` sliding windows), the GRU variant,
query/key-value heads, head and GRU widths, conv kernel, tied embeddings, and bidirectional mode for the encoder
properties. Every weight gets random noise on top of its initialisation, so zero-initialised biases (which would hide
padding leaks into the GRU state) are non-zero. The default run is derandomized (the same examples every run, so CI
is reproducible); the `slow` twins draw fresh, more numerous examples.

    python -m pytest tests/models/hybrid_gru/test_properties.py              # fast, ~10 examples per property
    python -m pytest tests/models/hybrid_gru/test_properties.py -m slow      # 100 random examples per property (40 for save/load)
"""

import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModel, DynamicCache

from hf_gru import (
    HybridGRUConfig,
    HybridGRUForCausalLM,
    HybridGRUForQuestionAnswering,
    HybridGRUForSequenceClassification,
    HybridGRUForTokenClassification,
    HybridGRUModel,
)
from tests.helpers import assert_close

VOCAB, PAD = 37, 0
ATOL = 2e-5  # float32; observed differences are ~1e-7
FAST = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
SLOW = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def configs(draw, bidirectional: bool | None = False) -> HybridGRUConfig:
    """A tiny random config; `bidirectional=None` draws it too."""
    pattern = draw(st.sampled_from(["G", "A", "GA", "AG", "GGA", "GL", "LGA", "GAL"]))
    heads, kv_heads = draw(st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4)]))
    head_dim = draw(st.sampled_from([4, 8]))
    return HybridGRUConfig(
        vocab_size=VOCAB,
        hidden_size=heads * head_dim,
        intermediate_size=draw(st.sampled_from([8, 24])),
        num_hidden_layers=draw(st.integers(1, 3)),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        block_pattern=pattern,
        gru_variant=draw(st.sampled_from(["gru", "mingru"])),
        gru_hidden_size=draw(st.sampled_from([None, 6, 16])),
        gru_conv_kernel=draw(st.integers(1, 4)),
        sliding_window=draw(st.integers(2, 5)) if "L" in pattern else None,
        tie_word_embeddings=draw(st.booleans()),
        bidirectional=draw(st.booleans()) if bidirectional is None else bidirectional,
        max_position_embeddings=64,
        pad_token_id=PAD,
        num_labels=3,
    )


def build(model_class: type, config: HybridGRUConfig, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def tokens(seed: int, batch: int, length: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, length), generator=generator)


def twins(strategy, fast=FAST, slow=SLOW):
    """Turns a property into a fast derandomized test and a slow random one with more examples."""

    def decorate(body):
        return fast(given(strategy)(body)), pytest.mark.slow(slow(given(strategy)(body)))

    return decorate


# --- padding invariance ---------------------------------------------------------------------------------------------

padding_cases = st.fixed_dictionaries({
    "config": configs(bidirectional=None),
    "seed": st.integers(0, 2**16),
    "lengths": st.lists(st.integers(1, 7), min_size=1, max_size=3),
    "extra_pad": st.integers(0, 3),
    "side": st.sampled_from(["left", "right"]),
})  # fmt: skip


def check_padding_invariance(case):
    """Each row of a padded batch gives, at its real positions, the hidden states of the row run alone."""
    model = build(HybridGRUModel, case["config"], case["seed"])
    lengths, side = case["lengths"], case["side"]
    width = max(lengths) + case["extra_pad"]
    rows = [tokens(case["seed"] + i, 1, n) for i, n in enumerate(lengths)]
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - row.shape[1], width) if side == "left" else slice(0, row.shape[1])
        ids[i, span], mask[i, span] = row[0], 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).last_hidden_state
        for i, row in enumerate(rows):
            alone = model(row).last_hidden_state[0]
            assert_close(batched[i][mask[i].bool()], alone, ATOL, f"row {i} ({side} padded)")


test_padding_invariance, test_padding_invariance_many = twins(padding_cases)(check_padding_invariance)


# --- cached == uncached ---------------------------------------------------------------------------------------------

cache_cases = st.fixed_dictionaries({
    "config": configs(bidirectional=False),
    "seed": st.integers(0, 2**16),
    "lengths": st.lists(st.integers(1, 6), min_size=1, max_size=2),
    "chunks": st.lists(st.integers(1, 4), min_size=1, max_size=4),
})  # fmt: skip


def check_cached_equals_uncached(case):
    """A left-padded prompt prefilled, then continued in random chunks (1 = token-by-token decoding) through a
    DynamicCache, gives the logits of one uncached call over the whole sequence."""
    model = build(HybridGRUForCausalLM, case["config"], case["seed"])
    lengths, chunks = case["lengths"], case["chunks"]
    prompt = max(lengths)
    total = prompt + sum(chunks)
    ids = tokens(case["seed"], len(lengths), total)
    mask = torch.ones_like(ids)
    for i, n in enumerate(lengths):
        ids[i, : prompt - n], mask[i, : prompt - n] = PAD, 0  # left padding of the prompt
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        out = model(ids[:, :prompt], attention_mask=mask[:, :prompt], cache=DynamicCache(config=model.config),
                    use_cache=True)  # fmt: skip
        pieces, start = [out.logits], prompt
        for size in chunks:
            end = start + size
            out = model(ids[:, start:end], attention_mask=mask[:, :end], cache=out.cache, use_cache=True)
            pieces.append(out.logits)
            start = end
    real = mask.bool()
    assert_close(torch.cat(pieces, 1)[real], full[real], ATOL * 5)


test_cached_equals_uncached, test_cached_equals_uncached_many = twins(cache_cases)(check_cached_equals_uncached)


# --- save / load identity -------------------------------------------------------------------------------------------

HEADS = [HybridGRUModel, HybridGRUForCausalLM, HybridGRUForSequenceClassification, HybridGRUForTokenClassification,
         HybridGRUForQuestionAnswering]  # fmt: skip
save_cases = st.fixed_dictionaries({
    "config": configs(bidirectional=None),
    "head": st.sampled_from(HEADS),
    "seed": st.integers(0, 2**16),
    "sharded": st.booleans(),
})  # fmt: skip


def check_save_load_identity(case):
    """save_pretrained then from_pretrained (the head's own class, and AutoModel for the backbone) restores every
    tensor bit for bit, and the config."""
    config, head = case["config"], case["head"]
    if head is HybridGRUForCausalLM and config.bidirectional:
        config.bidirectional = False  # a causal LM refuses bidirectional configs, by design
    model = build(head, config, case["seed"])
    ids = tokens(case["seed"], 2, 5)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, max_shard_size="4KB" if case["sharded"] else "50GB")
        reloaded = head.from_pretrained(folder).eval()
        backbone = AutoModel.from_pretrained(folder).eval()
    ignored = {"_name_or_path": ""}
    assert {**reloaded.config.to_dict(), **ignored} == {**model.config.to_dict(), **ignored}
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    with torch.no_grad():
        expected, actual = model(ids), reloaded(ids)
        for key in expected.keys():
            if isinstance(expected[key], torch.Tensor):
                assert torch.equal(actual[key], expected[key]), key
        inner = model if head is HybridGRUModel else model.model
        assert torch.equal(backbone(ids).last_hidden_state, inner(ids).last_hidden_state)


test_save_load_identity, test_save_load_identity_many = twins(
    save_cases, fast=settings(FAST, max_examples=6), slow=settings(SLOW, max_examples=40)
)(check_save_load_identity)


# --- batch independence ---------------------------------------------------------------------------------------------

batch_cases = st.fixed_dictionaries({
    "config": configs(bidirectional=None),
    "seed": st.integers(0, 2**16),
    "batch": st.integers(2, 4),
    "length": st.integers(1, 7),
    "row": st.integers(0, 3),
})  # fmt: skip


def check_batch_independence(case):
    """A row's output is the row's output alone, and does not move when the other rows change."""
    model = build(HybridGRUModel, case["config"], case["seed"])
    batch, row = case["batch"], case["row"] % case["batch"]
    ids = tokens(case["seed"], batch, case["length"])
    others = tokens(case["seed"] + 1, batch, case["length"])
    others[row] = ids[row]
    with torch.no_grad():
        first = model(ids).last_hidden_state[row]
        assert_close(model(others).last_hidden_state[row], first, ATOL, "other rows changed")
        assert_close(model(ids[row : row + 1]).last_hidden_state[0], first, ATOL, "row alone")


test_batch_independence, test_batch_independence_many = twins(batch_cases)(check_batch_independence)
