"""Numerical robustness (slow): bf16-autocast training on the bundled corpus stays finite, and the GRU state stays
within its analytic bound while 100k tokens stream through the cache.

    python -m pytest tests/models/hybrid_gru/test_robustness_numerics.py -m slow
    HF_GRU_CORPUS=/work/shared/data/text/austen/emma.txt python -m pytest tests/models/hybrid_gru/test_robustness_numerics.py -m slow
"""

import math
import os
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from hf_gru import HybridGRUConfig, HybridGRUForCausalLM
from hf_gru.models.hybrid_gru.modeling_hybrid_gru import HybridGRUMixer
from hf_gru.tasks.text import train_bpe_tokenizer
from tests.helpers import REPO

CORPUS = Path(os.environ.get("HF_GRU_CORPUS", REPO / "data" / "austen" / "prideprejudice.txt"))


@pytest.fixture(scope="module")
def corpus_ids() -> torch.Tensor:
    if not CORPUS.is_file():
        pytest.skip(f"corpus {CORPUS} not found (set HF_GRU_CORPUS to a text file)")
    text = CORPUS.read_text(encoding="utf-8")
    tokenizer = train_bpe_tokenizer([text], vocab_size=512)
    return torch.tensor(tokenizer(text)["input_ids"])


def small_lm(variant: str, **overrides) -> HybridGRUForCausalLM:
    values = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  block_pattern="GGA", gru_variant=variant)  # fmt: skip
    config = HybridGRUConfig(**{**values, **overrides})
    torch.manual_seed(0)
    return HybridGRUForCausalLM(config)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_500_bf16_autocast_training_steps_stay_finite(corpus_ids, one_torch_thread, variant):
    """AdamW at a high learning rate (3e-3, no warmup), clipping at 1.0 as Trainer does; every loss, gradient norm
    and, at the end, every weight is finite, and the loss fell (so the steps did train)."""
    model = small_lm(variant).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    batch, length, losses = 8, 64, []
    for step in range(500):
        starts = torch.randint(0, len(corpus_ids) - length, (batch,), generator=generator)
        ids = torch.stack([corpus_ids[s : s + length] for s in starts.tolist()])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        assert math.isfinite(loss.item()) and math.isfinite(grad_norm.item()), f"step {step}: {loss}, {grad_norm}"
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    print(f"{variant}: mean loss of the first 20 steps {first:.3f}, of the last 20 {last:.3f}")  # shown with -s
    assert last < first - 1.0, f"loss {first:.2f} -> {last:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_gru_state_stays_bounded_over_100k_streamed_tokens(corpus_ids, one_torch_thread, variant):
    """100k corpus tokens stream through a DynamicCache in 2048-token chunks (sliding-window attention keeps the KV
    cache small). The classic GRU's state is a convex mix of tanh outputs, so |h| <= 1 (tanh rounds to 1.0 in float32
    when saturated); minGRU's is a convex mix of its candidates, so |h| <= the largest |candidate| seen so far (read
    from `input_proj`, whose second half holds the candidates). Both bounds hold after every chunk, and every output
    is finite. Weights get noise on top of their initialisation so the gates are far from their starting values."""
    model = small_lm(variant, block_pattern="GGL", sliding_window=256).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    layers = enumerate(model.model.layers)
    mixers = [(i, layer.mixer) for i, layer in layers if isinstance(layer.mixer, HybridGRUMixer)]
    largest_candidate = dict.fromkeys([i for i, _ in mixers], 0.0)

    def record(index):
        def hook(module, args, output):
            candidate = output.chunk(2, dim=-1)[1]
            largest_candidate[index] = max(largest_candidate[index], candidate.abs().max().item())

        return hook

    if variant == "mingru":
        for index, mixer in mixers:
            mixer.input_proj.register_forward_hook(record(index))
    ids = corpus_ids[:100_000].repeat(math.ceil(100_000 / len(corpus_ids)))[:100_000][None]
    cache, peak = DynamicCache(config=model.config), dict.fromkeys([i for i, _ in mixers], 0.0)
    with torch.no_grad():
        for start in range(0, ids.shape[1], 2048):
            logits = model(ids[:, start : start + 2048], cache=cache, use_cache=True).logits
            assert torch.isfinite(logits).all(), f"chunk at {start}"
            for index, _ in mixers:
                state = cache.get_recurrent_state(index)
                assert torch.isfinite(state).all(), f"layer {index} at {start}"
                peak[index] = max(peak[index], state.abs().max().item())
                bound = 1.0 if variant == "gru" else largest_candidate[index] * (1 + 1e-5)
                assert state.abs().max().item() <= bound, f"layer {index} at {start}: {state.abs().max()} > {bound}"
    print(f"{variant}: largest |state| per GRU layer over 100k tokens {peak}")  # shown with -s
    assert all(value > 0.05 for value in peak.values()), peak  # the state did move
