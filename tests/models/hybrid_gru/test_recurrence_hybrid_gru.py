"""Fast GRU paths equal the plain reference paths: scans vs Python loops, hand-written backward vs autograd,
packed rows vs sequences run alone, compiled vs eager. Run: python -m pytest tests/models/hybrid_gru/test_recurrence_hybrid_gru.py -q"""

import pytest
import torch
from transformers import DataCollatorWithFlattening

from hf_gru import HybridGRUForCausalLM
from hf_gru.models.hybrid_gru.modeling_hybrid_gru import HybridGRUMixer
from hf_gru.models.hybrid_gru.recurrence_hybrid_gru import (
    cudnn_gru,
    gru_recurrence,
    gru_scan,
    linear_recurrence,
    linear_scan,
    linear_scan_chunked,
    linear_scan_sequential,
    mingru_gates,
    packed_sequence_starts,
)
from tests.helpers import assert_close, tiny_config

MASKS = ["none", "keep", "reset", "both"]


def masks(kind: str, steps: int, batch: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(B, T) keep and reset masks, seeded; keep = padding, reset = packed-sequence starts."""
    generator = torch.Generator().manual_seed(1)
    keep = torch.rand(batch, steps, generator=generator) < 0.3 if kind in ("keep", "both") else None
    reset = torch.rand(batch, steps, generator=generator) < 0.2 if kind in ("reset", "both") else None
    return keep, reset


def grads(output: torch.Tensor, inputs: list[torch.Tensor], weight: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad((output * weight).sum(), inputs))


@pytest.mark.parametrize("chunk", [1, 3, 8, 16, 40])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_kernels_match_reference_loop(chunk, reverse):
    decay, values, h0 = torch.rand(37, 3, 5), torch.randn(37, 3, 5), torch.randn(3, 5)
    if reverse:  # the reverse scan is the forward scan on time-flipped inputs
        expected = linear_recurrence(decay.flip(0).transpose(0, 1), values.flip(0).transpose(0, 1), h0)[0]
        expected = expected.transpose(0, 1).flip(0)
    else:
        expected = linear_recurrence(decay.transpose(0, 1), values.transpose(0, 1), h0)[0].transpose(0, 1)
    assert_close(linear_scan_sequential(decay, values, h0, reverse), expected, 1e-6, "sequential")
    assert_close(linear_scan_chunked(decay, values, h0, chunk, reverse), expected, 1e-5, f"chunked({chunk})")


@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_gradcheck(reverse):
    inputs = [torch.rand(9, 2, 3, dtype=torch.double), torch.randn(9, 2, 3, dtype=torch.double)]
    inputs = [t.requires_grad_() for t in (*inputs, torch.randn(2, 3, dtype=torch.double))]
    assert torch.autograd.gradcheck(lambda a, b, h: linear_scan(a, b, h, reverse), inputs)


@pytest.mark.parametrize("steps", [1, 2, 70])  # 70 >= 64 also takes the chunked kernel on a GPU
def test_linear_scan_matches_reference_with_grads(steps):
    decay = torch.rand(2, steps, 6, requires_grad=True)
    values, h0 = torch.randn(2, steps, 6, requires_grad=True), torch.randn(2, 6, requires_grad=True)
    weight = torch.randn(2, steps, 6)
    expected = linear_recurrence(decay, values, h0)[0]
    actual = linear_scan(decay.transpose(0, 1), values.transpose(0, 1), h0, False).transpose(0, 1)
    assert_close(actual, expected, 1e-6)
    for a, e in zip(
        grads(actual, [decay, values, h0], weight), grads(expected, [decay, values, h0], weight), strict=True
    ):
        assert_close(a, e, 1e-5)


@pytest.mark.parametrize("kind", MASKS)
def test_gru_scan_matches_reference_with_grads(kind):
    batch, steps, size = 3, 19, 4
    hidden_proj = torch.nn.Linear(size, 3 * size)
    gates_x, h0 = torch.randn(batch, steps, 3 * size, requires_grad=True), torch.randn(batch, size, requires_grad=True)
    keep, reset = masks(kind, steps, batch)
    expected = gru_recurrence(gates_x, h0, hidden_proj, keep, reset)[0]
    time_major = [m.t().contiguous() if m is not None else None for m in (keep, reset)]
    args = (gates_x.transpose(0, 1), h0, hidden_proj.weight, hidden_proj.bias, *time_major)
    actual = gru_scan(*args, True)[0].transpose(0, 1)
    assert_close(actual, expected, 1e-6, "forward")
    with torch.no_grad():  # the inference variant saves nothing for backward and computes the same states
        assert_close(gru_scan(*args, False)[0].transpose(0, 1), expected, 1e-6, "forward without saving")
    inputs, weight = [gates_x, h0, hidden_proj.weight, hidden_proj.bias], torch.randn(batch, steps, size)
    for a, e, name in zip(
        grads(actual, inputs, weight), grads(expected, inputs, weight), ["x", "h0", "W", "b"], strict=True
    ):
        assert_close(a, e, 1e-5, f"grad {name}")


@pytest.mark.parametrize("kind", MASKS)
def test_gru_scan_gradcheck(kind):
    steps, batch, size = 6, 2, 3
    keep, reset = (m.t().contiguous() if m is not None else None for m in masks(kind, steps, batch))
    inputs = [torch.randn(steps, batch, 3 * size), torch.randn(batch, size), torch.randn(3 * size, size)]
    inputs = [t.double().requires_grad_() for t in (*inputs, torch.randn(3 * size))]
    assert torch.autograd.gradcheck(lambda *a: gru_scan(*a, keep, reset, True)[0], inputs)


def mixer_pair(variant: str, bidirectional: bool) -> tuple[HybridGRUMixer, HybridGRUMixer]:
    """The same mixer twice: fast path and reference path."""
    config = tiny_config(gru_variant=variant, bidirectional=bidirectional, gru_hidden_size=12)
    fast = HybridGRUMixer(config, 0)
    for p in fast.parameters():  # non-trivial values everywhere (the init makes the conv an identity)
        torch.nn.init.normal_(p, std=0.3)
    reference = HybridGRUMixer(config, 0)
    reference.load_state_dict(fast.state_dict())
    reference.use_fast_path = False
    return fast, reference


@pytest.mark.parametrize("variant", ["gru", "mingru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_mixer_fast_path_matches_reference(variant, bidirectional, padded):
    fast, reference = mixer_pair(variant, bidirectional)
    hidden = torch.randn(3, 11, 32, requires_grad=True)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[0, :4], mask[2, 7:] = 0, 0  # left padding and right padding
    mask = mask if padded else None
    expected, actual = reference(hidden, attention_mask=mask)[0], fast(hidden, attention_mask=mask)[0]
    assert_close(actual, expected, 1e-5, "forward")
    weight = torch.randn_like(expected)
    params = [hidden, *fast.parameters()]
    fast_grads = grads(actual, params, weight)
    ref_grads = grads(expected, [hidden, *reference.parameters()], weight)
    for (name, _), a, e in zip([("input", None), *fast.named_parameters()], fast_grads, ref_grads, strict=True):
        assert_close(a, e, 1e-4, f"grad {name}")


def test_packed_sequence_starts():
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 5, 6]])
    assert (
        packed_sequence_starts(position_ids, 2).tolist() == [[False, False, False, True, False, True, True, False]] * 2
    )
    assert packed_sequence_starts(torch.arange(8)[None], 1) is None
    assert packed_sequence_starts(None, 1) is None


@pytest.mark.parametrize("variant", ["gru", "mingru"])
@pytest.mark.parametrize("use_fast_path", [True, False])
def test_packed_rows_match_sequences_run_alone(variant, use_fast_path, monkeypatch):
    """DataCollatorWithFlattening's padding-free batch: GRU state, short conv and attention restart per sequence."""
    monkeypatch.setattr(HybridGRUMixer, "use_fast_path", use_fast_path)
    model = HybridGRUForCausalLM(tiny_config(gru_variant=variant, block_pattern="GAG")).eval()
    for p in model.parameters():  # a non-identity conv, so a conv that leaks across sequences would show
        if p.ndim == 3:
            torch.nn.init.normal_(p, std=0.5)
    sequences = [torch.randint(3, 99, (n,)).tolist() for n in (5, 2, 7, 1, 4)]
    batch = DataCollatorWithFlattening(return_tensors="pt")([{"input_ids": s} for s in sequences])
    assert "attention_mask" not in batch
    packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
    alone = torch.cat([model(input_ids=torch.tensor([s]), use_cache=False).logits[0] for s in sequences])
    assert_close(packed, alone, 1e-5)


@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_packed_training_loss_and_grads_match_padded_batch(variant):
    model = HybridGRUForCausalLM(tiny_config(gru_variant=variant, block_pattern="GGA"))
    sequences = [torch.randint(3, 99, (n,)).tolist() for n in (6, 3, 5)]
    packed = DataCollatorWithFlattening(return_tensors="pt")([{"input_ids": s} for s in sequences])
    model(**packed, use_cache=False).loss.backward()
    packed_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # the same tokens as a right-padded batch: loss summed over the same predicted tokens, averaged the same way
    width = max(map(len, sequences))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in sequences])
    mask = (torch.arange(width)[None] < torch.tensor([len(s) for s in sequences])[:, None]).long()
    labels = ids.masked_fill(mask == 0, -100)
    model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss.backward()
    for (name, p), g in zip(model.named_parameters(), packed_grads, strict=True):
        assert_close(g, p.grad, 1e-5, name)


@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_compiled_fullgraph_training_step_matches_eager(variant):
    """The time loops are custom ops: the whole forward and backward compile as one graph (fullgraph=True)."""
    model = HybridGRUForCausalLM(tiny_config(gru_variant=variant, use_cache=False))
    ids = torch.randint(3, 99, (2, 9))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(input_ids=ids, labels=ids)
    out.loss.backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected = model(input_ids=ids, labels=ids)
    expected.loss.backward()
    assert_close(out.logits, expected.logits, 1e-5)
    for g, p in zip(compiled_grads, model.parameters(), strict=True):
        assert_close(g, p.grad, 1e-5)


@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_cpu_bf16_autocast_training_step(variant):
    """bf16 autocast: matmuls in bf16, recurrences in float32; the loss stays within bf16 rounding of float32's."""
    model = HybridGRUForCausalLM(tiny_config(gru_variant=variant, use_cache=False))
    ids = torch.randint(3, 99, (2, 16))
    expected = model(input_ids=ids, labels=ids).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and abs(loss.item() - expected.item()) < 2e-2 * expected.item()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_mingru_gates_reset_and_keep():
    gates = torch.randn(2, 4, 6)
    keep, reset = torch.tensor([[0, 1, 0, 0]] * 2).bool(), torch.tensor([[0, 0, 1, 0]] * 2).bool()
    decay, values = mingru_gates(gates, keep, reset)
    assert (decay[:, 1] == 1).all() and (values[:, 1] == 0).all()  # padding: state passes through
    assert (decay[:, 2] == 0).all()  # sequence start: nothing of the previous state survives


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's GRU kernel needs a CUDA device")
def test_cudnn_gru_matches_scan_on_cuda():
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    input_proj, hidden_proj = torch.nn.Linear(16, 24).cuda(), torch.nn.Linear(8, 24).cuda()
    x, h0 = torch.randn(3, 50, 16, device="cuda", requires_grad=True), torch.randn(3, 8, device="cuda")
    states, last = cudnn_gru(x, h0, input_proj, hidden_proj)
    expected = gru_recurrence(input_proj(x), h0, hidden_proj)[0]
    assert_close(states, expected, 1e-5)
    assert_close(last, expected[:, -1], 1e-5)
    weight = torch.randn_like(states)
    params = [x, *input_proj.parameters(), *hidden_proj.parameters()]
    for a, e in zip(grads(states, params, weight), grads(expected, params, weight), strict=True):
        assert_close(a, e, 1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_mixer_fast_path_matches_reference_on_cuda(variant):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    fast, reference = (m.cuda() for m in mixer_pair(variant, False))
    hidden = torch.randn(2, 150, 32, device="cuda")  # long enough for the chunked scan
    assert_close(fast(hidden)[0], reference(hidden)[0], 1e-4)
