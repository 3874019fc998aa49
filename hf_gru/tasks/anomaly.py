"""Anomaly detection in time series with `HybridGRUForTimeSeriesPrediction`: one-step-ahead forecast residuals.

The model is trained with the `Trainer` to forecast the next time step of normal data. A point is scored by how far it
lands from the forecast made just before it: per channel, the residual is turned into a robust z-score with the
median and MAD of the residuals on held-out normal data, the channels are combined by their root mean square, and the
result is averaged over a centred window of `smoothing_window` steps (so a streamed score comes
`smoothing_window // 2` steps late). Alarms are scores above a threshold calibrated
on the same held-out data (a quantile, or peaks over threshold: Siffer et al., 2017, "Anomaly Detection in Streams
with Extreme Value Theory").

Scoring runs the series through the backbone one token per step (`patch_length=1`) with its cache, as the head's
streaming does, so the state is constant-size and a sample costs one forward call whatever the history.
`HybridGRUAnomalyDetector.score` and `StreamingAnomalyScorer` share that loop: chunks of any size give the offline
scores. A stream starts from `context_length` unobserved (masked) steps, the padding that training windows also get
at random, so the first steps are scored from the short context seen so far rather than left out.

Not remote code: a saved detector is a `save_pretrained` model folder (loadable alone with the Auto classes) plus
`anomaly_detector.json` holding the standardisation, residual scale, smoothing and threshold.
"""

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from ..models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig
from ..models.hybrid_gru.modeling_hybrid_gru_time_series import HybridGRUForTimeSeriesPrediction
from .forecasting import StandardScaler

logger = logging.getLogger(__name__)

DETECTOR_FILE = "anomaly_detector.json"
MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation
MINIMUM_SCALE = 1e-6

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
DEFAULT_SMOOTHING_WINDOW = 50  # centred mean over half a heartbeat at the ECG set's rate; chosen on TRAIN_A


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


def as_series(name: str, values: np.ndarray, channels: int | None = None) -> np.ndarray:
    """(T,) or (T, C) array-like -> float32 (T, C); ValueError naming `name` for other shapes."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape (time,) or (time, channels) with time >= 1, got {array.shape}.")
    if channels is not None and array.shape[1] != channels:
        raise ValueError(f"`{name}` has {array.shape[1]} channel(s), the detector was built for {channels}.")
    return array


def as_observed_mask(name: str, values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The observed mask (T, C) as float32; NaN or inf at an observed point is a ValueError, as in the forecasting
    head (mark missing points with the mask)."""
    if mask is None:
        observed = np.ones_like(values)
    else:
        observed = np.asarray(mask, dtype=np.float32).reshape(values.shape[0], -1)
        if observed.shape != values.shape or not np.isin(observed, (0.0, 1.0)).all():
            raise ValueError(f"`{name}_observed_mask` must be 0/1 with the shape of `{name}` {values.shape}.")
    bad = ~np.isfinite(values) & (observed > 0)
    if bad.any():
        raise ValueError(
            f"`{name}` contains {int(bad.sum())} NaN or inf values at observed points (first at time step "
            f"{int(np.argwhere(bad)[0][0])}); mark missing points with `{name}_observed_mask` (1 = observed, 0 = missing)."
        )
    return observed


def check_calibration_options(smoothing_window: int, threshold_method: str) -> None:
    if not isinstance(smoothing_window, int) or smoothing_window < 1:
        raise ValueError(f"`smoothing_window` must be an integer >= 1, got {smoothing_window!r}.")
    if threshold_method not in ("pot", "quantile"):
        raise ValueError(f"`threshold_method` must be 'pot' or 'quantile', got {threshold_method!r}.")


def robust_location_scale(residuals: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel median and 1.4826 * MAD of `residuals` (T, C) over observed points."""
    medians, scales = [], []
    for channel in range(residuals.shape[1]):
        values = residuals[observed[:, channel] > 0, channel].astype(np.float64)
        if values.size == 0:
            raise ValueError(f"Channel {channel} has no observed point to fit the residual scale on.")
        median = np.median(values)
        medians.append(median)
        scales.append(max(MAD_TO_STD * np.median(np.abs(values - median)), MINIMUM_SCALE))
    return np.array(medians), np.array(scales)


class TooFewExcessesError(ValueError):
    """Too few held-out scores above the initial threshold to fit the tail (peaks over threshold)."""


def quantile_threshold(scores: np.ndarray, quantile: float = 0.999) -> float:
    """The `quantile` of held-out normal scores: about `1 - quantile` of normal points raise an alarm."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"`quantile` must be in (0, 1), got {quantile}.")
    return float(np.quantile(scores, quantile))


def pot_threshold(scores: np.ndarray, risk: float = 1e-3, initial_quantile: float = 0.98) -> float:
    """Peaks-over-threshold (Siffer et al., 2017): fits a generalised Pareto distribution to the excesses of normal
    `scores` over their `initial_quantile` and returns the score exceeded with probability `risk` under it.

    Extrapolates beyond the largest held-out score when `risk` is smaller than 1 / len(scores).
    """
    from scipy.stats import genpareto

    if not 0.0 < risk < 1.0 - initial_quantile:
        raise ValueError(f"`risk` must be in (0, 1 - initial_quantile={1 - initial_quantile:g}), got {risk}.")
    scores = np.asarray(scores, dtype=np.float64)
    initial = np.quantile(scores, initial_quantile)
    excesses = scores[scores > initial] - initial
    if excesses.size < 10:
        raise TooFewExcessesError(
            f"Peaks over threshold needs >= 10 excesses over the initial threshold, got {excesses.size}."
        )
    shape, _, gpd_scale = genpareto.fit(excesses, floc=0.0)
    tail_ratio = risk * scores.size / excesses.size
    if abs(shape) < 1e-8:
        return float(initial - gpd_scale * math.log(tail_ratio))
    return float(initial + gpd_scale / shape * (tail_ratio ** (-shape) - 1.0))


@dataclass
class LabelledSeries:
    """A TimeEval CSV: `timestamp` (T,) as read (strings), `values` (T, C) float32, `labels` (T,) int or None."""

    timestamps: np.ndarray
    values: np.ndarray
    value_columns: list[str]
    labels: np.ndarray | None


def read_timeeval_csv(path: str | Path, value_columns: list[str] | None = None) -> LabelledSeries:
    """Reads the TimeEval layout: a `timestamp` column, one or more numeric value columns, optional `is_anomaly` 0/1.

    `value_columns` (e.g. those of the training file) must then be exactly the file's value columns. Raises a
    ValueError naming the file and the column for a missing/unexpected column, a non-numeric or empty value, or a
    label other than 0/1.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file.")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = list(frame.columns)
    if "timestamp" not in columns:
        raise ValueError(f"{path}: no column 'timestamp' (columns: {columns}); expected the TimeEval CSV layout.")
    found = [c for c in columns if c not in ("timestamp", "is_anomaly")]
    if not found:
        raise ValueError(f"{path}: no value column besides 'timestamp' and 'is_anomaly' (columns: {columns}).")
    if value_columns is not None and found != list(value_columns):
        raise ValueError(f"{path}: value columns {found} differ from the training file's {list(value_columns)}.")
    if len(frame) == 0:
        raise ValueError(f"{path}: no rows.")
    values = np.empty((len(frame), len(found)), dtype=np.float32)
    for i, column in enumerate(found):
        numbers = pd.to_numeric(frame[column].str.strip(), errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(numbers))
        if bad.size:
            raise ValueError(
                f"{path}: column {column!r} has a non-numeric or missing value {frame[column].iloc[bad[0]]!r} at row "
                f"{bad[0] + 2} (line of the file); {bad.size} such value(s)."
            )
        values[:, i] = numbers
    labels = None
    if "is_anomaly" in columns:
        raw = frame["is_anomaly"].str.strip()
        bad = np.flatnonzero(~raw.isin(["0", "1", "0.0", "1.0"]).to_numpy())
        if bad.size:
            raise ValueError(
                f"{path}: column 'is_anomaly' must hold 0 or 1, got {raw.iloc[bad[0]]!r} at line {bad[0] + 2}."
            )
        labels = raw.astype(float).astype(int).to_numpy()
    return LabelledSeries(frame["timestamp"].to_numpy(), values, found, labels)


def aeon_anomaly_csv(name: str = "ecg-diff-count-3", part: str = "TEST") -> Path:
    """Path of a labelled anomaly set shipped in aeon's wheel (`aeon/datasets/data/UnitTest/<name>_<part>.csv`; for
    the ECG set the parts are TRAIN_NA (normal), TRAIN_A and TEST, 10,000 samples each). Read in place, not copied."""
    try:
        import aeon
    except ImportError as error:
        raise ImportError("The anomaly data sets ship with aeon: pip install 'hf_gru[anomaly]'") from error
    path = Path(aeon.__file__).parent / "datasets" / "data" / "UnitTest" / f"{name}_{part}.csv"
    if not path.is_file():
        raise ValueError(f"aeon {aeon.__version__} has no {path.name} under {path.parent}.")
    return path


def anomaly_metrics(labels: np.ndarray, scores: np.ndarray, alarms: np.ndarray | None = None) -> dict[str, float]:
    """Point-wise AUC-ROC and AUC-PR, range-based VUS-PR (Paparrizos et al., 2022) and, for binary `alarms`, point
    precision/recall/F1 and range F1 (Tatbul et al., 2018), all from aeon's `benchmarking.metrics.anomaly_detection`."""
    try:
        from aeon.benchmarking.metrics import anomaly_detection as ad
    except ImportError as error:
        raise ImportError("Anomaly metrics need aeon: pip install 'hf_gru[anomaly]'") from error
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    metrics = {
        "auc_roc": float(ad.roc_auc_score(labels, scores)),
        "auc_pr": float(ad.pr_auc_score(labels, scores)),
        "vus_pr": float(ad.range_pr_vus_score(labels, scores)),
    }
    if alarms is not None:
        alarms = np.asarray(alarms).astype(int)
        true_positives = int((alarms & labels).sum())
        precision = true_positives / max(int(alarms.sum()), 1)
        recall = true_positives / max(int(labels.sum()), 1)
        metrics.update(
            precision=precision,
            recall=recall,
            f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            range_f1=float(ad.range_f_score(labels, alarms)) if alarms.any() else 0.0,
        )
    return metrics


class NextStepWindows(Dataset):
    """Training items: `past_values` (context_length, C) and `future_values` (prediction_length, C), standardised.

    With probability `pad_probability` the first k steps of a window (k uniform in [1, context_length)) are masked as
    unobserved, as the start of a scored stream is: the model learns to forecast from a short context too.
    """

    def __init__(self, series, observed, context_length, prediction_length, pad_probability=0.1, seed=0):
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

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        t, pad = int(self.origins[index]), int(self.pad_lengths[index])
        past_observed = self.observed[t - self.context_length : t].clone()
        past_observed[:pad] = 0.0
        return {
            "past_values": self.series[t - self.context_length : t],
            "past_observed_mask": past_observed,
            "future_values": self.series[t : t + self.prediction_length],
            "future_observed_mask": self.observed[t : t + self.prediction_length],
        }


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

    def __init__(self, model: HybridGRUForTimeSeriesPrediction, state: DetectorState):
        config = model.config
        if config.patch_length != 1 or config.bidirectional:
            raise ValueError(
                "The anomaly detector scores one step per token with a causal backbone: it needs patch_length=1 and "
                f"bidirectional=False, got patch_length={config.patch_length}, bidirectional={config.bidirectional}."
            )
        self.model = model
        self.state = state

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
        **threshold_kwargs,
    ) -> Trainer:
        """Trains on the first `1 - validation_fraction` of normal `train_series` (T,) or (T, C), then fits the
        residual scale and the threshold on the rest (held out). Returns the `Trainer` (its log history, state).

        The standardisation (per-channel mean and std) is fit on the training part only.
        """
        series = as_series("train_series", train_series, self.num_input_channels)
        observed = as_observed_mask("train_series", series, train_observed_mask)
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"`validation_fraction` must be in (0, 1), got {validation_fraction}.")
        check_calibration_options(smoothing_window, threshold_method)
        split = int(len(series) * (1.0 - validation_fraction))
        train_part = np.where(observed[:split] > 0, series[:split], np.nan)
        scaler = StandardScaler(np.nan_to_num(train_part, nan=np.nanmean(train_part, 0)))
        self.state = DetectorState(loc=scaler.mean.tolist(), scale=scaler.std.tolist())
        standardised = np.where(observed > 0, scaler.transform(np.nan_to_num(series)), 0.0).astype(np.float32)

        config = self.model.config
        dataset = NextStepWindows(
            standardised[:split], observed[:split], config.context_length, config.prediction_length, pad_probability,
            seed=training_args.seed,
        )  # fmt: skip
        trainer = Trainer(model=self.model, args=training_args, train_dataset=dataset)
        trainer.train()
        self.model.eval()
        self.calibrate(series[split:], observed[split:], series[:split], observed[:split], smoothing_window,
                       threshold_method, **threshold_kwargs)  # fmt: skip
        return trainer

    def calibrate(
        self,
        normal_series: np.ndarray,
        normal_observed_mask: np.ndarray | None = None,
        warmup_series: np.ndarray | None = None,
        warmup_observed_mask: np.ndarray | None = None,
        smoothing_window: int = DEFAULT_SMOOTHING_WINDOW,
        threshold_method: str = "pot",
        **threshold_kwargs,
    ) -> np.ndarray:
        """Fits the residual scale, smoothing and threshold on held-out normal data; returns its scores.

        `warmup_series` (the steps just before `normal_series`, e.g. the training part) is streamed first, unscored,
        so the held-out residuals are those of a running stream: up to `context_length` of its last steps are used.
        """
        check_calibration_options(smoothing_window, threshold_method)
        normal = as_series("normal_series", normal_series, self.num_input_channels)
        normal_observed = as_observed_mask("normal_series", normal, normal_observed_mask)
        scorer = StreamingAnomalyScorer(self)
        if warmup_series is not None:
            warmup = as_series("warmup_series", warmup_series, self.num_input_channels)
            warmup_observed = as_observed_mask("warmup_series", warmup, warmup_observed_mask)
            keep = self.model.config.context_length
            scorer.residuals(warmup[-keep:], warmup_observed[-keep:])
        residuals = scorer.residuals(normal, normal_observed)
        median, scale = robust_location_scale(residuals, normal_observed)
        self.state.residual_median, self.state.residual_scale = median.tolist(), scale.tolist()
        self.state.smoothing_window = smoothing_window
        smoother = CenteredMean(smoothing_window)
        z = combined_z_scores(residuals, normal_observed, median, scale)
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

    def stream(self) -> "StreamingAnomalyScorer":
        """A scorer that takes the series chunk by chunk (any sizes) and returns the scores `score` would."""
        if not self.state.residual_scale:
            raise ValueError("The detector is not calibrated: call `fit` (or `calibrate`) before scoring.")
        return StreamingAnomalyScorer(self)

    def score(self, series: np.ndarray, observed_mask: np.ndarray | None = None) -> np.ndarray:
        """Anomaly scores (T,) float64 of a series (T,) or (T, C), one per time step, higher = more anomalous.

        Missing points (`observed_mask` 0; their values may be NaN) are fed to the model as missing and left out of
        the score; a step with no observed channel counts as 0 in the smoothing window.
        """
        scorer = self.stream()
        return np.concatenate([scorer.update(series, observed_mask), scorer.flush()])

    def predict(self, series: np.ndarray, observed_mask: np.ndarray | None = None) -> np.ndarray:
        """Binary alarms (T,) bool: scores above the calibrated threshold."""
        if self.state.threshold is None:
            raise ValueError("The detector has no threshold: call `fit` or `calibrate` first.")
        return self.score(series, observed_mask) > self.state.threshold

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """The model folder (`model.save_pretrained`: config, weights, remote code) plus `anomaly_detector.json`."""
        save_directory = Path(save_directory)
        self.model.save_pretrained(save_directory, **kwargs)
        (save_directory / DETECTOR_FILE).write_text(json.dumps(asdict(self.state), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> "HybridGRUAnomalyDetector":
        directory = Path(directory)
        if not (directory / DETECTOR_FILE).is_file():
            raise ValueError(f"{directory} has no {DETECTOR_FILE}: not a folder saved by HybridGRUAnomalyDetector.")
        model = HybridGRUForTimeSeriesPrediction.from_pretrained(directory, **kwargs).eval()
        state = DetectorState(**json.loads((directory / DETECTOR_FILE).read_text()))
        return cls(model, state)


def combined_z_scores(residuals, observed, median, scale) -> np.ndarray:
    """Robust z-scores of residuals (n, C), combined over the observed channels of each step by their root mean
    square (|z| for one channel; 0 for a step with no observed channel)."""
    z = np.where(observed > 0, (residuals - median) / scale, 0.0)
    return np.sqrt((z**2).sum(1) / np.maximum(observed.sum(1), 1.0))


class CenteredMean:
    """Streaming centred moving average: the score of step t is the mean of the values of steps
    [t - window // 2, t + window - 1 - window // 2] (cut at the series ends), emitted once its last step arrived,
    i.e. with a latency of `window - 1 - window // 2` steps. A centred window lines up with the anomaly, unlike a
    trailing one, whose scores lag it by half a window."""

    def __init__(self, window: int):
        self.before, self.after = window // 2, window - 1 - window // 2
        self.buffer = np.zeros(0)  # values of steps [self.buffer_start, self.seen)
        self.buffer_start = self.next_step = self.seen = 0

    def push(self, values: np.ndarray) -> np.ndarray:
        """Adds values; returns the scores that became complete (possibly none)."""
        self.buffer = np.concatenate([self.buffer, values])
        self.seen += len(values)
        return self._emit(self.seen - self.after)

    def flush(self) -> np.ndarray:
        """The scores of the last steps, with the window cut at the end of the series."""
        return self._emit(self.seen)

    def _emit(self, stop: int) -> np.ndarray:
        scores = []
        for t in range(self.next_step, stop):
            start = max(t - self.before, 0) - self.buffer_start
            scores.append(self.buffer[start : t + self.after + 1 - self.buffer_start].mean())
        self.next_step = max(self.next_step, stop)
        drop = max(self.next_step - self.before - self.buffer_start, 0)
        self.buffer, self.buffer_start = self.buffer[drop:], self.buffer_start + drop
        return np.array(scores, dtype=np.float64)


class StreamingAnomalyScorer:
    """Scores a series as it arrives: `update(chunk)` returns one score per step of the chunk.

    The state is the backbone cache, the forecast for the next step and the last `smoothing_window` z-scores. The
    scores returned by `update` over chunks of any sizes, then `flush`, equal `HybridGRUAnomalyDetector.score` over
    the whole series.
    """

    def __init__(self, detector: HybridGRUAnomalyDetector):
        self.detector = detector
        self.model = detector.model
        state = detector.state
        self.loc, self.scale = np.array(state.loc), np.array(state.scale)
        self.median, self.residual_scale = np.array(state.residual_median), np.array(state.residual_scale)
        self.smoother = CenteredMean(state.smoothing_window)
        self.cache = None
        self.forecast = None
        self.steps_seen = 0

    @torch.no_grad()
    def _advance(self, values: torch.Tensor, observed: torch.Tensor) -> np.ndarray:
        """Feeds standardised (1, n, C) steps; returns the forecast of the next step in standardised units (C,)."""
        kwargs = {"use_cache": True} if self.cache is None else {"cache": self.cache}
        out = self.model(past_values=values, past_observed_mask=observed, **kwargs)
        self.cache = out.cache
        return out.prediction_outputs[0, 0].double().numpy()

    def _start(self) -> None:
        """The stream opens with `context_length` unobserved steps (as padded training windows), which gives the
        forecast of the first step."""
        shape = (1, self.model.config.context_length, self.detector.num_input_channels)
        device = self.model.device
        self.forecast = self._advance(torch.zeros(shape, device=device), torch.zeros(shape, device=device))

    def residuals(self, chunk: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """Standardised one-step-ahead residuals (n, C) of the chunk (validated float32 arrays), moving the stream on."""
        if self.forecast is None:
            self._start()
        standardised = np.where(observed > 0, (np.nan_to_num(chunk) - self.loc) / self.scale, 0.0)
        residuals = np.zeros(standardised.shape)
        device = self.model.device
        values = torch.as_tensor(standardised, dtype=self.model.dtype, device=device)
        mask = torch.as_tensor(observed, dtype=self.model.dtype, device=device)
        for t in range(len(standardised)):
            residuals[t] = standardised[t] - self.forecast
            self.forecast = self._advance(values[None, t : t + 1], mask[None, t : t + 1])
        self.steps_seen += len(standardised)
        return residuals

    def update(self, chunk: np.ndarray, observed_mask: np.ndarray | None = None) -> np.ndarray:
        """Feeds the next steps (n,) or (n, C); returns the scores (float64) of the steps whose smoothing window is
        complete: all steps up to `latency` steps before the last one fed. `flush` returns the rest."""
        values = as_series("chunk", chunk, self.detector.num_input_channels)
        observed = as_observed_mask("chunk", values, observed_mask)
        residuals = self.residuals(values, observed)
        return self.smoother.push(combined_z_scores(residuals, observed, self.median, self.residual_scale))

    def flush(self) -> np.ndarray:
        """The scores of the last `latency` steps, smoothed over the steps seen (call at the end of a series)."""
        return self.smoother.flush()

    @property
    def latency(self) -> int:
        """How many steps a score waits for (the second half of the smoothing window)."""
        return self.smoother.after


__all__ = [
    "HybridGRUAnomalyDetector",
    "StreamingAnomalyScorer",
    "DetectorState",
    "pot_threshold",
    "quantile_threshold",
    "robust_location_scale",
    "CenteredMean",
    "LabelledSeries",
    "read_timeeval_csv",
    "anomaly_metrics",
    "aeon_anomaly_csv",
]
