"""ONNX export: `export_onnx` traces a causal LM, time-series or CTC model's step module (`hf_gru.deploy.steps`) with
torch.export and the dynamo ONNX exporter into an export folder, float32 or dynamically quantized to int8. The traced
graph is rewritten into onnxruntime's fused ops (`hf_gru.deploy.onnx_fusion`) before it is saved or quantized."""

import os
from pathlib import Path

import torch

from ..models.hybrid_gru.modeling_hybrid_gru import HybridGRUForCausalLM
from ..models.hybrid_gru.modeling_hybrid_gru_ctc import HybridGRUForCTC
from ..models.hybrid_gru.modeling_hybrid_gru_time_series import HybridGRUForTimeSeriesPrediction
from .folder import GRAPH_INPUTS, ONNX_FILE, ONNX_FORMAT, export_folder, time_series_outputs
from .onnx_fusion import fuse_onnx_graph
from .steps import (
    SUBSAMPLING,
    CausalLMStep,
    CTCStep,
    TimeSeriesStep,
    ctc_state_specs,
    example_inputs,
    state_specs,
    zero_states,
)

QUANTIZATIONS = ("int8",)


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
    (`hf_gru.deploy.quantization.quantize_onnx_int8`) as `model.onnx` instead of the float one. The folder is written into a
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
            quantization = {
                "method": "dynamic",
                "weights": quantize,
                "by": "hf_gru.deploy.quantization.quantize_onnx_int8",
            }
            float_graph.unlink()
        return {
            "format": ONNX_FORMAT,
            "graph": ONNX_FILE,
            "opset_version": opset_version,
            "quantization": quantization,
        }

    return export_folder(model, output_dir, processor, write)


def _quantizer(quantize: str | None):
    if quantize is None:
        return None
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r} is not supported; expected None or one of {QUANTIZATIONS}.")
    try:
        from .quantization import quantize_onnx_int8
    except ImportError as error:
        raise NotImplementedError(
            f"quantize={quantize!r} needs hf_gru.deploy.quantization.quantize_onnx_int8"
        ) from error
    return quantize_onnx_int8


def _export_onnx_graph(model, path: Path, opset_version: int, fuse: bool = True) -> None:
    """Traces the model's step module with torch.export (dynamic batch, sequence, past lengths) into an ONNX file;
    with `fuse`, norms and short convs are rewritten into onnxruntime's fused ops (`onnx_fusion.fuse_onnx_graph`)."""
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
    if fuse:
        import onnx

        graph = onnx.load(str(path))
        fuse_onnx_graph(graph)
        onnx.save(graph, str(path))


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
        outputs = [o["name"] for o in time_series_outputs(config, "float32")]
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
    inputs = example_inputs(config, model.dtype, batch=2, seq_len=3, past=4)
    names = [*GRAPH_INPUTS, *(s["name"] for s in specs)], ["logits", *(s["output"] for s in specs)]
    return CausalLMStep(model), inputs, *names, dynamic_shapes
