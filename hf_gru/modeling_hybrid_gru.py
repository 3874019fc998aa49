"""HybridGRU: pre-norm residual blocks whose token mixer is a GRU (constant-size state) or self-attention.

Read top to bottom: norm, rotary, MLP, GRU recurrences, GRU mixer, attention, mixer registry, decoder layer,
pretrained base, model, heads. This file and `configuration_hybrid_gru.py` are what `save_pretrained` copies next
to a checkpoint, so they import only torch, transformers and each other.
"""

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, LinearAttentionCacheLayerMixin
from transformers.configuration_utils import PreTrainedConfig
from transformers.generation import GenerationMixin
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_causal_mask,
    create_recurrent_attention_mask,
    create_sliding_window_causal_mask,
)
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, is_torchdynamo_compiling
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_hybrid_gru import HybridGRUConfig
from .serialization_hybrid_gru import check_loaded_keys, check_local_checkpoint, save_atomically, stamp_remote_code

# Where each Auto class finds its class once the checkpoint is a folder of remote code (see `save_pretrained`).
AUTO_MAP = {
    "AutoConfig": "configuration_hybrid_gru.HybridGRUConfig",
    "AutoModel": "modeling_hybrid_gru.HybridGRUModel",
    "AutoModelForCausalLM": "modeling_hybrid_gru.HybridGRUForCausalLM",
    "AutoModelForSequenceClassification": "modeling_hybrid_gru.HybridGRUForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_hybrid_gru.HybridGRUForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_hybrid_gru.HybridGRUForQuestionAnswering",
    "AutoModelForTimeSeriesPrediction": "modeling_hybrid_gru_time_series.HybridGRUForTimeSeriesPrediction",
    "AutoModelForCTC": "modeling_hybrid_gru_ctc.HybridGRUForCTC",
}


class HybridGRURMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class HybridGRURotaryEmbedding(nn.Module):
    inv_freq: torch.Tensor

    def __init__(self, config: HybridGRUConfig):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        rope_init_fn = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: HybridGRUConfig, **kwargs) -> tuple[torch.Tensor, float]:
        base, dim = config.rope_parameters["rope_theta"], config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        return inv_freq, 1.0

    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, head_dim)
        cos, sin = emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


class HybridGRUMLP(nn.Module):
    """SwiGLU feed-forward (Shazeer, 2020)."""

    def __init__(self, config: HybridGRUConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


# ---------------------------------------------------------------------------------------------------------------------
# GRU recurrences. Each takes the input-side gate pre-activations for the whole chunk (computed in one matmul, outside
# the time loop), a starting state, an optional `keep` mask: True where the state must not move (padding), and an
# optional `reset` mask: True where a packed sequence starts, so the state restarts from zero before that step.
# `gru_recurrence` and `linear_recurrence` are the plain references (autograd through a Python loop, batch-major);
# `gru_scan` and `linear_scan` are the fast paths (time-major, hand-written backward, opaque to torch.compile), tested
# equal to the references in tests/test_gru_recurrences.py.
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


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Recurrences accumulate over thousands of steps: run them in float32 when the model runs in half precision."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


class HybridGRUMixer(nn.Module):
    """GRU token mixer: short causal depthwise conv -> input projection -> recurrence -> output projection.

    The recurrent state and the last conv inputs live in the cache (transformers' linear-attention slot), never on the
    module, so beam search reorders them and a cached continuation resumes from them. Packed rows (position_ids
    restarting, no attention_mask, no cache) restart both the state and the conv at every sequence start.
    """

    use_fast_path = True  # False: the reference recurrences (`gru_recurrence`, `linear_recurrence`), for tests

    def __init__(self, config: HybridGRUConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.variant = config.gru_variant
        self.state_size = config.gru_hidden_size
        self.conv_kernel = config.gru_conv_kernel
        self.bidirectional = config.bidirectional
        num_gates = 3 if self.variant == "gru" else 2
        num_directions = 2 if self.bidirectional else 1

        self.conv = nn.Conv1d(config.hidden_size, config.hidden_size, self.conv_kernel, groups=config.hidden_size)
        self.input_proj = nn.Linear(config.hidden_size, num_gates * self.state_size)
        if self.variant == "gru":
            self.hidden_proj = nn.Linear(self.state_size, 3 * self.state_size)
        if self.bidirectional:
            self.input_proj_reverse = nn.Linear(config.hidden_size, num_gates * self.state_size)
            if self.variant == "gru":
                self.hidden_proj_reverse = nn.Linear(self.state_size, 3 * self.state_size)
        self.out_proj = nn.Linear(num_directions * self.state_size, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        # attention_mask here is the 2-D padding mask of this chunk (or None): 1 for real tokens, 0 for padding.
        keep = None
        if attention_mask is not None:
            keep = attention_mask == 0
            hidden_states = hidden_states.masked_fill(keep.unsqueeze(-1), 0.0)
        if self.bidirectional:
            cache = None  # an encoder sees the whole sequence at once; there is nothing to carry over
        reset = None
        if attention_mask is None and cache is None and not self.bidirectional:  # as transformers' packed masks
            reset = packed_sequence_starts(position_ids, hidden_states.shape[0])

        conv_state = cache.get_conv_state(self.layer_idx) if cache is not None else None
        x = self._short_conv(hidden_states.transpose(1, 2), conv_state, reset)  # (B, D, T) -> (B, T, D)
        if cache is not None:
            cache.update_conv_state(hidden_states.transpose(1, 2), self.layer_idx, conv_kernel_size=self.conv_kernel)

        h0 = cache.get_recurrent_state(self.layer_idx) if conv_state is not None else None
        if h0 is None:
            h0 = x.new_zeros(x.shape[0], self.state_size)
        states, last = self._recur(x, h0, keep, reset, self.input_proj, getattr(self, "hidden_proj", None))
        if cache is not None:
            cache.update_recurrent_state(last, self.layer_idx)

        if self.bidirectional:
            flipped_keep = keep.flip(1) if keep is not None else None
            reverse_proj = getattr(self, "hidden_proj_reverse", None)
            reverse, _ = self._recur(
                x.flip(1), torch.zeros_like(h0), flipped_keep, None, self.input_proj_reverse, reverse_proj
            )
            states = torch.cat([states, reverse.flip(1)], dim=-1)
        return self.out_proj(states), None

    def _short_conv(
        self, x: torch.Tensor, conv_state: torch.Tensor | None, starts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Causal depthwise conv over (B, D, T); `conv_state` holds the previous inputs (B, D, kernel) when resuming.

        With `starts` (B, T) (packed rows), a tap never reaches back past the start of its token's sequence.
        """
        if conv_state is not None:
            x = torch.cat([conv_state[..., 1:].to(x.dtype), x], dim=-1)
        else:
            x = F.pad(x, (self.conv_kernel - 1, 0))
        if x.shape[-1] == self.conv_kernel and self.use_fast_path:  # one decoding step: a dot product per channel
            out = torch.linalg.vecdot(x, self.conv.weight[:, 0]) + self.conv.bias  # oneDNN's conv: ~1 ms on CPU here
            return out.unsqueeze(1)
        if starts is None:
            return F.conv1d(x, self.conv.weight, self.conv.bias, groups=x.shape[1]).transpose(1, 2)
        kernel, steps = self.conv_kernel, starts.shape[1]
        weight = self.conv.weight[:, 0]  # (D, kernel); tap k reads the input `kernel - 1 - k` steps back
        out = torch.addcmul(self.conv.bias[:, None], x[..., kernel - 1 :], weight[:, -1:])
        visible = torch.ones_like(starts)  # the tap `lag` steps back is in the same sequence
        for lag in range(1, kernel):
            visible = visible & ~F.pad(starts[:, : steps - lag + 1], (lag - 1, 0))
            tap = x[..., kernel - 1 - lag : kernel - 1 - lag + steps] * visible.unsqueeze(1)
            out = torch.addcmul(out, tap, weight[:, kernel - 1 - lag, None])
        return out.transpose(1, 2)

    def _recur(
        self,
        x: torch.Tensor,
        h0: torch.Tensor,
        keep: torch.Tensor | None,
        reset: torch.Tensor | None,
        input_proj: nn.Module,
        hidden_proj: nn.Module | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H) -> all states (B, T, H) and the last state (B, H)."""
        # The fused paths read projection weights directly; an adapter-wrapped projection (e.g. LoRA from peft)
        # must go through its module call, so it takes the reference loop.
        plain_hidden = hidden_proj is None or type(hidden_proj) is nn.Linear
        if not self.use_fast_path or x.shape[1] == 1 or torch.compiler.is_exporting() or not plain_hidden:
            gates_x = input_proj(x)  # hoisted out of the time loop: one matmul for the whole chunk
            if self.variant == "gru":
                return gru_recurrence(gates_x, h0.to(gates_x.dtype), hidden_proj, keep, reset)
            decay, values = mingru_gates(gates_x, keep, reset)
            return linear_recurrence(decay, values, h0.to(values.dtype))
        if self.variant == "gru" and x.is_cuda and keep is None and reset is None and type(input_proj) is nn.Linear:
            return cudnn_gru(x, h0, input_proj, hidden_proj)
        gates_x = _upcast(input_proj(x.transpose(0, 1)))  # (T, B, G): each step reads one contiguous slice
        keep = keep.t().contiguous() if keep is not None else None
        reset = reset.t().contiguous() if reset is not None else None
        h0 = h0.to(gates_x.dtype)
        if self.variant == "gru":
            weight, bias = _upcast(hidden_proj.weight), _upcast(hidden_proj.bias)
            save = torch.is_grad_enabled() and any(t.requires_grad for t in (gates_x, h0, weight, bias))
            states = gru_scan(gates_x, h0, weight, bias, keep, reset, save)[0]
        else:
            decay, values = mingru_gates(gates_x, keep, reset)
            states = linear_scan(decay, values, h0, False)
        states = states.transpose(0, 1).to(x.dtype)
        return states, states[:, -1]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads: (B, 1, T, head_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, kv_heads, T, hd) -> (B, kv_heads * n_rep, T, hd) for grouped-query attention."""
    if n_rep == 1:
        return hidden_states
    batch, kv_heads, seq_len, head_dim = hidden_states.shape
    hidden_states = hidden_states[:, :, None].expand(batch, kv_heads, n_rep, seq_len, head_dim)
    return hidden_states.reshape(batch, kv_heads * n_rep, seq_len, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Tq, Tk)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, Tq, H, hd)
    return attn_output, attn_weights


class HybridGRUAttention(nn.Module):
    """Multi-head self-attention with RoPE and grouped-query heads, through transformers' attention interface."""

    def __init__(self, config: HybridGRUConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = not config.bidirectional
        is_sliding = config.layer_types[layer_idx] == "sliding_attention"
        self.sliding_window = config.sliding_window if is_sliding else None
        q_size, kv_size = config.num_attention_heads * self.head_dim, config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=config.attention_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, T, hd)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, kvH, T, hd)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        query, key = apply_rotary_pos_emb(query, key, *position_embeddings)
        if cache is not None and self.is_causal:
            key, value = cache.update(key, value, self.layer_idx)

        implementation = self.config._attn_implementation
        if kwargs.get("output_attentions") and implementation == "sdpa":
            implementation = "eager"  # SDPA never materialises the weights; this call asked for them
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            sliding_window=self.sliding_window,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


# Layer type (transformers' vocabulary, see configuration_hybrid_gru.PATTERN_TO_LAYER_TYPE) -> token mixer.
MIXERS: dict[str, type[nn.Module]] = {
    "linear_attention": HybridGRUMixer,
    "full_attention": HybridGRUAttention,
    "sliding_attention": HybridGRUAttention,
}


class HybridGRUDecoderLayer(GradientCheckpointingLayer):
    """h = h + Mixer(RMSNorm(h)); h = h + MLP(RMSNorm(h)). The block never branches on the mixer type."""

    def __init__(self, config: HybridGRUConfig, layer_idx: int):
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        self.mixer = MIXERS[self.layer_type](config, layer_idx)
        self.mlp = HybridGRUMLP(config)
        self.input_layernorm = HybridGRURMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = HybridGRURMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        mixed, _ = self.mixer(
            self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + mixed
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class HybridGRUPreTrainedModel(PreTrainedModel):
    config: HybridGRUConfig
    config_class = HybridGRUConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HybridGRUDecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = False
    _supports_attention_backend = True
    _can_compile_fullgraph = True  # the time loops are custom ops (`gru_scan`, `linear_scan`): no graph breaks
    _is_stateful = True  # the GRU state cannot be rolled back, so assisted decoding is off
    _can_record_outputs = {
        "hidden_states": HybridGRUDecoderLayer,
        "attentions": OutputRecorder(HybridGRUAttention, index=1),
    }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, HybridGRUMixer):
            self._init_gru_mixer(module)

    def _init_gru_mixer(self, module: HybridGRUMixer) -> None:
        # The conv starts as the identity (last tap 1) so the recurrence first sees its input unchanged.
        identity = torch.zeros_like(module.conv.weight)
        identity[..., -1] = 1.0
        init.copy_(module.conv.weight, identity)
        init.zeros_(module.conv.bias)
        size = module.state_size
        for suffix in ("", "_reverse"):
            input_proj = getattr(module, f"input_proj{suffix}", None)
            if input_proj is None:
                continue
            init.xavier_uniform_(input_proj.weight)
            # Bias the update gate towards keeping the state, so gradients reach far back at the start of training.
            bias = torch.zeros_like(input_proj.bias)
            if module.variant == "gru":
                bias[size : 2 * size] = 1.0
            else:
                bias[:size] = -1.0
            init.copy_(input_proj.bias, bias)
            hidden_proj = getattr(module, f"hidden_proj{suffix}", None)
            if hidden_proj is not None:
                for gate in hidden_proj.weight.split(size, dim=0):  # one orthogonal matrix per gate
                    init.orthogonal_(gate)
                init.zeros_(hidden_proj.bias)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        *,
        push_to_hub: bool = False,
        distributed_checkpoint: bool = False,
        **kwargs,
    ) -> None:
        """Saves as transformers does, plus the full `auto_map`, every remote-code file and a `SHA256SUMS` of the
        weight files, so each Auto class loads the folder with `trust_remote_code=True` where hf_gru is not installed.

        Crash safety. The save is written into a `.hf_gru_staging-*` folder inside `save_directory` and flushed to
        disk. Each file it replaces or outdates is then hard-linked (copied where links fail) into a
        `.hf_gru_previous-*` folder; `config.json` (`adapter_config.json` for an adapter) is removed, the old weight
        files are removed (index first), the new ones moved in (shards before their index), then the other files,
        and `config.json` comes last. `.hf_gru_previous-*` is deleted once the save is complete. So whenever the
        process dies (killed, or power loss: files and folder entries are fsynced in that order):
        - the folder holds the previous save untouched, or this save complete, or no `config.json`, in which case
          `from_pretrained` raises an error naming `.hf_gru_previous-*`, which loads as the previous save;
        - the weight files are never a mix of two saves, even for loaders that skip `config.json` (Trainer's
          `resume_from_checkpoint`); outdated weight files (e.g. `model.safetensors` when this save is sharded)
          are removed, whereas transformers 5.24 leaves them to shadow the new shards;
        - files this save does not write (tokenizer, `optimizer.pt`, `trainer_state.json`, README, ...) are never
          touched. A Trainer checkpoint as a whole is complete only once Trainer has written `trainer_state.json`.
        Leftovers of a killed save are removed by the next save into the same folder. Not covered: two processes
        saving into one folder at once, and `distributed_checkpoint=True`, which transformers writes from every
        rank in place. `push_to_hub=True` pushes after the local save is complete, through `push_to_hub` (which
        saves again into a temporary folder and uploads it as one commit).
        """
        source_dir = Path(__file__).parent
        auto_map = {k: v for k, v in AUTO_MAP.items() if (source_dir / f"{v.split('.')[0]}.py").is_file()}
        self.config.auto_map = auto_map
        if distributed_checkpoint or not self.should_save_on_this_rank(is_main_process):
            # Ranks that write nothing still join transformers' collective gathers.
            return super().save_pretrained(
                save_directory, is_main_process, push_to_hub=push_to_hub,
                distributed_checkpoint=distributed_checkpoint, **kwargs,
            )  # fmt: skip
        hub_kwargs = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "create_pr", "private") if k in kwargs}
        parent_save = super().save_pretrained

        def write(staging: str) -> None:
            parent_save(staging, is_main_process, **kwargs)
            if self.is_remote_code():
                for module_name in {v.split(".")[0] for v in auto_map.values()}:
                    shutil.copyfile(source_dir / f"{module_name}.py", Path(staging) / f"{module_name}.py")
                stamp_remote_code(staging)

        save_atomically(save_directory, write, kwargs.get("variant"))
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", Path(save_directory).name)
            self.push_to_hub(
                repo_id, token=kwargs.get("token"), max_shard_size=kwargs.get("max_shard_size", "50GB"), **hub_kwargs
            )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args,
        strict: bool = True,
        use_safetensors: bool | None = True,
        **kwargs,
    ):
        """transformers' `from_pretrained`, stricter by default (transformers warns and initialises randomly).

        - `use_safetensors=True`: pickle `.bin` weights are refused; `use_safetensors=None` allows them (transformers
          then reads them with `torch.load(weights_only=True)`).
        - `strict=True`: OSError for a local folder with no `config.json` (transformers would build a default
          config), left by an interrupted save, whose weights differ from their `SHA256SUMS`, or whose safetensors
          header is truncated or corrupted; ValueError for a config whose `model_type` is not `hybrid_gru`, that
          fails validation, or a checkpoint that lacks backbone tensors, has unexpected backbone tensors, or tensors
          of another shape (unless `ignore_mismatched_sizes=True`). Missing task-head tensors are fine: that is a new
          head being fine-tuned, initialised and reported by transformers as usual. `strict=False` restores
          transformers' behaviour. Loading writes nothing into the checkpoint folder.
        """
        if not strict:
            return super().from_pretrained(
                pretrained_model_name_or_path, *model_args, use_safetensors=use_safetensors, **kwargs
            )
        path = str(pretrained_model_name_or_path) if pretrained_model_name_or_path is not None else None
        config = kwargs.get("config")
        folder = Path(path or "", kwargs.get("subfolder", ""))
        if path is not None and folder.is_dir():
            given = isinstance(config, PreTrainedConfig)
            check_local_checkpoint(folder, given, use_safetensors is True, kwargs.get("variant"))
        if path is not None and not isinstance(config, PreTrainedConfig):
            hub_names = ("cache_dir", "revision", "subfolder", "token", "local_files_only")
            hub = {k: kwargs[k] for k in hub_names if k in kwargs}
            model_type = PreTrainedConfig.get_config_dict(config or path, **hub)[0].get("model_type")
            if model_type != cls.config_class.model_type:
                raise ValueError(
                    f"{path!r} holds a model of type model_type={model_type!r}; {cls.__name__} loads "
                    f"{cls.config_class.model_type!r} checkpoints (pass strict=False to try anyway)."
                )
        want_info = kwargs.pop("output_loading_info", False)
        allow_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
        # A config field of the wrong type raises HybridGRUConfig.from_dict's ValueError in here.
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, use_safetensors=use_safetensors,
            output_loading_info=True, ignore_mismatched_sizes=True, **kwargs,
        )  # fmt: skip
        check_loaded_keys(model, info, path, allow_mismatch)
        return (model, info) if want_info else model


def check_inputs(
    config: HybridGRUConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | dict | None,
    position_ids: torch.Tensor | None = None,
    cache: Cache | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Boundary checks: a ValueError naming the argument and its bad value, never an IndexError or a CUDA device
    assert from deep inside torch. `dtype` is the model's; `inputs_embeds` must match it outside autocast.

    Accepted on purpose: sequences longer than `max_position_embeddings` (attention uses RoPE, which has no position
    table to overflow and extrapolates past the trained length, with whatever quality the model has there; GRU layers
    have no length limit, which lets a stream run through the cache indefinitely), and `attention_mask` rows that are
    all padding (a chunked prefill of a left-padded batch feeds such chunks). Checks that read tensor values cost one
    host sync each and are skipped while torch.compile traces.
    """
    if (input_ids is None) == (inputs_embeds is None):
        both = "both" if input_ids is not None else "neither"
        raise ValueError(f"Pass exactly one of `input_ids` or `inputs_embeds`; got {both}.")
    if input_ids is not None:
        _check_input_ids(config, input_ids)
    else:
        _check_inputs_embeds(config, inputs_embeds, dtype)
    batch, seq_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
    if config.bidirectional:
        cache = None  # the model ignores it: an encoder sees the whole sequence at once
    if cache is not None:
        _check_cache(config, cache)
    if attention_mask is not None and not isinstance(attention_mask, dict):  # dict: per-layer masks from generate()
        past = None  # unknown for an all-GRU cache: it counts no tokens
        if cache is None:
            past = 0
        elif any(t != "linear_attention" for t in config.layer_types):
            past = cache.get_seq_length()
        _check_attention_mask(attention_mask, batch, seq_len, past)
    if position_ids is not None:
        _check_position_ids(position_ids, batch, seq_len)


def _check_tensor(name: str, value) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}.")


def _check_input_ids(config: HybridGRUConfig, input_ids: torch.Tensor) -> None:
    _check_tensor("input_ids", input_ids)
    if input_ids.dtype not in (torch.int64, torch.int32):  # what nn.Embedding accepts
        raise ValueError(f"`input_ids` must be an int64 or int32 tensor, got dtype {input_ids.dtype}.")
    if input_ids.ndim != 2:
        raise ValueError(f"`input_ids` must be 2-D (batch, seq_len), got shape {tuple(input_ids.shape)}.")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"`input_ids` is empty: shape {tuple(input_ids.shape)}; batch and seq_len must be >= 1.")
    if not is_torchdynamo_compiling():
        low, high = input_ids.min().item(), input_ids.max().item()
        if low < 0 or high >= config.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"`input_ids` contains token id {bad}, outside [0, vocab_size={config.vocab_size}).")


def _check_inputs_embeds(config: HybridGRUConfig, inputs_embeds: torch.Tensor, dtype: torch.dtype | None) -> None:
    check_float_input("inputs_embeds", inputs_embeds, dtype)
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != config.hidden_size:
        raise ValueError(
            f"`inputs_embeds` must have shape (batch, seq_len, hidden_size={config.hidden_size}), "
            f"got {tuple(inputs_embeds.shape)}."
        )
    if inputs_embeds.shape[0] == 0 or inputs_embeds.shape[1] == 0:
        shape = tuple(inputs_embeds.shape)
        raise ValueError(f"`inputs_embeds` is empty: shape {shape}; batch and seq_len must be >= 1.")
    check_finite("inputs_embeds", inputs_embeds)


def check_float_input(name: str, value, dtype: torch.dtype | None) -> None:
    """A floating-point tensor of the model's `dtype` (any float dtype under autocast). Shared by the heads that take
    continuous inputs, so a float64 array or an integer tensor is named instead of failing as a dtype clash in a matmul.
    """
    _check_tensor(name, value)
    if not value.dtype.is_floating_point:
        raise ValueError(f"`{name}` must be a floating-point tensor, got dtype {value.dtype}.")
    autocast = torch.is_autocast_enabled(value.device.type)
    if dtype is not None and value.dtype != dtype and not autocast:
        raise ValueError(
            f"`{name}` has dtype {value.dtype} but the model's weights are {dtype}; cast it with `.to({dtype})` or "
            "run under torch.autocast."
        )


def check_finite(name: str, value: torch.Tensor, axes: tuple[str, ...] = ("batch", "position", "channel")) -> None:
    """NaN/inf in a continuous input: the count and the first bad value with its index, one name per axis."""
    if is_torchdynamo_compiling():
        return
    bad = ~torch.isfinite(value)
    if bad.any():
        index = bad.nonzero()[0].tolist()
        where = ", ".join(f"{axis} {i}" for axis, i in zip(axes, index, strict=True))
        raise ValueError(
            f"`{name}` contains {int(bad.sum())} NaN/inf values (first: {value[tuple(index)].item()} at {where})."
        )


def check_binary_mask(name: str, mask, meaning: str = "1 (token) or 0 (padding)") -> None:
    """A mask tensor holding only 0s and 1s (a bool mask is fine)."""
    _check_tensor(name, mask)
    if not is_torchdynamo_compiling():
        bad = (mask != 0) & (mask != 1)
        if bad.any():
            raise ValueError(f"`{name}` contains value {mask[bad][0].item()}; expected {meaning}.")


def _check_attention_mask(attention_mask, batch: int, seq_len: int, past: int | None) -> None:
    _check_tensor("attention_mask", attention_mask)
    if attention_mask.ndim != 2:
        raise ValueError(
            f"`attention_mask` must be a 2-D padding mask (batch, past_length + seq_len) of 1s and 0s, got shape "
            f"{tuple(attention_mask.shape)}; GRU layers cannot follow a custom 3-D/4-D attention pattern."
        )
    expected = f"{past + seq_len}" if past is not None else f">= {seq_len}"
    length_ok = attention_mask.shape[1] == past + seq_len if past is not None else attention_mask.shape[1] >= seq_len
    if attention_mask.shape[0] != batch or not length_ok:
        raise ValueError(
            f"`attention_mask` has shape {tuple(attention_mask.shape)}, but the inputs have batch {batch} and "
            f"seq_len {seq_len} after {past if past is not None else 'an unknown number of'} cached tokens: "
            f"expected ({batch}, {expected}), covering the cached tokens and the new ones."
        )
    check_binary_mask("attention_mask", attention_mask)


def _check_position_ids(position_ids, batch: int, seq_len: int) -> None:
    _check_tensor("position_ids", position_ids)
    if position_ids.dtype.is_floating_point or position_ids.dtype == torch.bool:
        raise ValueError(f"`position_ids` must be an integer tensor, got dtype {position_ids.dtype}.")
    if position_ids.ndim != 2 or position_ids.shape[0] not in (1, batch) or position_ids.shape[1] != seq_len:
        raise ValueError(
            f"`position_ids` must have shape ({batch}, {seq_len}) or (1, {seq_len}), got {tuple(position_ids.shape)}."
        )
    if not is_torchdynamo_compiling():
        low = position_ids.min().item()
        if low < 0:
            raise ValueError(f"`position_ids` contains position {low}; positions must be >= 0.")


def _check_cache(config: HybridGRUConfig, cache) -> None:
    if not isinstance(cache, Cache):
        raise ValueError(
            f"`cache` must be a transformers Cache such as DynamicCache(config=model.config), got "
            f"{type(cache).__name__} (legacy tuples of tensors are not supported)."
        )
    layers = getattr(cache, "layers", [])
    for idx, layer_type in enumerate(config.layer_types):
        slot = layers[idx] if idx < len(layers) else None
        if layer_type == "linear_attention" and not isinstance(slot, LinearAttentionCacheLayerMixin):
            found = type(slot).__name__ if slot is not None else "no layer"
            raise ValueError(
                f"`cache` has {found} at index {idx}, but layer {idx} is a GRU layer and needs a recurrent-state "
                f"slot: build the cache with DynamicCache(config=model.config)."
            )


def check_class_labels(labels: torch.Tensor, num_classes: int, name: str = "labels") -> None:
    """Class-index labels must lie in [0, num_classes) or be -100 (ignored); otherwise cross-entropy fails with an
    IndexError on CPU or a device assert on CUDA that names nothing."""
    if labels.dtype.is_floating_point or is_torchdynamo_compiling():
        return  # float labels mean regression / multi-label; those losses check their own shapes
    counted = labels[labels != -100]
    if counted.numel() and (counted.min() < 0 or counted.max() >= num_classes):
        bad = counted.min().item() if counted.min() < 0 else counted.max().item()
        raise ValueError(f"`{name}` contains {bad}, outside [0, {num_classes}) (use -100 to ignore a position).")


class HybridGRUModel(HybridGRUPreTrainedModel):
    def __init__(self, config: HybridGRUConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([HybridGRUDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = HybridGRURMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = HybridGRURotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | dict | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        check_inputs(self.config, input_ids, inputs_embeds, attention_mask, position_ids, cache, self.dtype)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if self.config.bidirectional:
            use_cache, cache = False, None
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        has_attention = any(t != "linear_attention" for t in self.config.layer_types)
        if position_ids is None:
            position_ids = self._positions(inputs_embeds, attention_mask, cache if has_attention else None)
        masks = attention_mask
        if not isinstance(masks, dict):
            masks = self._build_masks(inputs_embeds, attention_mask, cache, position_ids)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = layer(
                hidden_states,
                attention_mask=masks[layer.layer_type],
                position_embeddings=position_embeddings,
                position_ids=position_ids,  # GRU layers restart at packed-sequence starts, as Llama's layers get it
                cache=cache,
                **kwargs,
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache if use_cache else None)

    @staticmethod
    def _positions(inputs_embeds: torch.Tensor, attention_mask, cache: Cache | None) -> torch.LongTensor:
        """Positions count real tokens only, so a left-padded row gets the same positions as when run alone."""
        seq_len = inputs_embeds.shape[1]
        if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
            positions = attention_mask.long().cumsum(-1) - 1
            return positions.clamp(min=0)[:, -seq_len:]
        past = cache.get_seq_length() if cache is not None else 0
        return (torch.arange(seq_len, device=inputs_embeds.device) + past).unsqueeze(0)

    def _build_masks(self, inputs_embeds, attention_mask, cache, position_ids) -> dict:
        mask_kwargs = {
            "config": self.config,
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "cache": cache,
            "position_ids": position_ids,
        }
        masks = {"linear_attention": create_recurrent_attention_mask(**mask_kwargs)}
        if self.config.bidirectional:
            full = create_bidirectional_mask(
                config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask
            )
            return {**masks, "full_attention": full, "sliding_attention": full}
        layer_types = set(self.config.layer_types)
        if "full_attention" in layer_types:
            masks["full_attention"] = create_causal_mask(**mask_kwargs)
        if "sliding_attention" in layer_types:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
        return masks


class HybridGRUForCausalLM(HybridGRUPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: HybridGRUConfig):
        if config.bidirectional:
            raise ValueError(
                "HybridGRUForCausalLM needs a causal model, but the config has bidirectional=True; set "
                "bidirectional=False (bidirectional mode is for classification, tagging and CTC)."
            )
        super().__init__(config)
        self.model = HybridGRUModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            check_class_labels(labels, self.config.vocab_size)
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def pool_sequence(hidden_states: torch.Tensor, attention_mask, input_ids, config: HybridGRUConfig) -> torch.Tensor:
    """(B, T, D) -> (B, D): the last real token for a causal model, the mean over real tokens for a bidirectional one.

    "Real" comes from `attention_mask`, else from `pad_token_id` in `input_ids`, else every token is real. Works for
    left and right padding alike.
    """
    batch, seq_len = hidden_states.shape[:2]
    if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
        real = attention_mask[:, -seq_len:].bool()
    elif input_ids is not None and config.pad_token_id is not None:
        real = input_ids != config.pad_token_id
    else:
        real = torch.ones(batch, seq_len, dtype=torch.bool, device=hidden_states.device)
    if config.bidirectional:
        weights = real.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    # index of the last real token: the largest position holding a real token
    positions = torch.arange(seq_len, device=hidden_states.device)
    last = (positions * real).argmax(-1)
    return hidden_states[torch.arange(batch, device=hidden_states.device), last]


class HybridGRUForSequenceClassification(HybridGRUPreTrainedModel):
    def __init__(self, config: HybridGRUConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HybridGRUModel(config)  # built directly: remote code cannot call AutoModel without trust
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutputWithPast:
        kwargs.pop("use_cache", None)
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        pooled = pool_sequence(outputs.last_hidden_state, attention_mask, input_ids, self.config)
        logits = self.score(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.num_labels > 1:
                check_class_labels(labels, self.config.num_labels)
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config, **kwargs)
        return SequenceClassifierOutputWithPast(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class HybridGRUForTokenClassification(HybridGRUPreTrainedModel):
    def __init__(self, config: HybridGRUConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HybridGRUModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput:
        kwargs.pop("use_cache", None)
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        logits = self.score(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            check_class_labels(labels, self.config.num_labels)
            loss = self.loss_function(logits, labels, self.config, **kwargs)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class HybridGRUForQuestionAnswering(HybridGRUPreTrainedModel):
    def __init__(self, config: HybridGRUConfig):
        super().__init__(config)
        self.model = HybridGRUModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> QuestionAnsweringModelOutput:
        kwargs.pop("use_cache", None)
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions, **kwargs)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "HybridGRUPreTrainedModel",
    "HybridGRUModel",
    "HybridGRUForCausalLM",
    "HybridGRUForSequenceClassification",
    "HybridGRUForTokenClassification",
    "HybridGRUForQuestionAnswering",
]
