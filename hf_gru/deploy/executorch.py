"""ExecuTorch export of the causal LM's decode step (`export_executorch`) and its Python runtime
(`ExecuTorchCausalLM`)."""

import os
from pathlib import Path

import torch
from transformers import GenerationConfig

from ..models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig
from ..models.hybrid_gru.modeling_hybrid_gru import HybridGRUForCausalLM
from .folder import EXECUTORCH_FILE, EXECUTORCH_FORMAT, export_folder
from .runtime import ExportedCausalLM
from .steps import CausalLMStep, example_inputs, state_specs

EXECUTORCH_BACKENDS = ("portable", "xnnpack")


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

    return export_folder(model, output_dir, processor, write)


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
    inputs = example_inputs(model.config, model.dtype, batch=min(2, max_batch_size), seq_len=1, past=3)
    partitioners = []
    if backend == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioners.append(XnnpackPartitioner(per_op_mode=True))
    with torch.no_grad():
        program = torch.export.export(CausalLMStep(model).eval(), inputs, dynamic_shapes=dynamic_shapes)
    path.write_bytes(to_edge_transform_and_lower(program, partitioner=partitioners).to_executorch().buffer)


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
