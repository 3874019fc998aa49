"""onnxruntime runtimes of `export_onnx` folders: `OnnxCausalLM` (step and generate), `OnnxTimeSeriesForecaster`
(streaming forecast) and `OnnxCTCRecognizer` (streaming recognition)."""

import os
from pathlib import Path

import torch
from transformers import GenerationConfig

from ..models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig
from .folder import ONNX_FORMAT, read_export_folder
from .runtime import CTCRecognizerRuntime, CTCState, ExportedCausalLM, TimeSeriesForecasterRuntime, TimeSeriesState


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


class OnnxStreamRunner:
    """Mixin of the onnxruntime streaming runtimes: loads an `export_onnx` folder of the class's `task` and runs its
    graph with onnxruntime (`self.session`)."""

    def __init__(self, session, config: HybridGRUConfig, export_config: dict):
        super().__init__(config, export_config)
        self.session = session

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, providers: list | None = None, session_options=None):
        """Loads the folder; `providers` and `session_options` go to `onnxruntime.InferenceSession`."""
        path, config, export_config = read_export_folder(path, ONNX_FORMAT, cls.task, cls.__name__)
        return cls(onnx_session(path, export_config, providers, session_options), config, export_config)

    def _run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return onnx_run(self.session, inputs)


class OnnxTimeSeriesForecaster(OnnxStreamRunner, TimeSeriesForecasterRuntime):
    """Runs a time-series `export_onnx` folder with onnxruntime: `step` feeds the next chunk of a stream and returns
    the forecast after it, as `HybridGRUForTimeSeriesPrediction` does with `use_cache=True`."""


class OnnxCTCRecognizer(OnnxStreamRunner, CTCRecognizerRuntime):
    """Runs a CTC `export_onnx` folder with onnxruntime: `step` feeds log-mel frames as they arrive and returns the
    logits of every output frame they complete; `flush` ends the stream. The logits equal `HybridGRUForCTC`'s over
    the whole input."""


__all__ = ["OnnxCausalLM", "OnnxTimeSeriesForecaster", "OnnxCTCRecognizer", "CTCState", "TimeSeriesState"]
