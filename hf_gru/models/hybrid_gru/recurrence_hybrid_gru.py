"""GRU recurrences of HybridGRU: plain reference loops, fused scans as custom ops with hand-written backward
passes, and cuDNN's GRU kernel. `modeling_hybrid_gru.HybridGRUMixer` picks among them; tests hold the fast paths equal
to the references (tests/models/hybrid_gru/test_recurrence_hybrid_gru.py).

Remote code: `modeling_hybrid_gru.py` imports this module, so `save_pretrained` copies it next to every checkpoint.
It imports only torch and transformers and defines functions and custom ops.
"""

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import is_torchdynamo_compiling

# ---------------------------------------------------------------------------------------------------------------------
# GRU recurrences. Each takes the input-side gate pre-activations for the whole chunk (computed in one matmul, outside
# the time loop), a starting state, an optional `keep` mask: True where the state must not move (padding), and an
# optional `reset` mask: True where a packed sequence starts, so the state restarts from zero before that step.
# `gru_recurrence` and `linear_recurrence` are the plain references (autograd through a Python loop, batch-major);
# `gru_scan` and `linear_scan` are the fast paths (time-major, hand-written backward, opaque to torch.compile), tested
# equal to the references in tests/models/hybrid_gru/test_recurrence_hybrid_gru.py.
# ---------------------------------------------------------------------------------------------------------------------


def gru_cell(gates_x: torch.Tensor, h: torch.Tensor, hidden_proj: Callable) -> torch.Tensor:
    """One step of the classic GRU (Cho et al., 2014), torch.nn.GRU's gate order and equations."""
    x_r, x_z, x_n = gates_x.chunk(3, dim=-1)
    h_r, h_z, h_n = hidden_proj(h).chunk(3, dim=-1)
    reset = torch.sigmoid(x_r + h_r)
    update = torch.sigmoid(x_z + h_z)
    candidate = torch.tanh(x_n + reset * h_n)
    return candidate + update * (h - candidate)  # (1 - z) * n + z * h


def gru_recurrence(
    gates_x: torch.Tensor,
    h0: torch.Tensor,
    hidden_proj: Callable,
    keep: torch.Tensor | None = None,
    reset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs `gru_cell` over time. gates_x: (B, T, 3H); h0: (B, H). Returns all states (B, T, H) and the last (B, H)."""
    keeps = keep.unsqueeze(-1).unbind(1) if keep is not None else [None] * gates_x.shape[1]
    resets = reset.unsqueeze(-1).unbind(1) if reset is not None else [None] * gates_x.shape[1]
    h, states = h0, []
    # `unbind` rather than `gates_x[:, t]`: indexing a tensor that requires grad makes backward quadratic in T.
    for gx, keep_t, reset_t in zip(gates_x.unbind(1), keeps, resets, strict=True):
        if reset_t is not None:
            h = h.masked_fill(reset_t, 0.0)
        h_new = gru_cell(gx, h, hidden_proj)
        h = h_new if keep_t is None else torch.where(keep_t, h, h_new)
        states.append(h)
    return torch.stack(states, dim=1), h


def mingru_gates(
    gates_x: torch.Tensor, keep: torch.Tensor | None = None, reset: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """minGRU as a linear recurrence h_t = a_t * h_{t-1} + b_t, with a = 1 - z and b = z * candidate.

    Layout-agnostic: `keep` and `reset` have the leading two dims of `gates_x`, (B, T) or (T, B).
    """
    z_logits, candidate = gates_x.chunk(2, dim=-1)
    update = torch.sigmoid(z_logits)
    if keep is not None:  # z = 0 on padding: a = 1, b = 0, the state passes through unchanged
        update = update.masked_fill(keep.unsqueeze(-1), 0.0)
    decay = 1.0 - update
    if reset is not None:  # a = 0 where a sequence starts: nothing of the previous state survives
        decay = decay.masked_fill(reset.unsqueeze(-1), 0.0)
    return decay, update * candidate


def linear_recurrence(
    decay: torch.Tensor, values: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = decay_t * h_{t-1} + values_t over (B, T, H), one fused multiply-add per step (the reference)."""
    h, states = h0, []
    for a, b in zip(decay.unbind(1), values.unbind(1), strict=True):
        h = torch.addcmul(b, a, h)
        states.append(h)
    return torch.stack(states, dim=1), h


def linear_scan_sequential(
    decay: torch.Tensor, values: torch.Tensor, h0: torch.Tensor, reverse: bool = False
) -> torch.Tensor:
    """h_t = decay_t * h_{t-1} + values_t over time-major (T, B, H), from the end when `reverse`; no autograd.

    One fused multiply-add per step, written in place: on CPU this beat the chunked, associative and log-space scans at
    every length measured (docs/benchmarks.md), and it is exact.
    """
    states = torch.empty_like(values)
    h = h0
    for t in range(values.shape[0] - 1, -1, -1) if reverse else range(values.shape[0]):
        h = torch.addcmul(values[t], decay[t], h, out=states[t])
    return states


def linear_scan_chunked(
    decay: torch.Tensor, values: torch.Tensor, h0: torch.Tensor, chunk: int, reverse: bool = False
) -> torch.Tensor:
    """`linear_scan_sequential` in about `chunk + T / chunk` steps instead of T: for GPUs, where each step is a launch.

    Every chunk is scanned from a zero state at once, then the state entering each chunk is carried across chunks and
    added back through the cumulative product of the decays. No division and no logarithm, so it stays as accurate
    as the sequential loop (a log-space scan lost ~1e-4 here).
    """
    if reverse:
        return linear_scan_chunked(decay.flip(0), values.flip(0), h0, chunk).flip(0)
    steps, batch, size = values.shape
    pad = -steps % chunk
    if pad:  # a = 1, b = 0 leaves the state untouched
        decay = torch.cat([decay, decay.new_ones(pad, batch, size)])
        values = torch.cat([values, values.new_zeros(pad, batch, size)])
    num_chunks = (steps + pad) // chunk
    decay = decay.view(num_chunks, chunk, batch, size)
    values = values.view(num_chunks, chunk, batch, size)
    local = torch.empty_like(values)
    h = values.new_zeros(num_chunks, batch, size)
    for i in range(chunk):
        h = torch.addcmul(values[:, i], decay[:, i], h, out=local[:, i])
    gain = torch.cumprod(decay, dim=1)  # (chunks, chunk, B, H): decay accumulated since the chunk started
    carries = torch.empty_like(h)
    carry = h0
    for c in range(num_chunks):
        carries[c] = carry
        carry = torch.addcmul(local[c, -1], gain[c, -1], carry)
    return torch.addcmul(local, gain, carries.unsqueeze(1)).view(-1, batch, size)[:steps]


# Custom ops (torch.library) keep the time loops opaque to torch.compile: one graph node, no unrolling per length.
# One namespace per copy of this file, so the installed package and a checkpoint's remote code never share ops.
_OPS = re.sub(r"\W", "_", __name__)


@torch.library.custom_op(f"{_OPS}::linear_scan", mutates_args=())
def linear_scan(decay: torch.Tensor, values: torch.Tensor, h0: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Differentiable `h_t = decay_t * h_{t-1} + values_t` over time-major (T, B, H); all states (T, B, H)."""
    if values.device.type == "cpu" or values.shape[0] < 64:
        return linear_scan_sequential(decay, values, h0, reverse)
    return linear_scan_chunked(decay, values, h0, 32 if values.shape[0] <= 2048 else 64, reverse)


@linear_scan.register_fake
def _(decay: torch.Tensor, values: torch.Tensor, h0: torch.Tensor, reverse: bool) -> torch.Tensor:
    return torch.empty_like(values)


def _linear_scan_setup(ctx, inputs, output) -> None:
    decay, _, h0, reverse = inputs
    ctx.save_for_backward(decay, h0, output)
    ctx.reverse = reverse


def _linear_scan_backward(ctx, grad: torch.Tensor):
    decay, h0, states = ctx.saved_tensors
    if ctx.reverse:
        decay, grad, states = decay.flip(0), grad.flip(0), states.flip(0)
    # dL/dh_t = grad_t + decay_{t+1} dL/dh_{t+1}: the same recurrence run backwards with the decays shifted by one
    shifted = torch.cat([decay[1:], torch.zeros_like(decay[:1])])
    grad_states = linear_scan(shifted, grad.contiguous(), torch.zeros_like(h0), True)
    previous = torch.cat([h0.unsqueeze(0), states[:-1]])
    grad_decay, grad_h0 = grad_states * previous, decay[0] * grad_states[0]
    if ctx.reverse:
        grad_decay, grad_states = grad_decay.flip(0), grad_states.flip(0)
    return grad_decay, grad_states, grad_h0, None


linear_scan.register_autograd(_linear_scan_backward, setup_context=_linear_scan_setup)


@torch.library.custom_op(f"{_OPS}::gru_scan", mutates_args=())
def gru_scan(
    gates_x: torch.Tensor,
    h0: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    keep: torch.Tensor | None,
    reset: torch.Tensor | None,
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`gru_recurrence` over time-major gates_x (T, B, 3H); weight (3H, H) and bias (3H,) of the hidden projection.

    keep, reset: (T, B) or None. Returns all states (T, B, H) and, when `save`, what the backward reads: hidden
    pre-activations (T, B, 3H), reset and update gates (T, B, 2H), candidates (T, B, H); otherwise empty tensors.
    Six fused ops per step, each writing straight into its slot of the outputs.
    """
    steps, batch, size3 = gates_x.shape
    size = size3 // 3
    states = gates_x.new_empty(steps, batch, size)
    if save:
        hidden, gates, candidates = (gates_x.new_empty(steps, batch, n * size) for n in (3, 2, 1))
    weight_t, h = weight.t(), h0
    for t in range(steps):
        if reset is not None:
            h = h.masked_fill(reset[t].unsqueeze(-1), 0.0)
        x_rz, x_n = gates_x[t, :, : 2 * size], gates_x[t, :, 2 * size :]
        gh = torch.addmm(bias, h, weight_t, out=hidden[t]) if save else torch.addmm(bias, h, weight_t)
        rz = torch.add(x_rz, gh[:, : 2 * size], out=gates[t]) if save else x_rz + gh[:, : 2 * size]
        rz.sigmoid_()
        n = torch.addcmul(x_n, rz[:, :size], gh[:, 2 * size :], **({"out": candidates[t]} if save else {}))
        n.tanh_()
        if keep is None:
            h = torch.lerp(n, h, rz[:, size:], out=states[t])  # n + z * (h - n)
        else:  # write gate 1 - z, zero on padding: lerp returns h exactly there
            write = (1.0 - rz[:, size:]).masked_fill_(keep[t].unsqueeze(-1), 0.0)
            h = torch.lerp(h, n, write, out=states[t])
    if not save:
        hidden, gates, candidates = (gates_x.new_empty(0) for _ in range(3))
    return states, hidden, gates, candidates


@gru_scan.register_fake
def _(gates_x, h0, weight, bias, keep, reset, save):
    steps, batch, size3 = gates_x.shape
    size = size3 // 3
    saved = [gates_x.new_empty(steps, batch, n * size) if save else gates_x.new_empty(0) for n in (3, 2, 1)]
    return (gates_x.new_empty(steps, batch, size), *saved)


@torch.library.custom_op(f"{_OPS}::gru_scan_backward", mutates_args=())
def gru_scan_backward(
    grad_states: torch.Tensor,
    states: torch.Tensor,
    hidden: torch.Tensor,
    gates: torch.Tensor,
    candidates: torch.Tensor,
    h0: torch.Tensor,
    weight: torch.Tensor,
    keep: torch.Tensor | None,
    reset: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backpropagation through time for `gru_scan`: gradients of gates_x, h0, weight and bias.

    Only dL/dh needs the time loop (two element-wise ops and one matmul per step): the per-step coefficients are
    computed for all steps before it, and the weight gradient is one matmul after it, as cuDNN does.
    """
    steps, batch, size = states.shape
    previous = torch.cat([h0.unsqueeze(0), states[:-1]])
    if reset is not None:
        previous = previous.masked_fill(reset.unsqueeze(-1), 0.0)
    r, z, n = gates[..., :size], gates[..., size:], candidates
    write = 1.0 - z  # h = previous + write * (n - previous)
    if keep is not None:
        write = write.masked_fill(keep.unsqueeze(-1), 0.0)
    grad_n_pre = write * (1.0 - n * n)  # d h / d(candidate pre-activation)
    hidden_n = hidden[..., 2 * size :]
    # d h / d(hidden pre-activations r, z, n), per unit of dL/dh
    coeff = torch.cat([grad_n_pre * hidden_n * r * (1.0 - r), (previous - n) * z * write, grad_n_pre * r], dim=-1)
    direct = 1.0 - write  # d h / d previous, besides the path through the hidden projection
    grad_hidden = torch.empty_like(hidden)
    grad_h = torch.empty_like(states)
    dh = grad_states[steps - 1]
    for t in range(steps - 1, -1, -1):
        grad_h[t] = dh
        torch.mul(coeff[t].view(batch, 3, size), dh.unsqueeze(1), out=grad_hidden[t].view(batch, 3, size))
        dh = torch.addmm(dh * direct[t], grad_hidden[t], weight)
        if reset is not None:
            dh = dh.masked_fill(reset[t].unsqueeze(-1), 0.0)
        if t > 0:
            dh = dh + grad_states[t - 1]
    grad_x = grad_hidden.clone()
    grad_x[..., 2 * size :] = grad_h * grad_n_pre
    flat = grad_hidden.view(steps * batch, 3 * size)
    return grad_x, dh, flat.t() @ previous.reshape(steps * batch, size), flat.sum(0)


@gru_scan_backward.register_fake
def _(grad_states, states, hidden, gates, candidates, h0, weight, keep, reset):
    return torch.empty_like(hidden), torch.empty_like(h0), torch.empty_like(weight), weight.new_empty(weight.shape[0])


def _gru_scan_setup(ctx, inputs, output) -> None:
    _, h0, weight, _, keep, reset, _ = inputs
    ctx.save_for_backward(h0, weight, keep, reset, *output)


def _gru_scan_backward(ctx, grad_states: torch.Tensor, *unused):
    h0, weight, keep, reset, states, hidden, gates, candidates = ctx.saved_tensors
    grads = gru_scan_backward(grad_states.contiguous(), states, hidden, gates, candidates, h0, weight, keep, reset)
    return *grads, None, None, None


gru_scan.register_autograd(_gru_scan_backward, setup_context=_gru_scan_setup)


def cudnn_gru(
    x: torch.Tensor, h0: torch.Tensor, input_proj: nn.Linear, hidden_proj: nn.Linear
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.nn.GRU's fused kernel (cuDNN on CUDA) over full sequences (B, T, D), with the mixer's weights.

    cuDNN takes float32 and float16 only, so bfloat16 runs in float32.
    """
    dtype = x.dtype if x.dtype in (torch.float16, torch.float32) else torch.float32
    weights = [p.to(dtype) for p in (input_proj.weight, hidden_proj.weight, input_proj.bias, hidden_proj.bias)]
    # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    states, last = torch._VF.gru(
        x.to(dtype), h0.to(dtype).unsqueeze(0), weights, True, 1, 0.0, torch.is_grad_enabled(), False, True
    )
    return states.to(x.dtype), last[0].to(x.dtype)


def packed_sequence_starts(position_ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """(B, T) True where a sequence starts inside a packed row: position not one past the previous position, the rule
    of transformers' `find_packed_sequence_indices` (padding-free training, e.g. `DataCollatorWithFlattening`).
    None when no row holds more than one sequence (checked outside torch.compile only)."""
    if position_ids is None or position_ids.ndim != 2 or position_ids.shape[1] < 2:
        return None
    starts = F.pad(position_ids.expand(batch, -1).diff(dim=-1) != 1, (1, 0))
    if not is_torchdynamo_compiling() and not starts.any():
        return None
    return starts


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Recurrences accumulate over thousands of steps: run them in float32 when the model runs in half precision."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor
