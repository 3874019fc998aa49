"""Offline `evaluate` metric modules shipped with hf_gru: accuracy, f1, seqeval, wer, cer, sacrebleu
(corpus BLEU), chrf.

`evaluate.load("accuracy")` downloads its script from the Hugging Face Hub; these modules live in the package
(one folder per metric, `<name>/<name>.py`, an `evaluate.Metric` subclass), so they load by path with no network:

    >>> from hf_gru.metrics import load_metric
    >>> load_metric("accuracy").compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).parent
METRIC_NAMES = ("accuracy", "cer", "chrf", "f1", "sacrebleu", "seqeval", "wer")


def metric_path(name: str) -> str:
    """The folder of the packaged metric `name`, as `evaluate.load` takes it."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; hf_gru ships {list(METRIC_NAMES)}.")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` on the packaged metric `name` (works offline); `kwargs` go to `evaluate.load`."""
    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric", "metric_path"]
