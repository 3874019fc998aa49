"""ExecuTorch export (`export_executorch`) of the causal LM (a decode step and a chunked prefill), the time-series
forecaster and the CTC recogniser (streaming steps), and their Python runtimes (`ExecuTorchCausalLM`,
`ExecuTorchTimeSeriesForecaster`, `ExecuTorchCTCRecognizer`).

ExecuTorch has no `scan` and plans memory ahead, so every program takes a fixed-size chunk (its GRU steps written out
by `steps.gru_mixer_step(unroll=True)`) and bounded dynamic dims (batch, cached length); the runtimes cut their input
into those chunks and carry the state between calls, as the onnxruntime runtimes do for one call.
"""

import os
from pathlib import Path

import torch
from transformers import GenerationConfig

from ..models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig
from ..models.hybrid_gru.modeling_hybrid_gru import HybridGRUForCausalLM
from ..models.hybrid_gru.modeling_hybrid_gru_ctc import HybridGRUForCTC
from ..models.hybrid_gru.modeling_hybrid_gru_time_series import HybridGRUForTimeSeriesPrediction
from .folder import EXECUTORCH_FILE, EXECUTORCH_FORMAT, export_folder, read_export_folder
from .runtime import CTCRecognizerRuntime, ExportedCausalLM, TimeSeriesForecasterRuntime
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

EXECUTORCH_BACKENDS = ("portable", "xnnpack")


def export_executorch(
    model: HybridGRUForCausalLM | HybridGRUForTimeSeriesPrediction | HybridGRUForCTC | str | os.PathLike,
    output_dir: str | os.PathLike,
    max_length: int | None = None,
    max_batch_size: int = 8,
    backend: str = "portable",
    processor=None,
    prefill_chunk: int | None = 16,
) -> Path:
    """Exports a model to an ExecuTorch program folder: `model.pte`, the configs, the tokenizer/processor files and
    `export_config.json`, read by `ExecuTorchCausalLM`, `ExecuTorchTimeSeriesForecaster` or `ExecuTorchCTCRecognizer`.

    Causal LM: method `forward` is the decode step (one token per call, state as inputs/outputs as in `export_onnx`);
    with `prefill_chunk=C` (default 16; None: none) method `prefill` runs C prompt tokens per call, the GRU recurrence
    over the chunk inside the program. Time series: one patch per call (the forecast after it). CTC: one block of
    `SUBSAMPLING` frames per call (one output frame).

    ExecuTorch plans memory ahead, so the dynamic dims are bounded: batch <= `max_batch_size`, cached + new tokens
    (patches, output frames) <= `max_length` (default: `max_position_embeddings`; `context_length` patches + the
    forecast for the time-series head). `backend="portable"` runs ExecuTorch's portable kernels; `"xnnpack"` delegates
    what XNNPACK supports, op by op (needs torchao; whole partitions failed on this graph with "Output node ... is
    already in the inputs": pass-through arguments, which XNNPACK does not take). Same errors and staging folder as
    `export_onnx`.
    """
    if backend not in EXECUTORCH_BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; expected one of {EXECUTORCH_BACKENDS}.")
    for name, value, low in (("max_length", max_length, 5), ("max_batch_size", max_batch_size, 1)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise ValueError(f"`{name}` must be an integer >= {low}, got {name}={value!r}.")
    if prefill_chunk is not None and (not isinstance(prefill_chunk, int) or prefill_chunk < 2):
        raise ValueError(f"`prefill_chunk` must be None or an integer >= 2, got prefill_chunk={prefill_chunk!r}.")

    def write(model, staging: Path) -> dict:
        length = max_length or _default_max_length(model)
        if isinstance(model, HybridGRUForCausalLM) and prefill_chunk is not None and prefill_chunk >= length:
            raise ValueError(f"`prefill_chunk`={prefill_chunk} must be below max_length={length}.")
        chunk = prefill_chunk if isinstance(model, HybridGRUForCausalLM) else None
        methods = _export_programs(model, length, max_batch_size, chunk)
        partitioners = []
        if backend == "xnnpack":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

            partitioners.append(XnnpackPartitioner(per_op_mode=True))
        from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

        # ExecuTorch's IR validity check specialised the bounded batch dim to the example's size here (executorch 1.5:
        # a program exported at batch 2 failed at batch 1 and 3); the graphs are core ATen already.
        config = EdgeCompileConfig(_check_ir_validity=False)
        lowered = to_edge_transform_and_lower(methods, partitioner=partitioners, compile_config=config)
        (staging / EXECUTORCH_FILE).write_bytes(lowered.to_executorch().buffer)
        fields = {"format": EXECUTORCH_FORMAT, "graph": EXECUTORCH_FILE, "backend": backend, "max_length": length}
        fields["max_batch_size"] = max_batch_size
        if isinstance(model, HybridGRUForCausalLM):
            return {**fields, "max_sequence_length": 1, "prefill_chunk": chunk}
        if isinstance(model, HybridGRUForCTC):
            return {**fields, "frames_per_call": SUBSAMPLING}
        return {**fields, "steps_per_call": model.config.patch_length}

    return export_folder(model, output_dir, processor, write)


def _default_max_length(model) -> int:
    if isinstance(model, HybridGRUForTimeSeriesPrediction):
        config = model.config
        return -(-config.context_length // config.patch_length) + model.num_future_patches + 1
    return model.config.max_position_embeddings


def _export_programs(model, max_length: int, max_batch_size: int, prefill_chunk: int | None) -> dict:
    """{method name: torch.export program} of the model's step module on fixed-size chunks."""
    # A bound of 1 is a static size: torch.export refuses a Dim with min == max. Example sizes are above 1: torch.export
    # specialises dims of size 0 and 1.
    batch = torch.export.Dim("batch", min=1, max=max_batch_size) if max_batch_size > 1 else None
    rows = {0: batch} if batch is not None else {}
    example_batch = min(2, max_batch_size)
    config, dtype = model.config, model.dtype

    def export(module, inputs, dynamic_shapes):
        with torch.no_grad():
            return torch.export.export(module.eval(), inputs, dynamic_shapes=dynamic_shapes)

    if isinstance(model, HybridGRUForCTC):
        specs = ctc_state_specs(config)
        past = torch.export.Dim("past_length", min=0, max=max_length - 1)
        axes = tuple({**rows, 2: past} if "past_length" in s["shape"] else rows for s in specs)
        features = torch.randn(example_batch, SUBSAMPLING, config.num_mel_bins, dtype=dtype)
        inputs = (features, *zero_states(specs, example_batch, dtype, past_length=3))
        return {"forward": export(CTCStep(model, unroll=True), inputs, (rows, axes))}
    if isinstance(model, HybridGRUForTimeSeriesPrediction):
        specs, channels = state_specs(config, "series"), config.num_input_channels
        # the forecast reads past + 1 + future tokens
        past = torch.export.Dim("past_length", min=0, max=max_length - 1 - model.num_future_patches)
        series_rows = {0: batch * channels if channels > 1 else batch} if batch is not None else {}
        axes = tuple({**series_rows, 2: past} if "past_length" in s["shape"] else series_rows for s in specs)
        values = torch.randn(example_batch, config.patch_length, channels, dtype=dtype)
        stats = torch.zeros(example_batch, 1, channels, dtype=dtype)
        states = zero_states(specs, example_batch * channels, dtype, past_length=3)
        inputs = (values, torch.ones_like(values), stats, stats + 1, *states)
        return {"forward": export(TimeSeriesStep(model, unroll=True), inputs, (rows, rows, rows, rows, axes))}
    specs = state_specs(config)
    programs = {}
    for name, length in (("forward", 1), ("prefill", prefill_chunk)):
        if length is None:
            continue
        past = torch.export.Dim("past_length", min=0, max=max_length - length)
        axes = tuple({**rows, 2: past} if "past_length" in s["shape"] else rows for s in specs)
        inputs = example_inputs(config, dtype, batch=example_batch, seq_len=length, past=3)
        dynamic_shapes = (rows, {**rows, 1: past + length}, rows, axes)
        programs[name] = export(CausalLMStep(model, unroll=True), inputs, dynamic_shapes)
    return programs


def _load_methods(path: Path, export_config: dict, names: tuple[str, ...]) -> dict:
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(path / export_config["graph"])
    return {name: program.load_method(name) for name in names if name in program.method_names}


def _execute(method, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    # The outputs live in the program's planned memory, which the next call overwrites: copy them out.
    return [output.clone() for output in method.execute([t.contiguous() for t in inputs])]


class ExecuTorchCausalLM(ExportedCausalLM):
    """Runs an `export_executorch` causal-LM folder with ExecuTorch's Python runtime (`self.methods`): a prompt goes
    through the `prefill` method in chunks of `prefill_chunk` tokens, its remainder and decoding one token per call."""

    format = EXECUTORCH_FORMAT

    def __init__(
        self, methods: dict, config: HybridGRUConfig, export_config: dict, generation_config: GenerationConfig
    ):
        super().__init__(config, export_config, generation_config)
        self.methods = methods
        self.method = methods["forward"]
        self.prefill_chunk = export_config.get("prefill_chunk") if "prefill" in methods else None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "ExecuTorchCausalLM":
        path, config, export_config, generation_config = cls._read_folder(path)
        return cls(
            _load_methods(path, export_config, ("forward", "prefill")), config, export_config, generation_config
        )

    def _chunk_sizes(self, length: int) -> list[int]:
        if self.prefill_chunk is None:
            return [1] * length
        return [self.prefill_chunk] * (length // self.prefill_chunk) + [1] * (length % self.prefill_chunk)

    def _run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        method = self.methods["prefill"] if inputs[0].shape[1] == self.prefill_chunk else self.method
        return _execute(method, inputs)


class ExecuTorchStreamRunner:
    """Mixin of the ExecuTorch streaming runtimes: loads an `export_executorch` folder of the class's `task`; `_run`
    cuts a chunk into the program's fixed-size calls (`_split`) and carries the state through them."""

    def __init__(self, method, config: HybridGRUConfig, export_config: dict):
        super().__init__(config, export_config)
        self.method = method

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike):
        path, config, export_config = read_export_folder(path, EXECUTORCH_FORMAT, cls.task, cls.__name__)
        return cls(_load_methods(path, export_config, ("forward",))["forward"], config, export_config)

    def _check_batch(self, batch: int) -> None:
        bound = self.export_config["max_batch_size"]
        if batch > bound:
            raise ValueError(f"This export was built with max_batch_size={bound}; the call needs {batch}.")


class ExecuTorchTimeSeriesForecaster(ExecuTorchStreamRunner, TimeSeriesForecasterRuntime):
    """Runs a time-series `export_executorch` folder: `step` as `OnnxTimeSeriesForecaster.step`, one patch per program
    call (the forecast of the last call is returned)."""

    def _run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        values, observed, loc, scale, *states = inputs
        self._check_batch(values.shape[0])
        outputs, steps = [], self.export_config["steps_per_call"]
        for start in range(0, values.shape[1], steps):
            piece = [values[:, start : start + steps], observed[:, start : start + steps]]
            outputs = _execute(self.method, [*piece, loc, scale, *states])
            states = outputs[len(self.output_names) :]
        return outputs


class ExecuTorchCTCRecognizer(ExecuTorchStreamRunner, CTCRecognizerRuntime):
    """Runs a CTC `export_executorch` folder: `step` and `flush` as `OnnxCTCRecognizer`'s, one block of `SUBSAMPLING`
    frames per program call."""

    def _run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        features, *states = inputs
        self._check_batch(features.shape[0])
        logits = []
        for block in features.split(SUBSAMPLING, dim=1):
            block_logits, *states = _execute(self.method, [block, *states])
            logits.append(block_logits)
        return [torch.cat(logits, dim=1), *states]
