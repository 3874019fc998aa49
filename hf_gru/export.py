"""ONNX and ExecuTorch export of HybridGRU models with the recurrent state as explicit graph inputs and outputs, and
runtimes that carry that state between calls: `OnnxCausalLM` (onnxruntime) and `ExecuTorchCausalLM` for the causal
LM, `OnnxTimeSeriesForecaster` (streaming forecast) and `OnnxCTCRecognizer` (streaming recognition) for the other
causal heads.

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
apply the window in the mask (the cache grows like a full-attention one; transformers' cache drops old keys). Beam
search is not offered by the runtimes. Float32 is what the parity tests cover.
"""

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig
from transformers.generation import GenerationMixin, LogitsProcessorList, StoppingCriteriaList

from .configuration_hybrid_gru import HybridGRUConfig
from .modeling_hybrid_gru import (
    HybridGRUAttention,
    HybridGRUForCausalLM,
    HybridGRUMixer,
    HybridGRUModel,
    apply_rotary_pos_emb,
)
from .modeling_hybrid_gru_ctc import HybridGRUForCTC
from .modeling_hybrid_gru_time_series import HybridGRUForTimeSeriesPrediction, scaling_statistics, student_t_domain
from .recurrence_hybrid_gru import gru_cell, mingru_gates

ONNX_FILE = "model.onnx"
EXECUTORCH_FILE = "model.pte"
EXPORT_CONFIG_FILE = "export_config.json"
ONNX_FORMAT = "hf_gru-onnx"
EXECUTORCH_FORMAT = "hf_gru-executorch"
EXPORT_FORMAT_VERSION = 1
GRAPH_INPUTS = ("input_ids", "attention_mask", "position_ids")  # then the states, see `state_specs`
# Tokenizer / processor files copied from a model folder next to the graph, so the export folder is self-contained.
PROCESSOR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
    "preprocessor_config.json", "processor_config.json", "feature_extractor_config.json",
)  # fmt: skip
QUANTIZATIONS = ("int8",)
EXECUTORCH_BACKENDS = ("portable", "xnnpack")
EXPORTABLE = {
    "HybridGRUForCausalLM": "causal-lm",
    "HybridGRUForTimeSeriesPrediction": "time-series-forecasting",
    "HybridGRUForCTC": "automatic-speech-recognition",
}
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
    mixer: HybridGRUMixer, x: torch.Tensor, keep: torch.Tensor, conv_state: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`HybridGRUMixer.forward` on explicit state. x (B, T, D); keep (B, T) True on padding; conv_state (B, D, K - 1);
    state (B, H). Returns the mixer output (B, T, D), the next conv window and the next recurrent state."""
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
    if isinstance(x.shape[1], int) and x.shape[1] == 1:
        # A decode-step graph (static length 1, e.g. for ExecuTorch, which has no scan): one cell, no loop.
        last, states = cell(state, [t[0] for t in inputs])
        states = states.unsqueeze(0)
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
    # Grouped-query heads without `repeat_kv`: query heads h = kv * groups + g, as repeat_kv orders them, attend to
    # kv head `kv` through a broadcast. (The expand + reshape of repeat_kv made torch.export add a stride guard it
    # then cannot prove for a bounded past length, which ExecuTorch needs.)
    batch, heads, seq_len, head_dim = query.shape
    kv_heads = key.shape[1]
    query = query.view(batch, kv_heads, heads // kv_heads, seq_len, head_dim)
    scores = query @ key.unsqueeze(2).transpose(3, 4) * attention.scaling + bias.unsqueeze(2)  # (B, kvH, G, T, S)
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
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`HybridGRUModel.forward` on embeddings (B, T, D) with explicit state: the final-norm hidden states and the next
    states, both in `state_specs` order. `attention_mask` (B, past + T) covers the cached tokens and the new ones;
    `keep` (B, T), True on padding, defaults to its last T columns."""
    seq_len = hidden.shape[1]
    position_embeddings = model.rotary_emb(hidden, position_ids)
    if keep is None:
        keep = attention_mask[:, -seq_len:] == 0
    biases = {}
    next_states, states = [], iter(states)
    for layer in model.layers:
        x = layer.input_layernorm(hidden)
        if layer.layer_type == "linear_attention":
            mixed, *state = gru_mixer_step(layer.mixer, x, keep, next(states), next(states))
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
    the new ones; `position_ids` (B, T) count real tokens only, as the model counts them for a padded batch."""

    def __init__(self, model: HybridGRUForCausalLM):
        super().__init__()
        self.model = model.model
        self.lm_head = model.lm_head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *states: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        hidden = self.model.embed_tokens(input_ids)
        hidden, next_states = backbone_step(self.model, hidden, attention_mask, position_ids, list(states))
        return (self.lm_head(hidden), *next_states)


class CTCStep(nn.Module):
    """`HybridGRUForCTC` streaming with explicit state: forward(input_features, subsampler.0, subsampler.1, *states) ->
    (logits, next subsampler.0, next subsampler.1, *next_states).

    input_features (B, T, num_mel_bins) with T a multiple of 4 (the subsampler's total stride), so each conv layer
    consumes whole strides and keeps exactly its last `kernel_size - 1` input frames as state (its zero padding at the
    start). Logits (B, T / 4, vocab) equal the model's for those frames.
    """

    def __init__(self, model: HybridGRUForCTC):
        super().__init__()
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
        hidden, next_states = run_backbone(self.model, hidden, past, states)
        return (self.lm_head(hidden), *next_pending, *next_states)


def _first_key_index(config: HybridGRUConfig) -> int | None:
    """Index of the first key cache among the backbone states: its length is the number of tokens seen so far."""
    return next((i for i, s in enumerate(state_specs(config)) if s["kind"] == "key"), None)


def run_backbone(model: HybridGRUModel, tokens: torch.Tensor, past, states: list) -> tuple[torch.Tensor, list]:
    """`backbone_step` for unpadded rows after `past` tokens (streams of the time-series and CTC heads)."""
    rows, length = tokens.shape[:2]
    mask = torch.ones(rows, past + length, dtype=torch.long, device=tokens.device)
    positions = (torch.arange(length, device=tokens.device) + past).unsqueeze(0).expand(rows, -1)
    no_padding = torch.zeros(rows, length, dtype=torch.bool, device=tokens.device)
    return backbone_step(model, tokens, mask, positions, states, no_padding)


class TimeSeriesStep(nn.Module):
    """`HybridGRUForTimeSeriesPrediction` streaming with explicit state: forward(past_values, past_observed_mask, loc,
    scale, *states) -> (prediction, *distribution_params, *next_states).

    past_values, past_observed_mask (B, T, C): the next chunk (whole patches after the first); loc, scale (B, 1, C):
    the statistics frozen at the first chunk. States have B * C rows (one per series and channel). The forecast runs
    the future placeholders after the updated state and drops the states they produce, as the model's forked cache.
    """

    def __init__(self, model: HybridGRUForTimeSeriesPrediction):
        super().__init__()
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
        hidden, next_states = run_backbone(self.model, tokens, past, list(states))
        future = head_model.future_tokens.expand(tokens.shape[0], -1, -1)  # (B*C, F, D)
        hidden, _ = run_backbone(self.model, future, past + tokens.shape[1], next_states)
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


# ---------------------------------------------------------------------------------------------------------------------
# Exporters
# ---------------------------------------------------------------------------------------------------------------------


def export_onnx(
    model: HybridGRUForCausalLM | HybridGRUForTimeSeriesPrediction | str | os.PathLike,
    output_dir: str | os.PathLike,
    quantize: str | None = None,
    processor=None,
    opset_version: int = 18,
) -> Path:
    """Exports a causal LM to an ONNX folder that `OnnxCausalLM.from_pretrained` runs: `model.onnx` (one graph for
    prefill and decoding, dynamic batch, sequence and past lengths, state as inputs/outputs, see `CausalLMStep`), or a
    time-series model to one that `OnnxTimeSeriesForecaster` runs (a streaming forecast per chunk, `TimeSeriesStep`);
    `config.json`, `generation_config.json`, `export_config.json` (graph inputs/outputs and the state tensors with
    symbolic shapes) and the tokenizer/processor files of the model folder (or of `processor`, saved with its
    `save_pretrained`).

    `model` is a model object or a saved model folder. `quantize="int8"` writes a dynamically quantized int8 graph
    (`hf_gru.quantization.quantize_onnx_int8`) as `model.onnx` instead of the float one. The folder is written into a
    hidden staging folder next to `output_dir` and renamed into place once complete, so an interrupted export leaves
    no folder at `output_dir`. Raises ValueError for an unsupported model, a bidirectional model, an unknown
    `quantize` or an `output_dir` that exists and is not an empty folder.
    """
    quantizer = _quantizer(quantize)

    def write(model: HybridGRUForCausalLM, staging: Path) -> dict:
        graph = staging / ONNX_FILE
        _export_onnx_graph(model, graph, opset_version)
        quantization = None
        if quantizer is not None:
            float_graph = graph.with_name("model.float.onnx")
            graph.rename(float_graph)
            quantizer(float_graph, graph)
            quantization = {"method": "dynamic", "weights": quantize, "by": "hf_gru.quantization.quantize_onnx_int8"}
            float_graph.unlink()
        return {
            "format": ONNX_FORMAT,
            "graph": ONNX_FILE,
            "opset_version": opset_version,
            "quantization": quantization,
        }

    return _export_folder(model, output_dir, processor, write)


def export_executorch(
    model: HybridGRUForCausalLM | str | os.PathLike,
    output_dir: str | os.PathLike,
    max_length: int | None = None,
    max_batch_size: int = 8,
    backend: str = "portable",
    processor=None,
) -> Path:
    """Exports the decode step of a causal LM to an ExecuTorch program folder that `ExecuTorchCausalLM.from_pretrained`
    runs: `model.pte` (one token per call, state as inputs/outputs as in `export_onnx`), the configs, the tokenizer
    files and `export_config.json`.

    ExecuTorch plans memory ahead, so the dynamic dims are bounded: batch <= `max_batch_size`, cached + new tokens <=
    `max_length` (default: `max_position_embeddings`). `backend="portable"` runs ExecuTorch's portable kernels;
    `"xnnpack"` delegates what XNNPACK supports, op by op (needs torchao; whole partitions failed on this graph with
    "Output node ... is already in the inputs": pass-through arguments, which XNNPACK does not take). A prompt is fed
    one token per call (a decode-step graph has no time loop: ExecuTorch has no `scan`). Same errors and staging
    folder as `export_onnx`.
    """
    if backend not in EXECUTORCH_BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; expected one of {EXECUTORCH_BACKENDS}.")
    for name, value, low in (("max_length", max_length, 5), ("max_batch_size", max_batch_size, 1)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise ValueError(f"`{name}` must be an integer >= {low}, got {name}={value!r}.")

    def write(model: HybridGRUForCausalLM, staging: Path) -> dict:
        if not isinstance(model, HybridGRUForCausalLM):
            raise ValueError(f"export_executorch exports HybridGRUForCausalLM, got a {type(model).__name__}.")
        length = max_length or model.config.max_position_embeddings
        _export_executorch_program(model, staging / EXECUTORCH_FILE, length, max_batch_size, backend)
        fields = {"format": EXECUTORCH_FORMAT, "graph": EXECUTORCH_FILE, "backend": backend, "max_length": length}
        return {**fields, "max_batch_size": max_batch_size, "max_sequence_length": 1}

    return _export_folder(model, output_dir, processor, write)


def _export_folder(model, output_dir: str | os.PathLike, processor, write) -> Path:
    """Checks the inputs, then builds the folder in a staging folder (`write(model, staging)` adds the graph and
    returns export_config fields) and renames it into place."""
    output_dir = Path(output_dir)
    _check_output_dir(output_dir)
    source = None
    if isinstance(model, (str, os.PathLike)):
        source, model = Path(model), _load_model(Path(model))
    task = _check_model(model)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.export-", dir=output_dir.parent))
    try:
        fields = write(model, staging)
        model.config.save_pretrained(staging)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(staging)
        _copy_processor_files(source, processor, staging)
        export_config = {**_export_config(model, task), **fields}
        (staging / EXPORT_CONFIG_FILE).write_text(json.dumps(export_config, indent=2) + "\n")  # written last
        if output_dir.exists():
            output_dir.rmdir()  # empty, checked above
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        what = "a folder that is not empty" if output_dir.is_dir() else "a file"
        raise ValueError(f"output_dir={str(output_dir)!r} is {what}; export into a new or empty folder.")
    if not output_dir.parent.is_dir():
        raise ValueError(
            f"output_dir={str(output_dir)!r}: its parent folder {str(output_dir.parent)!r} does not exist."
        )


def _quantizer(quantize: str | None):
    if quantize is None:
        return None
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r} is not supported; expected None or one of {QUANTIZATIONS}.")
    try:
        from .quantization import quantize_onnx_int8
    except ImportError as error:
        raise NotImplementedError(f"quantize={quantize!r} needs hf_gru.quantization.quantize_onnx_int8") from error
    return quantize_onnx_int8


def _load_model(path: Path):
    from transformers import AutoConfig

    if not (path / "config.json").is_file():
        raise ValueError(f"model={str(path)!r} is not a saved model folder (no config.json).")
    config = AutoConfig.from_pretrained(path)
    architecture = (config.architectures or [None])[0]
    if architecture not in EXPORTABLE:
        raise ValueError(f"model={str(path)!r} is a {architecture}; the exporters support {sorted(EXPORTABLE)}.")
    return _MODEL_CLASSES[architecture].from_pretrained(path)


_MODEL_CLASSES = {c.__name__: c for c in (HybridGRUForCausalLM, HybridGRUForTimeSeriesPrediction, HybridGRUForCTC)}


def _check_model(model) -> str:
    name = type(model).__name__
    if name not in EXPORTABLE or not isinstance(model, _MODEL_CLASSES[name]):
        raise ValueError(f"The exporters support {sorted(EXPORTABLE)}, got a {name}.")
    if model.config.bidirectional:
        raise ValueError(
            f"{name} has bidirectional=True: a bidirectional model sees the future, so it cannot run step by step; "
            "export a causal (bidirectional=False) model."
        )
    return EXPORTABLE[name]


def _example_inputs(config: HybridGRUConfig, dtype: torch.dtype, batch: int, seq_len: int, past: int) -> tuple:
    ids = torch.randint(0, config.vocab_size, (batch, seq_len))
    mask = torch.ones(batch, past + seq_len, dtype=torch.long)
    positions = torch.arange(past, past + seq_len).repeat(batch, 1)
    return (ids, mask, positions, *zero_states(state_specs(config), batch, dtype, past))


def _export_onnx_graph(model, path: Path, opset_version: int) -> None:
    """Traces the model's step module with torch.export (dynamic batch, sequence, past lengths) into an ONNX file."""
    module, inputs, input_names, output_names, dynamic_shapes = _onnx_signature(model)
    with torch.no_grad():
        program = torch.onnx.export(
            module.eval(),
            inputs,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset_version,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))


def _onnx_signature(model) -> tuple:
    """(step module, example inputs, input names, output names, dynamic shapes) of the model's graph. Example sizes
    are above 1: torch.export specialises dims of size 0 and 1."""
    config = model.config
    batch, seq, past = torch.export.Dim("batch"), torch.export.Dim("sequence_length"), torch.export.Dim("past_length")
    if isinstance(model, HybridGRUForCTC):
        specs = ctc_state_specs(config)
        state_axes = tuple({0: batch, 2: past} if "past_length" in s["shape"] else {0: batch} for s in specs)
        blocks = torch.export.Dim("blocks")  # of SUBSAMPLING frames
        features = torch.randn(2, 2 * SUBSAMPLING, config.num_mel_bins, dtype=model.dtype)
        inputs = (features, *zero_states(specs, 2, model.dtype, past_length=3))
        names = ["input_features", *(s["name"] for s in specs)], ["logits", *(s["output"] for s in specs)]
        return CTCStep(model), inputs, *names, ({0: batch, 1: blocks * SUBSAMPLING}, state_axes)
    if isinstance(model, HybridGRUForTimeSeriesPrediction):
        specs = state_specs(config, "series")
        rows = batch * config.num_input_channels if config.num_input_channels > 1 else batch
        state_axes = tuple({0: rows, 2: past} if "past_length" in s["shape"] else {0: rows} for s in specs)
        length = 2 * config.patch_length
        series = torch.randn(2, length, config.num_input_channels, dtype=model.dtype)
        stats = torch.zeros(2, 1, config.num_input_channels, dtype=model.dtype)
        states = zero_states(specs, 2 * config.num_input_channels, model.dtype, past_length=3)
        inputs = (series, torch.ones_like(series), stats, stats + 1, *states)
        # Whole patches (the runtime left-pads a first chunk as the patch embedding would): the number of tokens is
        # then a plain dim, where padding inside the graph made it a data-dependent size that `scan` cannot take.
        patches = torch.export.Dim("patches")
        series_axes = {0: batch, 1: patches * config.patch_length if config.patch_length > 1 else patches}
        dynamic_shapes = (series_axes, series_axes, {0: batch}, {0: batch}, state_axes)
        outputs = [o["name"] for o in _time_series_outputs(config, "float32")]
        input_names = ["past_values", "past_observed_mask", "loc", "scale"]
        return (
            TimeSeriesStep(model),
            inputs,
            [*input_names, *(s["name"] for s in specs)],
            [*outputs, *(s["output"] for s in specs)],
            dynamic_shapes,
        )
    specs = state_specs(config)
    total = torch.export.Dim("total_length")  # past + sequence: torch.export cannot state a sum of two free dims
    state_axes = tuple({0: batch, 2: past} if "past_length" in s["shape"] else {0: batch} for s in specs)
    dynamic_shapes = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, state_axes)
    inputs = _example_inputs(config, model.dtype, batch=2, seq_len=3, past=4)
    names = [*GRAPH_INPUTS, *(s["name"] for s in specs)], ["logits", *(s["output"] for s in specs)]
    return CausalLMStep(model), inputs, *names, dynamic_shapes


def _time_series_outputs(config: HybridGRUConfig, dtype: str) -> list[dict]:
    shape = ["batch", config.prediction_length, config.num_input_channels]
    names = ["prediction", *(["df", "distribution_loc", "distribution_scale"] if config.loss == "nll" else [])]
    return [{"name": name, "shape": shape, "dtype": dtype} for name in names]


def _export_executorch_program(
    model: HybridGRUForCausalLM, path: Path, max_length: int, max_batch_size: int, backend: str
) -> None:
    """Traces `CausalLMStep` for one token (static length 1, so no scan) and lowers it to an ExecuTorch program."""
    from executorch.exir import to_edge_transform_and_lower

    specs = state_specs(model.config)
    # A bound of 1 is a static size: torch.export refuses a Dim with min == max.
    rows = {0: torch.export.Dim("batch", min=1, max=max_batch_size)} if max_batch_size > 1 else {}
    past = torch.export.Dim("past_length", min=0, max=max_length - 1)
    state_axes = tuple({**rows, 2: past} if "past_length" in s["shape"] else rows for s in specs)
    dynamic_shapes = (rows, {**rows, 1: past + 1}, rows, state_axes)
    inputs = _example_inputs(model.config, model.dtype, batch=min(2, max_batch_size), seq_len=1, past=3)
    partitioners = []
    if backend == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioners.append(XnnpackPartitioner(per_op_mode=True))
    with torch.no_grad():
        program = torch.export.export(CausalLMStep(model).eval(), inputs, dynamic_shapes=dynamic_shapes)
    path.write_bytes(to_edge_transform_and_lower(program, partitioner=partitioners).to_executorch().buffer)


def _copy_processor_files(source: Path | None, processor, target: Path) -> None:
    if processor is not None:
        processor.save_pretrained(target)
        return
    if source is None:
        return
    for name in PROCESSOR_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def _export_config(model, task: str) -> dict:
    dtype = str(model.dtype).removeprefix("torch.")
    config = model.config
    if task == "automatic-speech-recognition":
        inputs = [("input_features", ["batch", f"blocks * {SUBSAMPLING}", config.num_mel_bins], dtype)]
        outputs = [{"name": "logits", "shape": ["batch", "blocks", config.vocab_size], "dtype": dtype}]
        specs, extra = ctc_state_specs(config), {"subsampling": SUBSAMPLING}
    elif task == "time-series-forecasting":
        series = ["batch", "patches * patch_length", config.num_input_channels]
        stats = ["batch", 1, config.num_input_channels]
        inputs = [("past_values", series, dtype), ("past_observed_mask", series, dtype)]
        inputs += [("loc", stats, dtype), ("scale", stats, dtype)]
        outputs, specs = _time_series_outputs(config, dtype), state_specs(config, "series")
        extra = {"series": "batch * num_input_channels: the backbone runs one row per series and channel"}
    else:
        inputs = [
            ("input_ids", ["batch", "sequence_length"], "int64"),
            ("attention_mask", ["batch", "past_length + sequence_length"], "int64"),
            ("position_ids", ["batch", "sequence_length"], "int64"),
        ]
        outputs = [{"name": "logits", "shape": ["batch", "sequence_length", config.vocab_size], "dtype": dtype}]
        specs, extra = state_specs(config), {}
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "task": task,
        "architecture": type(model).__name__,
        "dtype": dtype,
        "inputs": [{"name": name, "shape": shape, "dtype": kind} for name, shape, kind in inputs],
        "outputs": outputs,
        "states": [{**spec, "dtype": dtype} for spec in specs],
        **extra,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Runtimes
# ---------------------------------------------------------------------------------------------------------------------


def read_export_folder(
    path: str | os.PathLike, format: str, task: str, reader: str
) -> tuple[Path, HybridGRUConfig, dict]:
    """(folder, model config, export config) of an exported folder, checked to hold `format` and `task`."""
    path = Path(path)
    export_config_path = path / EXPORT_CONFIG_FILE
    if not export_config_path.is_file():
        raise ValueError(f"{str(path)!r} is not an exported model folder: it has no {EXPORT_CONFIG_FILE}.")
    export_config = json.loads(export_config_path.read_text())
    if export_config.get("format") != format or export_config.get("task") != task:
        raise ValueError(
            f"{str(export_config_path)!r} describes format={export_config.get('format')!r}, "
            f"task={export_config.get('task')!r}; {reader} runs {format!r} {task} exports."
        )
    return path, HybridGRUConfig.from_pretrained(path), export_config


def onnx_session(path: Path, export_config: dict, providers: list | None, session_options):
    """An onnxruntime InferenceSession on the folder's graph (default: the CPU provider)."""
    import onnxruntime

    providers = providers or ["CPUExecutionProvider"]
    graph = str(path / export_config["graph"])
    return onnxruntime.InferenceSession(graph, sess_options=session_options, providers=providers)


def onnx_run(session, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Runs `session` on CPU tensors in graph input order; outputs in graph order."""
    feed = {spec.name: tensor.numpy() for spec, tensor in zip(session.get_inputs(), inputs, strict=True)}
    return [torch.from_numpy(output) for output in session.run(None, feed)]


@dataclass
class CausalLMState:
    """What a runtime's `step` carries between calls: the state tensors in graph order, and the padding mask
    (batch, past_length) of every token fed so far."""

    tensors: list[torch.Tensor]
    attention_mask: torch.Tensor


class ExportedCausalLM:
    """What the runtimes share: `step` for streaming and `generate` for transformers-style greedy and sampled
    decoding, whose logits processors, warpers and stopping criteria are transformers' own. Subclasses run the graph
    (`_run`) and load their folder (`from_pretrained`)."""

    format = None
    # Reused from transformers: they read only `self.config` and the generation config.
    _get_logits_processor = GenerationMixin._get_logits_processor
    _get_stopping_criteria = GenerationMixin._get_stopping_criteria
    _merge_criteria_processor_list = GenerationMixin._merge_criteria_processor_list
    _prepare_special_tokens = GenerationMixin._prepare_special_tokens

    def __init__(self, config: HybridGRUConfig, export_config: dict, generation_config: GenerationConfig):
        self.config = config
        self.export_config = export_config
        self.generation_config = generation_config
        self.device = torch.device("cpu")
        self.dtype = getattr(torch, export_config["dtype"])
        self.state_specs = export_config["states"]

    @classmethod
    def _read_folder(cls, path: str | os.PathLike) -> tuple[Path, HybridGRUConfig, dict, GenerationConfig]:
        path, config, export_config = read_export_folder(path, cls.format, "causal-lm", cls.__name__)
        try:
            generation_config = GenerationConfig.from_pretrained(path)
        except OSError:
            generation_config = GenerationConfig.from_model_config(config)
        return path, config, export_config, generation_config

    def _run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Runs the graph once, inputs and outputs in graph order: ids, mask, positions, *states -> logits, *states."""
        raise NotImplementedError

    def init_state(self, batch_size: int) -> CausalLMState:
        """The state before any token: zeros, empty key/value caches."""
        zeros = zero_states(self.state_specs, batch_size, self.dtype)
        return CausalLMState(zeros, torch.zeros(batch_size, 0, dtype=torch.long))

    def step(
        self,
        input_ids: torch.Tensor,
        state: CausalLMState | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, CausalLMState]:
        """Feeds `input_ids` (B, T) after `state` (None: a new sequence); `attention_mask` (B, T) marks this chunk's
        padding (default: all real). Returns the logits of every position (B, T, vocab) and the next state."""
        input_ids = torch.as_tensor(input_ids, dtype=torch.long)
        if input_ids.ndim != 2 or input_ids.numel() == 0:
            raise ValueError(
                f"`input_ids` must be a non-empty (batch, seq_len) tensor, got shape {tuple(input_ids.shape)}."
            )
        if state is None:
            state = self.init_state(input_ids.shape[0])
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else torch.as_tensor(attention_mask)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` must have the shape of `input_ids` {tuple(input_ids.shape)} (this chunk only), got "
                f"{tuple(attention_mask.shape)}."
            )
        self._check_lengths(input_ids.shape[0], state.attention_mask.shape[1] + input_ids.shape[1])
        chunk = self.export_config.get("max_sequence_length") or input_ids.shape[1]
        logits = []
        for start in range(0, input_ids.shape[1], chunk):
            ids, mask = input_ids[:, start : start + chunk], attention_mask[:, start : start + chunk].long()
            full_mask = torch.cat([state.attention_mask, mask], dim=1)
            # as HybridGRUModel._positions: real tokens counted from 0, padding clamped to 0
            positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
            chunk_logits, *tensors = self._run([ids, full_mask, positions, *state.tensors])
            logits.append(chunk_logits)
            state = CausalLMState(tensors, full_mask)
        return torch.cat(logits, dim=1), state

    def _check_lengths(self, batch_size: int, total_length: int) -> None:
        for name, value in (("max_batch_size", batch_size), ("max_length", total_length)):
            bound = self.export_config.get(name)
            if bound is not None and value > bound:
                raise ValueError(f"This export was built with {name}={bound}; the call needs {value}.")

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        streamer=None,
        **kwargs,
    ) -> torch.LongTensor:
        """transformers' `generate()` for greedy search and multinomial sampling (`do_sample`, `temperature`, `top_k`,
        `top_p`, `repetition_penalty`, `max_new_tokens`, `min_new_tokens`, `eos_token_id`, `pad_token_id`, ... as
        generation config fields or keyword arguments). Pass left-padded batches with their `attention_mask`. Returns
        the prompt and the new tokens (B, prompt + new); finished rows are filled with `pad_token_id`, as `generate()`
        does."""
        generation_config = copy.deepcopy(generation_config or self.generation_config)
        unused = generation_config.update(**kwargs)
        if unused:
            raise ValueError(f"{type(self).__name__}.generate got unknown argument(s) {sorted(unused)}.")
        if (generation_config.num_beams or 1) != 1 or (generation_config.num_return_sequences or 1) != 1:
            raise ValueError(
                f"{type(self).__name__}.generate runs greedy search and sampling only; got num_beams="
                f"{generation_config.num_beams}, num_return_sequences={generation_config.num_return_sequences}."
            )
        input_ids = torch.as_tensor(input_ids, dtype=torch.long)
        batch, prompt_length = input_ids.shape
        if generation_config.max_new_tokens is not None:
            generation_config.max_length = prompt_length + generation_config.max_new_tokens
        self._prepare_special_tokens(
            generation_config, attention_mask is not None, device=self.device, batch_size=batch
        )
        if attention_mask is None:
            attention_mask = self._default_attention_mask(input_ids, generation_config)
        processors = self._get_logits_processor(
            generation_config, input_ids_seq_length=prompt_length, encoder_input_ids=input_ids,
            logits_processor=logits_processor or LogitsProcessorList(), device=self.device,
            model_kwargs={"attention_mask": attention_mask},
        )  # fmt: skip
        criteria = self._get_stopping_criteria(generation_config, stopping_criteria or StoppingCriteriaList())
        pad = generation_config._pad_token_tensor
        has_eos = any(hasattr(c, "eos_token_id") for c in criteria)
        if streamer is not None:
            streamer.put(input_ids)
        unfinished = torch.ones(batch, dtype=torch.long)
        logits, state = self.step(input_ids, attention_mask=attention_mask)
        while True:
            scores = processors(input_ids, logits[:, -1].float())
            if generation_config.do_sample:
                tokens = torch.multinomial(scores.softmax(-1), num_samples=1).squeeze(1)
            else:
                tokens = scores.argmax(-1)
            if has_eos:
                tokens = tokens * unfinished + pad * (1 - unfinished)
            input_ids = torch.cat([input_ids, tokens[:, None]], dim=-1)
            if streamer is not None:
                streamer.put(tokens)
            unfinished = unfinished & ~criteria(input_ids, scores)
            if unfinished.max() == 0:
                break
            logits, state = self.step(tokens[:, None], state)
        if streamer is not None:
            streamer.end()
        return input_ids

    @staticmethod
    def _default_attention_mask(input_ids: torch.Tensor, generation_config: GenerationConfig) -> torch.Tensor:
        """As `generate()`: padding inferred from `pad_token_id` when it is in the prompt and differs from eos."""
        pad, eos = generation_config._pad_token_tensor, generation_config._eos_token_tensor
        if pad is not None and (input_ids == pad).any() and (eos is None or not torch.isin(pad, eos).any()):
            return (input_ids != pad).long()
        return torch.ones_like(input_ids)


class OnnxCausalLM(ExportedCausalLM):
    """Runs an `export_onnx` folder with onnxruntime (`self.session`)."""

    format = ONNX_FORMAT

    def __init__(self, session, config: HybridGRUConfig, export_config: dict, generation_config: GenerationConfig):
        super().__init__(config, export_config, generation_config)
        self.session = session

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, providers: list | None = None, session_options=None
    ) -> "OnnxCausalLM":
        """Loads `export_onnx`'s folder (float or int8 alike). `providers` and `session_options` go to
        `onnxruntime.InferenceSession` (default: the CPU provider)."""
        path, config, export_config, generation_config = cls._read_folder(path)
        return cls(
            onnx_session(path, export_config, providers, session_options), config, export_config, generation_config
        )

    def _run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return onnx_run(self.session, inputs)


class ExecuTorchCausalLM(ExportedCausalLM):
    """Runs an `export_executorch` folder with ExecuTorch's Python runtime (`self.method`); prompts go one token per
    call, through the decode-step program."""

    format = EXECUTORCH_FORMAT

    def __init__(self, method, config: HybridGRUConfig, export_config: dict, generation_config: GenerationConfig):
        super().__init__(config, export_config, generation_config)
        self.method = method

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "ExecuTorchCausalLM":
        from executorch.runtime import Runtime

        path, config, export_config, generation_config = cls._read_folder(path)
        method = Runtime.get().load_program(path / export_config["graph"]).load_method("forward")
        return cls(method, config, export_config, generation_config)

    def _run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        # The outputs live in the program's planned memory, which the next call overwrites: copy them out.
        return [output.clone() for output in self.method.execute([t.contiguous() for t in inputs])]


@dataclass
class TimeSeriesState:
    """What `OnnxTimeSeriesForecaster.step` carries between chunks: the state tensors in graph order and the scaling
    statistics (batch, 1, channels) frozen at the first chunk."""

    tensors: list[torch.Tensor]
    loc: torch.Tensor
    scale: torch.Tensor


class OnnxStreamRunner:
    """Base of the streaming runtimes of the time-series and CTC heads: an onnxruntime session on an `export_onnx`
    folder of `task`."""

    task = None

    def __init__(self, session, config: HybridGRUConfig, export_config: dict):
        self.session = session
        self.config = config
        self.export_config = export_config
        self.dtype = getattr(torch, export_config["dtype"])
        self.output_names = [o["name"] for o in export_config["outputs"]]

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, providers: list | None = None, session_options=None):
        """Loads the folder; `providers` and `session_options` go to `onnxruntime.InferenceSession`."""
        path, config, export_config = read_export_folder(path, ONNX_FORMAT, cls.task, cls.__name__)
        return cls(onnx_session(path, export_config, providers, session_options), config, export_config)

    def _zero_states(self, rows: int) -> list[torch.Tensor]:
        return zero_states(self.export_config["states"], rows, self.dtype)


class OnnxTimeSeriesForecaster(OnnxStreamRunner):
    """Runs a time-series `export_onnx` folder with onnxruntime: `step` feeds the next chunk of a stream and returns
    the forecast after it, as `HybridGRUForTimeSeriesPrediction` does with `use_cache=True`."""

    task = "time-series-forecasting"

    def step(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None = None,
        state: TimeSeriesState | None = None,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], TimeSeriesState]:
        """Feeds the next chunk `past_values` (B, T, C) (whole patches after the first chunk). The first chunk fixes
        `loc` and `scale` (given, or the model's scaling statistics of that chunk). Returns the graph outputs by name
        (`prediction` (B, prediction_length, C) in original units, plus the Student-t parameters for `loss="nll"`)
        and the next state."""
        values = torch.as_tensor(past_values, dtype=self.dtype)
        observed = torch.ones_like(values) if past_observed_mask is None else torch.as_tensor(past_observed_mask)
        observed = observed.to(self.dtype)
        if values.ndim != 3 or values.shape[-1] != self.config.num_input_channels or values.shape != observed.shape:
            raise ValueError(
                f"`past_values` and `past_observed_mask` must have shape (batch, time, num_input_channels="
                f"{self.config.num_input_channels}), got {tuple(values.shape)} and {tuple(observed.shape)}."
            )
        if state is None:
            if loc is None or scale is None:
                clean = torch.where(observed.bool(), values, torch.zeros_like(values))
                loc, scale = scaling_statistics(clean, observed, self.config.scaling)
            state = TimeSeriesState(self._zero_states(values.shape[0] * self.config.num_input_channels), loc, scale)
        elif values.shape[1] % self.config.patch_length:
            raise ValueError(
                f"A chunk continuing a stream must hold whole patches: `past_values` has {values.shape[1]} steps, not "
                f"a multiple of patch_length={self.config.patch_length}."
            )
        pad = -values.shape[1] % self.config.patch_length  # unobserved zeros, as the model's patch embedding pads
        values, observed = F.pad(values, (0, 0, pad, 0)), F.pad(observed, (0, 0, pad, 0))
        inputs = [values, observed, state.loc.to(self.dtype), state.scale.to(self.dtype), *state.tensors]
        outputs = onnx_run(self.session, inputs)
        named = dict(zip(self.output_names, outputs, strict=False))
        return named, TimeSeriesState(outputs[len(self.output_names) :], state.loc, state.scale)


@dataclass
class CTCState:
    """What `OnnxCTCRecognizer.step` carries between chunks: the state tensors in graph order and the input frames
    (batch, < 4, num_mel_bins) not yet run (the graph takes whole blocks of `SUBSAMPLING` frames)."""

    tensors: list[torch.Tensor]
    pending: torch.Tensor


class OnnxCTCRecognizer(OnnxStreamRunner):
    """Runs a CTC `export_onnx` folder with onnxruntime: `step` feeds log-mel frames as they arrive and returns the
    logits of every output frame they complete; `flush` ends the stream. The logits equal `HybridGRUForCTC`'s over
    the whole input."""

    task = "automatic-speech-recognition"

    def step(self, input_features: torch.Tensor, state: CTCState | None = None) -> tuple[torch.Tensor, CTCState]:
        """Feeds frames (B, T, num_mel_bins) of any length; returns logits (B, T', vocab), T' >= 0, and the state."""
        features = torch.as_tensor(input_features, dtype=self.dtype)
        if features.ndim != 3 or features.shape[-1] != self.config.num_mel_bins:
            raise ValueError(
                f"`input_features` must have shape (batch, frames, num_mel_bins={self.config.num_mel_bins}), got "
                f"{tuple(features.shape)}."
            )
        if state is None:
            state = CTCState(self._zero_states(features.shape[0]), features[:, :0])
        features = torch.cat([state.pending, features], dim=1)
        usable = features.shape[1] - features.shape[1] % SUBSAMPLING
        if usable == 0:
            logits = features.new_zeros(features.shape[0], 0, self.config.vocab_size)
            return logits, CTCState(state.tensors, features)
        logits, *tensors = onnx_run(self.session, [features[:, :usable], *state.tensors])
        return logits, CTCState(tensors, features[:, usable:])

    def flush(self, state: CTCState) -> torch.Tensor:
        """Logits (B, 0 or 1, vocab) of the frames still pending at the end of the stream. Zero frames complete their
        block: the one output frame they give reads only real frames (the subsampler is causal)."""
        pending = state.pending
        if pending.shape[1] == 0:
            return pending.new_zeros(pending.shape[0], 0, self.config.vocab_size)
        block = F.pad(pending, (0, 0, 0, SUBSAMPLING - pending.shape[1]))
        return onnx_run(self.session, [block, *state.tensors])[0][:, :1]


__all__ = [
    "export_onnx",
    "export_executorch",
    "OnnxCausalLM",
    "ExecuTorchCausalLM",
    "ExportedCausalLM",
    "OnnxTimeSeriesForecaster",
    "OnnxCTCRecognizer",
    "TimeSeriesStep",
    "CTCStep",
    "CausalLMState",
    "CausalLMStep",
    "state_specs",
]
