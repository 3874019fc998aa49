"""onnxruntime runtimes of `export_onnx` folders: `OnnxCausalLM` (step and generate), `OnnxTimeSeriesForecaster`
(streaming forecast) and `OnnxCTCRecognizer` (streaming recognition)."""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GenerationConfig

from ..models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig
from ..models.hybrid_gru.modeling_hybrid_gru_time_series import scaling_statistics
from .folder import ONNX_FORMAT, read_export_folder
from .runtime import ExportedCausalLM
from .steps import SUBSAMPLING, zero_states


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
