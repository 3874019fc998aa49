"""Series and labelled files for anomaly detection: input checks, the TimeEval CSV reader, aeon's bundled sets and the
metrics (from aeon)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
