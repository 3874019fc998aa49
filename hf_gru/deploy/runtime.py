"""What the runtimes of both formats (onnxruntime, ExecuTorch) share: for the causal LM a streaming `step` over explicit
state and transformers-style `generate` (greedy and sampling, with transformers' own logits processors and stopping
criteria); for the time-series and CTC heads their streaming `step` (and `flush`)."""

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GenerationConfig
from transformers.generation import GenerationMixin, LogitsProcessorList, StoppingCriteriaList

from ..models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig
from ..models.hybrid_gru.modeling_hybrid_gru_time_series import scaling_statistics
from .folder import read_export_folder
from .steps import SUBSAMPLING, zero_states


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
        logits, start = [], 0
        for chunk in self._chunk_sizes(input_ids.shape[1]):
            ids, mask = input_ids[:, start : start + chunk], attention_mask[:, start : start + chunk].long()
            start += chunk
            full_mask = torch.cat([state.attention_mask, mask], dim=1)
            # as HybridGRUModel._positions: real tokens counted from 0, padding clamped to 0
            positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
            chunk_logits, *tensors = self._run([ids, full_mask, positions, *state.tensors])
            logits.append(chunk_logits)
            state = CausalLMState(tensors, full_mask)
        return torch.cat(logits, dim=1), state

    def _chunk_sizes(self, length: int) -> list[int]:
        """How `step` cuts `length` new tokens into graph calls: one call, unless the graph has a fixed length."""
        chunk = self.export_config.get("max_sequence_length") or length
        return [min(chunk, length - start) for start in range(0, length, chunk)]

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


@dataclass
class TimeSeriesState:
    """What a time-series runtime's `step` carries between chunks: the state tensors in graph order and the scaling
    statistics (batch, 1, channels) frozen at the first chunk."""

    tensors: list[torch.Tensor]
    loc: torch.Tensor
    scale: torch.Tensor


class StreamRunner:
    """Base of the streaming runtimes of the time-series and CTC heads, whatever runs the graph: subclasses load a
    folder of `task` (`from_pretrained`) and run its graph once (`_run`: inputs and outputs in graph order)."""

    task = None

    def __init__(self, config: HybridGRUConfig, export_config: dict):
        self.config = config
        self.export_config = export_config
        self.dtype = getattr(torch, export_config["dtype"])
        self.output_names = [o["name"] for o in export_config["outputs"]]

    def _run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def _zero_states(self, rows: int) -> list[torch.Tensor]:
        return zero_states(self.export_config["states"], rows, self.dtype)


class TimeSeriesForecasterRuntime(StreamRunner):
    """A time-series export: `step` feeds the next chunk of a stream and returns the forecast after it, as
    `HybridGRUForTimeSeriesPrediction` does with `use_cache=True`."""

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
        outputs = self._run(inputs)
        named = dict(zip(self.output_names, outputs, strict=False))
        return named, TimeSeriesState(outputs[len(self.output_names) :], state.loc, state.scale)


@dataclass
class CTCState:
    """What a CTC runtime's `step` carries between chunks: the state tensors in graph order and the input frames
    (batch, < 4, num_mel_bins) not yet run (the graph takes whole blocks of `SUBSAMPLING` frames)."""

    tensors: list[torch.Tensor]
    pending: torch.Tensor


class CTCRecognizerRuntime(StreamRunner):
    """A CTC export: `step` feeds log-mel frames as they arrive and returns the logits of every output frame they
    complete; `flush` ends the stream. The logits equal `HybridGRUForCTC`'s over the whole input."""

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
        logits, *tensors = self._run([features[:, :usable], *state.tensors])
        return logits, CTCState(tensors, features[:, usable:])

    def flush(self, state: CTCState) -> torch.Tensor:
        """Logits (B, 0 or 1, vocab) of the frames still pending at the end of the stream. Zero frames complete their
        block: the one output frame they give reads only real frames (the subsampler is causal)."""
        pending = state.pending
        if pending.shape[1] == 0:
            return pending.new_zeros(pending.shape[0], 0, self.config.vocab_size)
        block = F.pad(pending, (0, 0, 0, SUBSAMPLING - pending.shape[1]))
        return self._run([block, *state.tensors])[0][:, :1]
