"""Anomaly detection in time series with `HybridGRUForTimeSeriesPrediction`: one-step-ahead forecast residuals.

The model is trained with the `Trainer` to forecast the next time step of normal data. A point is scored by how far it
lands from the forecast made just before it: per channel, the residual is turned into a robust z-score with the
median and MAD of the residuals on held-out normal data, the channels are combined by their root mean square, and the
per-step score adds a second robust z-score: the distance from the model state after the step (the forecasting
placeholder's hidden state) to the nearest state of a stream over normal data (the nearest-neighbour distance of the
matrix profile, Yeh et al., 2016, between learned states instead of raw windows; `nearest_state=False` leaves it out).
The result is averaged over a centred window of `smoothing_window` steps (so a streamed score comes
`smoothing_window // 2` steps late). Alarms are scores above a threshold calibrated on the same held-out data (a
quantile, or peaks over threshold: Siffer et al., 2017, "Anomaly Detection in Streams with Extreme Value Theory").

Scoring runs the series through the backbone one token per step (`patch_length=1`) with its cache, so the state is
constant-size. One forward over a chunk gives the forecast made after every one of its steps
(`HybridGRUForTimeSeriesPrediction.forecast_every_step`: the forecasting placeholder evaluated beside each position),
so `HybridGRUAnomalyDetector.score` of a long series is a few forwards, and `StreamingAnomalyScorer` fed chunks of any
size (down to one sample) gives the same scores. A stream starts from `context_length` unobserved (masked) steps, the
padding that training windows also get at random, so the first steps are scored from the short context seen so far.

Modules: `detector` (the detector and its scorer), `scoring` (robust scales, smoothing, thresholds), `data` (input
checks, the TimeEval CSV reader, aeon's data sets and metrics). Not remote code: a saved detector is a
`save_pretrained` model folder (loadable alone with the Auto classes) plus `anomaly_detector.json` holding the
standardisation, residual and distance scales, smoothing and threshold, and `anomaly_reference_states.safetensors`
(the normal states, at most `MAX_REFERENCE_STATES` per channel).
"""

from .data import LabelledSeries, aeon_anomaly_csv, anomaly_metrics, as_observed_mask, as_series, read_timeeval_csv
from .detector import (
    DEFAULT_CORRUPT_PROBABILITY,
    DEFAULT_MODEL,
    DEFAULT_SMOOTHING_WINDOW,
    DEFAULT_TRAINING,
    DETECTOR_FILE,
    MAX_REFERENCE_STATES,
    REFERENCE_STATES_FILE,
    SCORING_CHUNK,
    DetectorState,
    HybridGRUAnomalyDetector,
    NextStepWindows,
    StreamingAnomalyScorer,
    check_calibration_options,
)
from .scoring import (
    MAD_TO_STD,
    MINIMUM_SCALE,
    CenteredMean,
    TooFewExcessesError,
    combined_z_scores,
    pot_threshold,
    quantile_threshold,
    robust_location_scale,
)

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
    "DEFAULT_MODEL",
    "DEFAULT_CORRUPT_PROBABILITY",
    "DEFAULT_SMOOTHING_WINDOW",
    "DEFAULT_TRAINING",
    "DETECTOR_FILE",
    "MAX_REFERENCE_STATES",
    "REFERENCE_STATES_FILE",
    "SCORING_CHUNK",
    "NextStepWindows",
    "TooFewExcessesError",
    "MAD_TO_STD",
    "MINIMUM_SCALE",
    "combined_z_scores",
    "check_calibration_options",
    "as_series",
    "as_observed_mask",
]
