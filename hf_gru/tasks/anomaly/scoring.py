"""The scoring arithmetic of the anomaly detector: robust residual scales, channel combination, nearest-state
distances, the centred moving average and the alarm thresholds (a quantile, or peaks over threshold)."""

import math

import numpy as np
import torch

MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation
MINIMUM_SCALE = 1e-6


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


def combined_z_scores(residuals, observed, median, scale) -> np.ndarray:
    """Robust z-scores of residuals (n, C), combined over the observed channels of each step by their root mean
    square (|z| for one channel; 0 for a step with no observed channel)."""
    z = np.where(observed > 0, (residuals - median) / scale, 0.0)
    return np.sqrt((z**2).sum(1) / np.maximum(observed.sum(1), 1.0))


def nearest_state_distances(states: np.ndarray, reference: torch.Tensor, chunk: int = 2048) -> np.ndarray:
    """Euclidean distance (n, C) from each state (n, C, D) to its nearest neighbour among the reference states (C, M, D
    float64 tensor) of the same channel. The neighbour is found by a float32 matrix product on states centred on the
    reference mean, the distance to it is then taken in float64: the batched and the stepwise scorer's states differ
    by float32 rounding, which a float32 distance between nearby states would magnify."""
    out = np.empty(states.shape[:2])
    centre = reference.mean(1, keepdim=True)  # (C, 1, D)
    centred = (reference - centre).float()
    norms = (centred * centred).sum(-1)  # (C, M)
    queries = torch.as_tensor(states, dtype=torch.float64)
    for channel in range(states.shape[1]):
        for start in range(0, len(queries), chunk):
            block = queries[start : start + chunk, channel]  # (b, D)
            # argmin over the reference of |y|^2 - 2 x.y, i.e. of |x - y|^2
            nearest = torch.addmm(norms[channel], (block - centre[channel]).float(), centred[channel].T, alpha=-2)
            neighbours = reference[channel][nearest.argmin(1)]  # (b, D)
            out[start : start + chunk, channel] = torch.linalg.vector_norm(block - neighbours, dim=-1).numpy()
    return out


def nearest_state_z_scores(distances, observed, median, scale) -> np.ndarray:
    """Robust z-scores of nearest-state distances (n, C), averaged over the observed channels of each step (0 for a
    step with no observed channel)."""
    z = np.where(observed > 0, (distances - median) / scale, 0.0)
    return z.sum(1) / np.maximum(observed.sum(1), 1.0)


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
        steps = np.arange(self.next_step, stop)
        low = np.maximum(steps - self.before, 0) - self.buffer_start  # window bounds as indices into the buffer
        high = np.minimum(steps + self.after + 1, self.seen) - self.buffer_start
        sums = np.concatenate([[0.0], np.cumsum(self.buffer)])
        scores = (sums[high] - sums[low]) / np.maximum(high - low, 1)
        self.next_step = max(self.next_step, stop)
        drop = max(self.next_step - self.before - self.buffer_start, 0)
        self.buffer, self.buffer_start = self.buffer[drop:], self.buffer_start + drop
        return scores.astype(np.float64)
