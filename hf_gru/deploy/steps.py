"""The causal heads restated on explicit state tensors, the form both exporters trace (`hf_gru.deploy.onnx_graphs`,
`hf_gru.deploy.executorch`) and the runtimes feed.

The model's state lives in a transformers `Cache`, a Python object no exporter can trace. `CausalLMStep` re-states one
forward of `HybridGRUForCausalLM` on the model's own modules (norms, projections, rotary embedding, MLPs) with the
state as plain tensors: per attention layer its keys and values (batch, kv_heads, past_length, head_dim), per GRU
layer the last `gru_conv_kernel - 1` inputs of the short convolution (batch, hidden_size, kernel - 1) and the
recurrent state (batch, gru_hidden_size). One graph serves prefill and decoding: batch, sequence and past lengths are
dynamic. `TimeSeriesStep` and `CTCStep` do the same for the other heads on the shared `backbone_step`.

Recurrence. `torch.export` cannot trace a Python loop over a dynamic length, nor `nn.GRU` with a dynamic length, and
the model's fast paths are custom ops that no ONNX runtime knows. The time loop is therefore written with torch's
`scan` higher-order op, which the dynamo ONNX exporter lowers to ONNX `Scan` (a loop inside the graph), for both
variants: the classic cell (whose gates read h_{t-1}, so there is no parallel form) and minGRU. For minGRU a parallel
log-space scan would also export, but it lost ~1e-4 against the loop here (see DESIGN.md), more than the parity budget;
ONNX's own `GRU` op cannot keep the state on left-padding positions (it takes right-aligned `sequence_lens` only).
Decoding runs one `Scan` iteration per GRU layer. A graph traced for one token (the ExecuTorch decode step; ExecuTorch
has no scan) holds a single cell instead.

Limits. Attention is eager (float32 softmax) over explicit keys and values. Sliding-window layers keep every key and
apply the window in the mask (the cache grows like a full-attention one; transformers' cache drops old keys).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig
from ..models.hybrid_gru.modeling_hybrid_gru import (
    HybridGRUAttention,
    HybridGRUForCausalLM,
    HybridGRUMixer,
    HybridGRUModel,
    apply_rotary_pos_emb,
)
from ..models.hybrid_gru.modeling_hybrid_gru_ctc import HybridGRUForCTC
from ..models.hybrid_gru.modeling_hybrid_gru_time_series import HybridGRUForTimeSeriesPrediction, student_t_domain
from ..models.hybrid_gru.recurrence_hybrid_gru import gru_cell, mingru_gates

SUBSAMPLING = 4  # frames per CTC output frame: HybridGRUConvSubsampler's two stride-2 convs

# ---------------------------------------------------------------------------------------------------------------------
# State layout: the one description shared by the exporter (input/output names, dynamic axes), the runtime (zeros to
# start from) and export_config.json.
# ---------------------------------------------------------------------------------------------------------------------


def state_specs(config: HybridGRUConfig, batch: str = "batch") -> list[dict]:
    """One entry per state tensor, in graph order: `name` (graph input), `output` (graph output with its next value),
    `layer`, `layer_type`, `kind` (key, value, conv, recurrent) and `shape` with symbolic `batch` (rows of the
    backbone; `series` = batch * channels for the time-series head) and `past_length`."""
    specs = []
    for idx, layer_type in enumerate(config.layer_types):
        if layer_type == "linear_attention":
            shapes = {
                "conv": [batch, config.hidden_size, config.gru_conv_kernel - 1],
                "recurrent": [batch, config.gru_hidden_size],
            }
        else:
            kv = [batch, config.num_key_value_heads, "past_length", config.head_dim]
            shapes = {"key": kv, "value": list(kv)}
        for kind, shape in shapes.items():
            specs.append(
                {
                    "name": f"past.{idx}.{kind}",
                    "output": f"present.{idx}.{kind}",
                    "layer": idx,
                    "layer_type": layer_type,
                    "kind": kind,
                    "shape": shape,
                }
            )
    return specs


def ctc_state_specs(config: HybridGRUConfig) -> list[dict]:
    """The CTC head's states: the pending input frames of each subsampler conv, then the backbone's (`state_specs`)."""
    widths = [config.num_mel_bins, config.conv_subsampling_channels]
    subsampler = [
        {"name": f"past.subsampler.{i}", "output": f"present.subsampler.{i}", "layer": f"subsampler.convs.{i}",
         "layer_type": "conv_subsampler", "kind": "pending_frames", "shape": ["batch", width, 2]}
        for i, width in enumerate(widths)
    ]  # fmt: skip
    return subsampler + state_specs(config)


def attention_bias(attention_mask: torch.Tensor, seq_len: int, window: int | None, dtype: torch.dtype) -> torch.Tensor:
    """(B, past + T) padding mask -> additive (B, 1, T, past + T) bias: causal, padding and (with `window`) sliding.

    Positions are cache slots, as transformers' mask builders count them. A finite minimum instead of -inf keeps a row
    with no visible key (a left-padding query) finite; its output is never read, but NaN would leak through 0 * NaN.
    """
    total = attention_mask.shape[1]
    query = torch.arange(seq_len, device=attention_mask.device) + (total - seq_len)
    key = torch.arange(total, device=attention_mask.device)
    visible = key[None, :] <= query[:, None]  # (T, past + T)
    if window is not None:
        visible = visible & (key[None, :] > query[:, None] - window)
    visible = visible[None] & attention_mask.bool()[:, None, :]
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(visible, zero, torch.finfo(dtype).min)[:, None]


def gru_mixer_step(
    mixer: HybridGRUMixer,
    x: torch.Tensor,
    keep: torch.Tensor,
    conv_state: torch.Tensor,
    state: torch.Tensor,
    unroll: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`HybridGRUMixer.forward` on explicit state. x (B, T, D); keep (B, T) True on padding; conv_state (B, D, K - 1);
    state (B, H). Returns the mixer output (B, T, D), the next conv window and the next recurrent state.

    The time loop is a `scan`, except for a static length of 1 (one cell) and, with `unroll`, any static length (one
    cell per step, written out in the graph: what ExecuTorch, which has no scan, runs for a fixed-size chunk)."""
    from torch._higher_order_ops.scan import scan  # torch's prototype scan, lowered to ONNX Scan by the exporter

    x = x.masked_fill(keep.unsqueeze(-1), 0.0)
    window = torch.cat([conv_state, x.transpose(1, 2)], dim=-1)  # (B, D, K - 1 + T)
    conv = F.conv1d(window, mixer.conv.weight, mixer.conv.bias, groups=window.shape[1]).transpose(1, 2)
    width = conv_state.shape[-1]  # K - 1, static
    next_conv = window.narrow(-1, window.shape[-1] - width, width)  # the last K - 1 inputs, a static-size slice
    gates_x = mixer.input_proj(conv).transpose(0, 1)  # (T, B, G): scan runs over the leading dim
    keep_t = keep.t().unsqueeze(-1)  # (T, B, 1)
    if mixer.variant == "gru":
        weight, bias = mixer.hidden_proj.weight, mixer.hidden_proj.bias

        def cell(h, inputs):
            gates, keep_step = inputs
            h_new = torch.where(keep_step, h, gru_cell(gates, h, lambda s: F.linear(s, weight, bias)))
            return h_new, h_new.clone()  # scan forbids an output aliasing the carry

        inputs = (gates_x, keep_t)
    else:

        def cell(h, inputs):
            h_new = torch.addcmul(inputs[1], inputs[0], h)
            return h_new, h_new.clone()

        inputs = mingru_gates(gates_x, keep_t.squeeze(-1))
    length = x.shape[1]
    if isinstance(length, int) and (length == 1 or unroll):
        # A static length (e.g. an ExecuTorch program, which has no scan): the cells written out, no loop op.
        outputs, last = [], state
        for t in range(length):
            last, out = cell(last, [i[t] for i in inputs])
            outputs.append(out)
        states = torch.stack(outputs)
    else:
        last, states = scan(cell, state, inputs)
    return mixer.out_proj(states.transpose(0, 1)), next_conv, last


def attention_step(
    attention: HybridGRUAttention,
    x: torch.Tensor,
    bias: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    past_key: torch.Tensor,
    past_value: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`HybridGRUAttention.forward` (eager, softmax in float32) on explicit keys and values; returns output, keys and
    values including this chunk's."""
    shape = (*x.shape[:-1], -1, attention.head_dim)
    query = attention.q_proj(x).view(shape).transpose(1, 2)  # (B, H, T, hd)
    key = attention.k_proj(x).view(shape).transpose(1, 2)  # (B, kvH, T, hd)
    value = attention.v_proj(x).view(shape).transpose(1, 2)
    query, key = apply_rotary_pos_emb(query, key, *position_embeddings)
    key, value = torch.cat([past_key, key], dim=2), torch.cat([past_value, value], dim=2)
    # Grouped-query heads without `repeat_kv`: query heads h = kv * groups + g, as repeat_kv orders them, are the
    # G * T rows of one matmul per kv head `kv`. (The expand + reshape of repeat_kv made torch.export add a stride
    # guard it then cannot prove for a bounded past length, which ExecuTorch needs; a broadcast over the G heads made
    # onnxruntime pack the keys and values once per query head.)
    batch, heads, seq_len, head_dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    query = query.reshape(batch, kv_heads, groups * seq_len, head_dim)
    scores = (query @ key.transpose(2, 3) * attention.scaling).view(batch, kv_heads, groups, seq_len, -1)
    scores = scores + bias.unsqueeze(2)  # (B, kvH, G, T, S)
    weights = scores.softmax(-1, dtype=torch.float32).to(query.dtype)
    out = (weights @ value.unsqueeze(2)).view(batch, heads, seq_len, head_dim)
    out = out.transpose(1, 2).reshape(batch, seq_len, heads * head_dim)  # (B, T, H * hd)
    return attention.o_proj(out), key, value


def backbone_step(
    model: HybridGRUModel,
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    states: list[torch.Tensor],
    keep: torch.Tensor | None = None,
    unroll: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`HybridGRUModel.forward` on embeddings (B, T, D) with explicit state: the final-norm hidden states and the next
    states, both in `state_specs` order. `attention_mask` (B, past + T) covers the cached tokens and the new ones;
    `keep` (B, T), True on padding, defaults to its last T columns. `unroll`: see `gru_mixer_step`."""
    seq_len = hidden.shape[1]
    position_embeddings = model.rotary_emb(hidden, position_ids)
    if keep is None:
        keep = attention_mask[:, -seq_len:] == 0
    biases = {}
    next_states, states = [], iter(states)
    for layer in model.layers:
        x = layer.input_layernorm(hidden)
        if layer.layer_type == "linear_attention":
            mixed, *state = gru_mixer_step(layer.mixer, x, keep, next(states), next(states), unroll)
        else:
            window = layer.mixer.sliding_window
            if window not in biases:
                biases[window] = attention_bias(attention_mask, seq_len, window, hidden.dtype)
            mixed, *state = attention_step(
                layer.mixer, x, biases[window], position_embeddings, next(states), next(states)
            )
        next_states += state
        hidden = hidden + mixed
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return model.norm(hidden), next_states


class CausalLMStep(nn.Module):
    """`HybridGRUForCausalLM` with explicit state: forward(input_ids, attention_mask, position_ids, *states) ->
    (logits, *next_states), states in `state_specs` order. `attention_mask` (B, past + T) covers the cached tokens and
    the new ones; `position_ids` (B, T) count real tokens only, as the model counts them for a padded batch.
    `unroll`: a static chunk length runs its GRU steps written out instead of in a `scan` (see `gru_mixer_step`)."""

    def __init__(self, model: HybridGRUForCausalLM, unroll: bool = False):
        super().__init__()
        self.model = model.model
        self.lm_head = model.lm_head
        self.unroll = unroll

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *states: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        hidden = self.model.embed_tokens(input_ids)
        hidden, next_states = backbone_step(
            self.model, hidden, attention_mask, position_ids, list(states), unroll=self.unroll
        )
        return (self.lm_head(hidden), *next_states)


class CTCStep(nn.Module):
    """`HybridGRUForCTC` streaming with explicit state: forward(input_features, subsampler.0, subsampler.1, *states) ->
    (logits, next subsampler.0, next subsampler.1, *next_states).

    input_features (B, T, num_mel_bins) with T a multiple of 4 (the subsampler's total stride), so each conv layer
    consumes whole strides and keeps exactly its last `kernel_size - 1` input frames as state (its zero padding at the
    start). Logits (B, T / 4, vocab) equal the model's for those frames. `unroll`: see `CausalLMStep`.
    """

    def __init__(self, model: HybridGRUForCTC, unroll: bool = False):
        super().__init__()
        self.unroll = unroll
        self.subsampler = model.subsampler
        self.model = model.model
        self.lm_head = model.lm_head
        self.num_subsampler_states = len(model.subsampler.convs)
        self.attention_index = _first_key_index(model.config)

    def forward(self, input_features: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        subsampler = self.subsampler
        x = subsampler.feature_norm(input_features).transpose(1, 2)  # (B, F, T)
        next_pending = []
        for conv, pending in zip(subsampler.convs, states[: self.num_subsampler_states], strict=True):
            x = torch.cat([pending, x], dim=-1)  # even length + kernel - 1: the conv ends on the last frame
            next_pending.append(x.narrow(-1, x.shape[-1] - pending.shape[-1], pending.shape[-1]))
            x = subsampler.act(conv(x))
        hidden = subsampler.proj(x.transpose(1, 2))  # (B, T / 4, D)
        states = list(states[self.num_subsampler_states :])
        past = states[self.attention_index].shape[2] if self.attention_index is not None else 0
        hidden, next_states = run_backbone(self.model, hidden, past, states, self.unroll)
        return (self.lm_head(hidden), *next_pending, *next_states)


def _first_key_index(config: HybridGRUConfig) -> int | None:
    """Index of the first key cache among the backbone states: its length is the number of tokens seen so far."""
    return next((i for i, s in enumerate(state_specs(config)) if s["kind"] == "key"), None)


def run_backbone(
    model: HybridGRUModel, tokens: torch.Tensor, past, states: list, unroll: bool = False
) -> tuple[torch.Tensor, list]:
    """`backbone_step` for unpadded rows after `past` tokens (streams of the time-series and CTC heads)."""
    rows, length = tokens.shape[:2]
    mask = torch.ones(rows, past + length, dtype=torch.long, device=tokens.device)
    positions = (torch.arange(length, device=tokens.device) + past).unsqueeze(0).expand(rows, -1)
    no_padding = torch.zeros(rows, length, dtype=torch.bool, device=tokens.device)
    return backbone_step(model, tokens, mask, positions, states, no_padding, unroll)


class TimeSeriesStep(nn.Module):
    """`HybridGRUForTimeSeriesPrediction` streaming with explicit state: forward(past_values, past_observed_mask, loc,
    scale, *states) -> (prediction, *distribution_params, *next_states).

    past_values, past_observed_mask (B, T, C): the next chunk (whole patches after the first); loc, scale (B, 1, C):
    the statistics frozen at the first chunk. States have B * C rows (one per series and channel). The forecast runs
    the future placeholders after the updated state and drops the states they produce, as the model's forked cache.
    `unroll`: see `CausalLMStep`.
    """

    def __init__(self, model: HybridGRUForTimeSeriesPrediction, unroll: bool = False):
        super().__init__()
        self.unroll = unroll
        self.head_model = model
        self.model = model.model
        self.attention_index = _first_key_index(model.config)

    def forward(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        *states: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        head_model, config = self.head_model, self.head_model.config
        observed = past_observed_mask.to(past_values.dtype)
        values = torch.where(observed.bool(), past_values, torch.zeros_like(past_values))  # NaN-free
        scaled = (values - loc) / scale * observed  # (B, T, C)
        batch, _, channels = past_values.shape
        # The patch embedding on whole patches (the runtime pads the first chunk), without its padding: a padded
        # length made the number of tokens a data-dependent size that `scan` cannot take.
        shape = (batch * channels, past_values.shape[1] // config.patch_length, config.patch_length)
        patches = torch.cat([scaled.transpose(1, 2).reshape(shape), observed.transpose(1, 2).reshape(shape)], dim=-1)
        tokens = head_model.patch_embedding.proj(patches)  # (B*C, N, D)
        past = states[self.attention_index].shape[2] if self.attention_index is not None else 0
        hidden, next_states = run_backbone(self.model, tokens, past, list(states), self.unroll)
        future = head_model.future_tokens.expand(tokens.shape[0], -1, -1)  # (B*C, F, D)
        hidden, _ = run_backbone(self.model, future, past + tokens.shape[1], next_states, self.unroll)
        head_out = head_model.head(hidden).view(batch, channels, -1, head_model.num_outputs)  # (B, C, F*P, k)
        head_out = head_out[:, :, : config.prediction_length].permute(3, 0, 2, 1)  # (k, B, H, C)
        if config.loss == "nll":
            params = student_t_domain(*head_out)
            return (params[1] * scale + loc, *params, *next_states)
        return (head_out[0] * scale + loc, *next_states)


def zero_states(specs: list[dict], batch: int, dtype: torch.dtype = torch.float32, past_length: int = 0) -> list:
    """Start-of-sequence state: zeros everywhere (empty key/value caches when `past_length` is 0)."""
    sizes = {"batch": batch, "series": batch, "past_length": past_length}
    return [torch.zeros([sizes.get(d, d) for d in spec["shape"]], dtype=dtype) for spec in specs]


def example_inputs(config: HybridGRUConfig, dtype: torch.dtype, batch: int, seq_len: int, past: int) -> tuple:
    """Example graph inputs for a causal LM: ids, mask, positions and zero states (`past` cached tokens)."""
    ids = torch.randint(0, config.vocab_size, (batch, seq_len))
    mask = torch.ones(batch, past + seq_len, dtype=torch.long)
    positions = torch.arange(past, past + seq_len).repeat(batch, 1)
    return (ids, mask, positions, *zero_states(state_specs(config), batch, dtype, past))
