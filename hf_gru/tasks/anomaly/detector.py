"""The detector: training windows, `HybridGRUAnomalyDetector` (fit, calibrate, score, save/load) and its streaming
scorer. See the package docstring for the method."""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from ...models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig
from ...models.hybrid_gru.modeling_hybrid_gru_time_series import HybridGRUForTimeSeriesPrediction
from ..forecasting import StandardScaler
from .data import as_observed_mask, as_series
from .scoring import (
    MAD_TO_STD,
    CenteredMean,
    TooFewExcessesError,
    combined_z_scores,
    nearest_state_distances,
    nearest_state_z_scores,
    pot_threshold,
    quantile_threshold,
    robust_location_scale,
)

logger = logging.getLogger(__name__)

DETECTOR_FILE = "anomaly_detector.json"
REFERENCE_STATES_FILE = "anomaly_reference_states.safetensors"
# At most this many reference states per channel (evenly spaced over the normal data when it holds more): the
# nearest-state search costs (steps scored) x (reference states) x hidden_size. Chosen on the ECG set's TRAIN_A, 3 seeds:
# AUC-PR / VUS-PR 0.931 / 0.967 with all 10,000 normal states, 0.942 / 0.966 with 4,096, 0.946 / 0.964 with 2,048.
MAX_REFERENCE_STATES = 4096
# A small causal model: two GRU layers hold the state, a sliding-window attention layer looks back one window.
DEFAULT_MODEL = dict(
    vocab_size=1, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
    block_pattern="GGL", patch_length=1, prediction_length=1, scaling=None, loss="mse",
)  # fmt: skip
# Training settings of the example and the benchmark (a small model from scratch; 300 steps of 32 windows): the defaults
# that were checked on the ECG set's normal training part and its TRAIN_A part, not on its test part.
DEFAULT_TRAINING = dict(
    max_steps=300, per_device_train_batch_size=32, learning_rate=3e-3, lr_scheduler_type="cosine", warmup_steps=20,
    logging_steps=25, save_strategy="no", report_to="none", disable_tqdm=True,
)  # fmt: skip
# Share of training windows with a corrupted context segment (NextStepWindows): chosen on TRAIN_A, 3 seeds (mean AUC-PR
# 0.857 -> 0.893, VUS-PR 0.868 -> 0.898 at smoothing 50; 0.2 and 0.5 were worse on seed 0).
DEFAULT_CORRUPT_PROBABILITY = 0.1
DEFAULT_SMOOTHING_WINDOW = 50  # centred mean over half a heartbeat at the ECG set's rate; chosen on TRAIN_A
# Steps per forward of the batched scorer. Its cost is linear in the chunk (attention is banded to the window), so the
# size only bounds memory: a 10,000-step series takes three forwards.
SCORING_CHUNK = 4096
# Cold-start streams behind the warm-up residual scale: up to this many held-out segments (offsets context_length / 8
# apart) through one batched pass; with fewer than the minimum the stationary scale is used from the first step.
WARMUP_SEGMENTS, MIN_WARMUP_SEGMENTS = 64, 8


@dataclass
class DetectorState:
    """What a detector keeps besides its model weights (saved as `anomaly_detector.json`)."""

    loc: list[float]  # per-channel mean of the training series: inputs are standardised with it and `scale`
    scale: list[float]
    residual_median: list[float] = field(default_factory=list)  # per channel, on held-out normal data
    residual_scale: list[float] = field(default_factory=list)  # 1.4826 * MAD, per channel
    smoothing_window: int = 1
    threshold: float | None = None
    threshold_method: str | None = None
    # (steps, C): the residual scale at each of the first steps of a stream, whose context is still short (empty: the
    # stationary `residual_scale` throughout, as detectors saved before it)
    warmup_residual_scale: list[list[float]] = field(default_factory=list)
    # The nearest-state term, per channel: median and 1.4826 * MAD of the distances of held-out normal states to the
    # reference states, and the scale at each of a stream's first steps (all empty: no such term, as detectors saved
    # before it; the reference states themselves are saved beside this file, in REFERENCE_STATES_FILE)
    state_distance_median: list[float] = field(default_factory=list)
    state_distance_scale: list[float] = field(default_factory=list)
    warmup_state_distance_scale: list[list[float]] = field(default_factory=list)


def check_calibration_options(smoothing_window: int, threshold_method: str) -> None:
    if not isinstance(smoothing_window, int) or smoothing_window < 1:
        raise ValueError(f"`smoothing_window` must be an integer >= 1, got {smoothing_window!r}.")
    if threshold_method not in ("pot", "quantile"):
        raise ValueError(f"`threshold_method` must be 'pot' or 'quantile', got {threshold_method!r}.")


class NextStepWindows(Dataset):
    """Training items: `past_values` (context_length, C) and `future_values` (prediction_length, C), standardised.

    With probability `pad_probability` the first k steps of a window (k uniform in [1, context_length)) are masked as
    unobserved, as the start of a scored stream is: the model learns to forecast from a short context too.

    With probability `corrupt_probability` a segment of the context (1 to context_length // 2 steps, anywhere in it)
    is corrupted, the target left clean: half of the time Gaussian noise is added (std 0.5-2 in standardised units),
    half of the time it is replaced by the same length of the series from a random other place. A model trained so
    forecasts the normal continuation past an anomaly that is still in its context, so that an anomaly's residuals
    end with it instead of raising the scores of the normal steps after it (context corruption as in denoising and
    robust forecasting training).
    """

    def __init__(
        self, series, observed, context_length, prediction_length, pad_probability=0.1, seed=0, corrupt_probability=0.0
    ):
        self.series = torch.as_tensor(series)
        self.observed = torch.as_tensor(observed)
        self.context_length, self.prediction_length = context_length, prediction_length
        self.origins = torch.arange(context_length, len(series) - prediction_length + 1)
        if len(self.origins) == 0:
            raise ValueError(
                f"The training series ({len(series)} steps) is shorter than context_length + prediction_length = "
                f"{context_length + prediction_length}."
            )
        generator = torch.Generator().manual_seed(seed)
        padded = torch.rand(len(self.origins), generator=generator) < pad_probability
        lengths = torch.randint(1, context_length, (len(self.origins),), generator=generator)
        self.pad_lengths = torch.where(padded, lengths, torch.zeros_like(lengths))
        count = len(self.origins)
        corrupted = torch.rand(count, generator=generator) < corrupt_probability
        self.corrupt_lengths = torch.where(
            corrupted, torch.randint(1, max(context_length // 2, 1) + 1, (count,), generator=generator), 0
        )
        self.corrupt_starts = (
            torch.rand(count, generator=generator) * (context_length - self.corrupt_lengths + 1)
        ).long()
        self.corrupt_noise = torch.rand(count, generator=generator) < 0.5  # else: a segment from elsewhere
        self.corrupt_sources = torch.randint(0, len(series), (count,), generator=generator)
        self.corrupt_seeds = torch.randint(0, 2**31 - 1, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        t, pad = int(self.origins[index]), int(self.pad_lengths[index])
        past_observed = self.observed[t - self.context_length : t].clone()
        past_observed[:pad] = 0.0
        past_values = self.series[t - self.context_length : t]
        if self.corrupt_lengths[index] > 0:
            past_values = self._corrupt(past_values, index)
        return {
            "past_values": past_values,
            "past_observed_mask": past_observed,
            "future_values": self.series[t : t + self.prediction_length],
            "future_observed_mask": self.observed[t : t + self.prediction_length],
        }

    def _corrupt(self, past_values: torch.Tensor, index: int) -> torch.Tensor:
        length, start = int(self.corrupt_lengths[index]), int(self.corrupt_starts[index])
        generator = torch.Generator().manual_seed(int(self.corrupt_seeds[index]))
        past_values = past_values.clone()
        if self.corrupt_noise[index]:
            std = 0.5 + 1.5 * torch.rand((), generator=generator)
            noise = torch.randn(past_values[start : start + length].shape, generator=generator)
            past_values[start : start + length] += (std * noise).to(past_values.dtype)
        else:
            source = int(self.corrupt_sources[index]) % (len(self.series) - length + 1)
            past_values[start : start + length] = self.series[source : source + length]
        return past_values


class HybridGRUAnomalyDetector:
    """Scores every time step of a series by its one-step-ahead forecast residual; see the module docstring.

    ```python
    >>> detector = HybridGRUAnomalyDetector.from_config(num_input_channels=1, context_length=200)
    >>> detector.fit(train_series, TrainingArguments("runs/ad", max_steps=300))  # normal data; last 20% held out
    >>> scores = detector.score(test_series)          # (T,) float64, higher = more anomalous
    >>> alarms = scores > detector.threshold
    >>> scorer = detector.stream()                    # the same scores, chunk by chunk
    >>> detector.save_pretrained("ecg-detector")
    ```
    """

    def __init__(
        self,
        model: HybridGRUForTimeSeriesPrediction,
        state: DetectorState,
        reference_states: np.ndarray | None = None,
    ):
        config = model.config
        if config.patch_length != 1 or config.bidirectional:
            raise ValueError(
                "The anomaly detector scores one step per token with a causal backbone: it needs patch_length=1 and "
                f"bidirectional=False, got patch_length={config.patch_length}, bidirectional={config.bidirectional}."
            )
        self.model = model
        self.state = state
        self.reference_states = reference_states  # (C, M, hidden_size) float32, or None

    @classmethod
    def from_config(
        cls, num_input_channels: int = 1, context_length: int = 200, seed: int = 0, **config_overrides
    ) -> "HybridGRUAnomalyDetector":
        """A detector with a fresh model (`DEFAULT_MODEL` updated by `config_overrides`); fit it before scoring.

        The sliding-window attention layer sees `context_length` steps back, the window the model is trained on.
        """
        values = dict(DEFAULT_MODEL, sliding_window=context_length)
        values.update(config_overrides, num_input_channels=num_input_channels, context_length=context_length)
        torch.manual_seed(seed)
        model = HybridGRUForTimeSeriesPrediction(HybridGRUConfig(**values))
        channels = num_input_channels
        return cls(model, DetectorState(loc=[0.0] * channels, scale=[1.0] * channels))

    @property
    def num_input_channels(self) -> int:
        return self.model.config.num_input_channels

    @property
    def threshold(self) -> float | None:
        return self.state.threshold

    def fit(
        self,
        train_series: np.ndarray,
        training_args: TrainingArguments,
        train_observed_mask: np.ndarray | None = None,
        validation_fraction: float = 0.2,
        smoothing_window: int = DEFAULT_SMOOTHING_WINDOW,
        threshold_method: str = "pot",
        pad_probability: float = 0.1,
        corrupt_probability: float = DEFAULT_CORRUPT_PROBABILITY,
        nearest_state: bool = True,
        **threshold_kwargs,
    ) -> Trainer:
        """Trains on the first `1 - validation_fraction` of normal `train_series` (T,) or (T, C), then fits the
        residual scale and the threshold on the rest (held out). Returns the `Trainer` (its log history, state).

        The standardisation (per-channel mean and std) is fit on the training part only. `pad_probability` and
        `corrupt_probability` are the shares of training windows with a masked opening and with a corrupted context
        segment (see `NextStepWindows`). `nearest_state`: score with the nearest-state term too (see `calibrate`).
        """
        series = as_series("train_series", train_series, self.num_input_channels)
        observed = as_observed_mask("train_series", series, train_observed_mask)
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"`validation_fraction` must be in (0, 1), got {validation_fraction}.")
        for name, value in (("pad_probability", pad_probability), ("corrupt_probability", corrupt_probability)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {value}.")
        check_calibration_options(smoothing_window, threshold_method)
        split = int(len(series) * (1.0 - validation_fraction))
        train_part = np.where(observed[:split] > 0, series[:split], np.nan)
        scaler = StandardScaler(np.nan_to_num(train_part, nan=np.nanmean(train_part, 0)))
        self.state = DetectorState(loc=scaler.mean.tolist(), scale=scaler.std.tolist())
        standardised = np.where(observed > 0, scaler.transform(np.nan_to_num(series)), 0.0).astype(np.float32)

        config = self.model.config
        dataset = NextStepWindows(
            standardised[:split], observed[:split], config.context_length, config.prediction_length, pad_probability,
            seed=training_args.seed, corrupt_probability=corrupt_probability,
        )  # fmt: skip
        trainer = Trainer(model=self.model, args=training_args, train_dataset=dataset)
        trainer.train()
        self.model.eval()
        self.calibrate(series[split:], observed[split:], series[:split], observed[:split], smoothing_window,
                       threshold_method, nearest_state, **threshold_kwargs)  # fmt: skip
        return trainer

    def calibrate(
        self,
        normal_series: np.ndarray,
        normal_observed_mask: np.ndarray | None = None,
        warmup_series: np.ndarray | None = None,
        warmup_observed_mask: np.ndarray | None = None,
        smoothing_window: int = DEFAULT_SMOOTHING_WINDOW,
        threshold_method: str = "pot",
        nearest_state: bool = True,
        max_reference_states: int = MAX_REFERENCE_STATES,
        **threshold_kwargs,
    ) -> np.ndarray:
        """Fits the residual scale, smoothing and threshold on held-out normal data; returns its scores.

        `warmup_series` (the steps just before `normal_series`, e.g. the training part) is streamed first, unscored,
        so the held-out residuals are those of a running stream: up to `context_length` of its last steps are used.

        `nearest_state` (needs `warmup_series`): a step also scores by how far the model state after it lies from the
        nearest state of normal data, in robust z units added to the residual's. The states of a stream over all of
        `warmup_series` are the reference that the held-out states are measured against; the held-out states then
        join the reference for scoring (at most `max_reference_states`, evenly spaced). A state summarises the context, so a beat of
        the wrong shape lands far from every normal beat even where each of its steps is forecast well: the nearest-
        neighbour distance of the matrix profile (Yeh et al., 2016), between learned states rather than raw windows.
        """
        check_calibration_options(smoothing_window, threshold_method)
        if max_reference_states < 1:
            raise ValueError(f"`max_reference_states` must be >= 1, got {max_reference_states}.")
        if nearest_state and warmup_series is None:
            raise ValueError(
                "nearest_state=True measures held-out states against those of `warmup_series` (normal data): pass "
                "warmup_series, or nearest_state=False."
            )
        normal = as_series("normal_series", normal_series, self.num_input_channels)
        normal_observed = as_observed_mask("normal_series", normal, normal_observed_mask)
        scorer = StreamingAnomalyScorer(self)
        reference = None
        if warmup_series is not None:
            warmup = as_series("warmup_series", warmup_series, self.num_input_channels)
            warmup_observed = as_observed_mask("warmup_series", warmup, warmup_observed_mask)
            if nearest_state:  # a stream over all of it, from a cold start: (M, C, D) -> (C, M, D)
                states = StreamingAnomalyScorer(self).advance(warmup, warmup_observed)[1]
                reference = evenly_spaced(states.transpose(1, 0, 2), max_reference_states)
            keep = self.model.config.context_length
            scorer.advance(warmup[-keep:], warmup_observed[-keep:])
        start = scorer.steps_seen
        residuals, states = scorer.advance(normal, normal_observed)
        median, scale = robust_location_scale(residuals, normal_observed)
        self.state.residual_median, self.state.residual_scale = median.tolist(), scale.tolist()
        self.state.smoothing_window = smoothing_window
        self.reference_states = None
        self.state.state_distance_median, self.state.state_distance_scale = [], []
        if reference is not None:
            distances = nearest_state_distances(states, torch.as_tensor(reference, dtype=torch.float64))
            distance_median, distance_scale = robust_location_scale(distances, normal_observed)
            self.state.state_distance_median = distance_median.tolist()
            self.state.state_distance_scale = distance_scale.tolist()
        self.state.warmup_residual_scale, self.state.warmup_state_distance_scale = (
            scales.tolist() for scales in self._warmup_scales(normal, normal_observed, reference)
        )
        scorer = StreamingAnomalyScorer(self, reference_states=reference)  # the scales just fit, the reference
        z = scorer.z_scores(residuals, states, normal_observed, start)
        if reference is not None:
            self.reference_states = evenly_spaced(
                np.concatenate([reference, states.transpose(1, 0, 2)], axis=1), max_reference_states
            ).astype(np.float32)
        smoother = CenteredMean(smoothing_window)
        scores = np.concatenate([smoother.push(z), smoother.flush()])
        if threshold_method == "pot":
            try:
                self.state.threshold = pot_threshold(scores, **threshold_kwargs)
            except TooFewExcessesError as error:  # a short held-out part: the empirical quantile is all there is
                risk = threshold_kwargs.get("risk", 1e-3)
                logger.warning("%s Falling back to the %g quantile of the held-out scores.", error, 1 - risk)
                self.state.threshold, threshold_method = quantile_threshold(scores, 1 - risk), "quantile"
        else:
            self.state.threshold = quantile_threshold(scores, **threshold_kwargs)
        self.state.threshold_method = threshold_method
        return scores

    @torch.no_grad()
    def _warmup_scales(
        self, normal: np.ndarray, observed: np.ndarray, reference: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The residual scale and the state-distance scale (context_length, C) at each step of a stream that starts
        cold, from streams started at many offsets of the held-out data (one batched pass): per step, 1.4826 * MAD of
        their residuals (distances to `reference`) about the running stream's median, at least the running stream's
        scale and non-increasing in the step (a longer context never makes errors larger).

        A short context forecasts worse, and its state lies off the running stream's: scaled by the stationary scales,
        the first steps of every stream would score high. Each is (0, C) when the held-out part holds fewer than
        `MIN_WARMUP_SEGMENTS` segments (the distance scale also without a reference)."""
        context, channels, state = self.model.config.context_length, self.num_input_channels, self.state
        starts = np.arange(0, len(normal) - context + 1, max(context // 8, 1))[:WARMUP_SEGMENTS]
        none = np.zeros((0, channels))
        if len(starts) < MIN_WARMUP_SEGMENTS:
            return none, none
        index = starts[:, None] + np.arange(context)  # (M, context)
        segments, segment_observed = normal[index], observed[index]  # (M, context, C)
        standardised = np.where(segment_observed > 0, (segments - state.loc) / state.scale, 0.0)
        values = np.concatenate([np.zeros_like(standardised), standardised], axis=1)  # the stream's masked opening
        mask = np.concatenate([np.zeros_like(segment_observed), segment_observed], axis=1)
        as_tensor = lambda a: torch.as_tensor(a, dtype=self.model.dtype, device=self.model.device)  # noqa: E731
        out = self.model.forecast_every_step(as_tensor(values), as_tensor(mask))
        forecasts = out.prediction_outputs[:, context - 1 : 2 * context - 1, 0].double().cpu().numpy()  # before each
        residual_scale = per_step_scale(
            standardised - forecasts, segment_observed, state.residual_median, state.residual_scale
        )
        if reference is None:
            return residual_scale, none
        states = out.forecast_hidden_states[:, :, context:].transpose(1, 2).double().cpu().numpy()  # after each step
        reference = torch.as_tensor(reference, dtype=torch.float64)
        distances = nearest_state_distances(states.reshape(-1, channels, states.shape[-1]), reference)
        distance_scale = per_step_scale(
            distances.reshape(len(starts), context, channels), segment_observed, state.state_distance_median,
            state.state_distance_scale,
        )  # fmt: skip
        return residual_scale, distance_scale

    def stream(self, stepwise: bool = False) -> "StreamingAnomalyScorer":
        """A scorer that takes the series chunk by chunk (any sizes) and returns the scores `score` would.

        `stepwise=True`: the reference loop, one forward per step (what scoring did before the batched pass).
        """
        if not self.state.residual_scale:
            raise ValueError("The detector is not calibrated: call `fit` (or `calibrate`) before scoring.")
        return StreamingAnomalyScorer(self, stepwise=stepwise)

    def score(self, series: np.ndarray, observed_mask: np.ndarray | None = None, stepwise: bool = False) -> np.ndarray:
        """Anomaly scores (T,) float64 of a series (T,) or (T, C), one per time step, higher = more anomalous.

        Missing points (`observed_mask` 0; their values may be NaN) are fed to the model as missing and left out of
        the score; a step with no observed channel counts as 0 in the smoothing window. The series runs through the
        model in forwards of `SCORING_CHUNK` steps; `stepwise=True` runs the reference loop (one forward per step).
        """
        scorer = self.stream(stepwise)
        return np.concatenate([scorer.update(series, observed_mask), scorer.flush()])

    def predict(self, series: np.ndarray, observed_mask: np.ndarray | None = None) -> np.ndarray:
        """Binary alarms (T,) bool: scores above the calibrated threshold."""
        if self.state.threshold is None:
            raise ValueError("The detector has no threshold: call `fit` or `calibrate` first.")
        return self.score(series, observed_mask) > self.state.threshold

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """The model folder (`model.save_pretrained`: config, weights, remote code) plus `anomaly_detector.json` and,
        with the nearest-state term, the reference states (`anomaly_reference_states.safetensors`)."""
        save_directory = Path(save_directory)
        self.model.save_pretrained(save_directory, **kwargs)
        reference_file = save_directory / REFERENCE_STATES_FILE
        if self.reference_states is not None:
            save_file({"reference_states": np.ascontiguousarray(self.reference_states)}, reference_file)
        elif reference_file.is_file():  # a detector saved here before had one; this one would not read it
            reference_file.unlink()
        (save_directory / DETECTOR_FILE).write_text(json.dumps(asdict(self.state), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> "HybridGRUAnomalyDetector":
        directory = Path(directory)
        if not (directory / DETECTOR_FILE).is_file():
            raise ValueError(f"{directory} has no {DETECTOR_FILE}: not a folder saved by HybridGRUAnomalyDetector.")
        model = HybridGRUForTimeSeriesPrediction.from_pretrained(directory, **kwargs).eval()
        state = DetectorState(**json.loads((directory / DETECTOR_FILE).read_text()))
        reference = None
        if state.state_distance_scale:
            if not (directory / REFERENCE_STATES_FILE).is_file():
                raise ValueError(
                    f"{directory} scores with the nearest-state term but has no {REFERENCE_STATES_FILE} (its reference "
                    "states): copy the whole folder the detector was saved to."
                )
            reference = load_file(directory / REFERENCE_STATES_FILE)["reference_states"]
        return cls(model, state, reference)


def per_step_scale(values: np.ndarray, observed: np.ndarray, median, scale) -> np.ndarray:
    """Per step (K, C) of `values` (M, K, C) from M streams: 1.4826 * the median over the streams of |value - median|,
    at least `scale` and non-increasing in the step."""
    deviations = np.where(observed > 0, np.abs(values - np.asarray(median)), np.nan)
    with np.errstate(all="ignore"):
        per_step = MAD_TO_STD * np.nanmedian(deviations, axis=0)  # NaN where no stream observed the step
    per_step = np.maximum(np.nan_to_num(per_step, nan=0.0), np.asarray(scale))
    return np.maximum.accumulate(per_step[::-1], axis=0)[::-1]


def evenly_spaced(states: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` of the states (C, M, D) along M, evenly spaced."""
    if states.shape[1] <= limit:
        return states
    return states[:, np.linspace(0, states.shape[1] - 1, limit).round().astype(int)]


def step_scales(warmup_scale: np.ndarray, scale: np.ndarray, start: int, steps: int) -> np.ndarray:
    """Residual scales (steps, C) of stream steps [start, start + steps): the warm-up scale (K, C) for steps < K, the
    stationary `scale` (C,) after."""
    scales = np.broadcast_to(scale, (steps, len(scale))).copy()
    warm = warmup_scale[start : start + steps]
    scales[: len(warm)] = warm
    return scales


class StreamingAnomalyScorer:
    """Scores a series as it arrives: `update(chunk)` returns one score per step of the chunk.

    The state is the backbone cache, the forecast for the next step and the last `smoothing_window` z-scores. The
    scores returned by `update` over chunks of any sizes, then `flush`, equal `HybridGRUAnomalyDetector.score` over
    the whole series. A chunk runs through the model in forwards of up to `SCORING_CHUNK` steps, each giving the
    forecast after every one of its steps at once (`HybridGRUForTimeSeriesPrediction.forecast_every_step`);
    `stepwise=True` is the reference loop instead: one forward per step, the forecast run on a fork of the cache.
    """

    def __init__(
        self, detector: HybridGRUAnomalyDetector, stepwise: bool = False, reference_states: np.ndarray | None = None
    ):
        self.detector = detector
        self.model = detector.model
        self.stepwise = stepwise
        state, channels = detector.state, detector.num_input_channels
        self.loc, self.scale = np.array(state.loc), np.array(state.scale)
        self.median, self.residual_scale = np.array(state.residual_median), np.array(state.residual_scale)
        self.warmup_scale = np.array(state.warmup_residual_scale).reshape(-1, channels)
        self.distance_median = np.array(state.state_distance_median)
        self.distance_scale = np.array(state.state_distance_scale)
        self.warmup_distance_scale = np.array(state.warmup_state_distance_scale).reshape(-1, channels)
        # the nearest-state term's reference (C, M, D): the detector's, unless given; none when it has no such term
        reference = detector.reference_states if reference_states is None else reference_states
        self.reference = None  # float64 (C, M, D), converted once
        if state.state_distance_scale and reference is not None:
            self.reference = torch.as_tensor(reference, dtype=torch.float64)
        self.smoother = CenteredMean(state.smoothing_window)
        self.cache = None
        self.forecast = None
        self.steps_seen = 0

    @torch.no_grad()
    def _advance(self, values: torch.Tensor, observed: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Feeds standardised (1, n, C) steps; returns the forecast (n, C), standardised, and the model state (the
        forecasting placeholder's hidden state, (n, C, D)) after each of them, or with `stepwise` after the last one
        only ((1, C) and (1, C, D))."""
        kwargs = {"use_cache": True} if self.cache is None else {"cache": self.cache}
        if self.stepwise:
            out = self.model(past_values=values, past_observed_mask=observed, **kwargs)
            forecasts, states = out.prediction_outputs[:, 0], out.forecast_hidden_states[:, :, 0]  # (1, C), (1, C, D)
        else:
            out = self.model.forecast_every_step(past_values=values, past_observed_mask=observed, **kwargs)
            forecasts, states = out.prediction_outputs[0, :, 0], out.forecast_hidden_states[0].transpose(0, 1)
        self.cache = out.cache
        return forecasts.double().cpu().numpy(), states.float().cpu().numpy()

    def _start(self) -> None:
        """The stream opens with `context_length` unobserved steps (as padded training windows), which gives the
        forecast of the first step."""
        shape = (1, self.model.config.context_length, self.detector.num_input_channels)
        device = self.model.device
        self.forecast = self._advance(torch.zeros(shape, device=device), torch.zeros(shape, device=device))[0][-1]

    def advance(self, chunk: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Moves the stream on by the chunk (validated float32 arrays (n, C)): returns its standardised one-step-ahead
        residuals (n, C) and the model state after each of its steps (n, C, D)."""
        if self.forecast is None:
            self._start()
        standardised = np.where(observed > 0, (np.nan_to_num(chunk) - self.loc) / self.scale, 0.0)
        device = self.model.device
        values = torch.as_tensor(standardised, dtype=self.model.dtype, device=device)[None]
        mask = torch.as_tensor(observed, dtype=self.model.dtype, device=device)[None]
        step = 1 if self.stepwise else SCORING_CHUNK
        forecasts, states = [self.forecast[None]], []  # forecasts[i] is made before step i
        for start in range(0, len(standardised), step):
            forecast, state = self._advance(values[:, start : start + step], mask[:, start : start + step])
            forecasts.append(forecast)
            states.append(state)
        forecasts = np.concatenate(forecasts)
        self.forecast = forecasts[-1]
        self.steps_seen += len(standardised)
        hidden_size = self.model.config.hidden_size
        states = np.concatenate(states) if states else np.zeros((0, observed.shape[1], hidden_size), np.float32)
        return standardised - forecasts[:-1], states

    def z_scores(self, residuals: np.ndarray, states: np.ndarray, observed: np.ndarray, start: int) -> np.ndarray:
        """The unsmoothed score (n,) of stream steps [start, start + n) from their residuals and states: the residual
        z-score plus, when there is a reference, the nearest-state z-score."""
        steps = len(residuals)
        scales = step_scales(self.warmup_scale, self.residual_scale, start, steps)
        z = combined_z_scores(residuals, observed, self.median, scales)
        if self.reference is not None:
            distances = nearest_state_distances(states, self.reference)
            scales = step_scales(self.warmup_distance_scale, self.distance_scale, start, steps)
            z = z + nearest_state_z_scores(distances, observed, self.distance_median, scales)
        return z

    def update(self, chunk: np.ndarray, observed_mask: np.ndarray | None = None) -> np.ndarray:
        """Feeds the next steps (n,) or (n, C); returns the scores (float64) of the steps whose smoothing window is
        complete: all steps up to `latency` steps before the last one fed. `flush` returns the rest."""
        values = as_series("chunk", chunk, self.detector.num_input_channels)
        observed = as_observed_mask("chunk", values, observed_mask)
        start = self.steps_seen
        residuals, states = self.advance(values, observed)
        return self.smoother.push(self.z_scores(residuals, states, observed, start))

    def flush(self) -> np.ndarray:
        """The scores of the last `latency` steps, smoothed over the steps seen (call at the end of a series)."""
        return self.smoother.flush()

    @property
    def latency(self) -> int:
        """How many steps a score waits for (the second half of the smoothing window)."""
        return self.smoother.after
