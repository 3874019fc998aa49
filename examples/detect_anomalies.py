"""Anomaly detection on a TimeEval CSV pair with a HybridGRU one-step-ahead forecaster trained through `Trainer`.

    pip install -e ".[anomaly]"      # aeon (data and metrics), matplotlib (plot)
    A=$(python -c "import aeon, os; print(os.path.dirname(aeon.__file__))")/datasets/data/UnitTest/ecg-diff-count-3
    python examples/detect_anomalies.py --train_file ${A}_TRAIN_NA.csv --test_file ${A}_TEST.csv \
        --output_dir outputs/ecg-anomalies     # ~2 minutes on one thread here (training; scoring ~1 s)

Input (TimeEval layout): a `timestamp` column, one or more numeric value columns (the same in both files) and an
optional `is_anomaly` column (0/1). Training rows labelled 1 are left out (fed as missing); the last
`--validation_fraction` of the training file is held out to fit the residual scale and the alarm threshold. Both files
are checked before anything is written: a bad column or value is a ValueError naming the file and the column.

Output in `--output_dir`: `scores.csv` (`timestamp,score`, one row per test row, higher = more anomalous),
`metrics.json` (when the test file has labels of both kinds: point AUC-ROC and AUC-PR, VUS-PR, and the threshold's point
precision/recall/F1 and range F1), `scores.png` (signal, scores, threshold, alarms, true anomalies shaded) and the
detector in `model/` (a Hub-ready model folder plus `anomaly_detector.json`; load it with
`HybridGRUAnomalyDetector.from_pretrained`; with `--nearest_state` (the default) also
`anomaly_reference_states.safetensors`). Any `TrainingArguments` flag works (`--max_steps`, `--learning_rate`,
`--per_device_train_batch_size`, `--seed`, ...).
"""

import json
import logging
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import transformers
from transformers import HfArgumentParser, TrainingArguments, set_seed

from hf_gru.tasks.anomaly import (
    DEFAULT_CORRUPT_PROBABILITY,
    DEFAULT_SMOOTHING_WINDOW,
    DEFAULT_TRAINING,
    HybridGRUAnomalyDetector,
    LabelledSeries,
    anomaly_metrics,
    read_timeeval_csv,
)
from hf_gru.training.hub import write_model_card

logger = logging.getLogger(__name__)


@dataclass
class AnomalyArguments:
    train_file: str = field(metadata={"help": "TimeEval CSV of (mostly) normal data to train on."})
    test_file: str = field(metadata={"help": "TimeEval CSV to score."})
    context_length: int = field(default=200, metadata={"help": "Training window (about two heartbeats for ECG)."})
    smoothing_window: int = field(
        default=DEFAULT_SMOOTHING_WINDOW, metadata={"help": "Centred moving average of the per-step scores."}
    )
    validation_fraction: float = field(default=0.2, metadata={"help": "Held-out tail of the training file."})
    corrupt_probability: float = field(
        default=DEFAULT_CORRUPT_PROBABILITY, metadata={"help": "Share of training windows with a corrupted segment."}
    )
    nearest_state: bool = field(
        default=True,
        metadata={"help": "Also score each step by its model state's distance to the nearest normal state (False: the "
                  "forecast residual alone)."},
    )  # fmt: skip
    threshold_method: str = field(default="pot", metadata={"help": "'pot' (extreme value theory) or 'quantile'."})
    threshold_risk: float = field(default=1e-3, metadata={"help": "POT: probability of a false alarm per step."})
    threshold_quantile: float = field(default=0.999, metadata={"help": "'quantile': quantile of held-out scores."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir."})


def load_inputs(args: AnomalyArguments) -> tuple[LabelledSeries, LabelledSeries]:
    """Reads and checks both files; nothing is written before this returns."""
    train = read_timeeval_csv(args.train_file)
    test = read_timeeval_csv(args.test_file, value_columns=train.value_columns)
    normal = len(train.values) if train.labels is None else int((train.labels == 0).sum())
    needed = int(np.ceil(args.context_length / (1.0 - args.validation_fraction))) + 2
    if normal < needed:
        raise ValueError(
            f"{args.train_file}: {normal} normal rows in columns {train.value_columns}; --context_length "
            f"{args.context_length} with --validation_fraction {args.validation_fraction} needs at least {needed}."
        )
    if len(test.values) < args.context_length:
        raise ValueError(
            f"{args.test_file}: {len(test.values)} rows in columns {test.value_columns}, shorter than --context_length "
            f"{args.context_length}."
        )
    return train, test


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    path = Path(output_dir)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ValueError(f"--output_dir {output_dir!r} is not empty; pass --overwrite_output_dir to replace it.")


def plot_scores(path: Path, test: LabelledSeries, scores: np.ndarray, threshold: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(len(scores))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 5), sharex=True)
    top.plot(steps, test.values, linewidth=0.6)
    top.set_ylabel("signal")
    bottom.plot(steps, scores, linewidth=0.8, color="black", label="score")
    if threshold is not None:
        bottom.axhline(threshold, color="red", linestyle="--", linewidth=0.8, label="threshold")
        alarms = scores > threshold
        bottom.scatter(steps[alarms], scores[alarms], s=4, color="red", label="alarm", zorder=3)
    for axis in (top, bottom):
        if test.labels is not None:
            edges = np.flatnonzero(np.diff(np.concatenate([[0], test.labels, [0]])))
            for start, end in edges.reshape(-1, 2):
                axis.axvspan(start, end, color="orange", alpha=0.3, linewidth=0)
    bottom.set_ylabel("anomaly score")
    bottom.set_xlabel("time step (true anomalies shaded)")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def model_card_summary(detector: HybridGRUAnomalyDetector) -> str:
    if detector.reference_states is None:
        return (
            "One-step-ahead forecast residuals of a HybridGRU time-series model, as robust z-scores (`anomaly_detector"
            f".json`: standardisation, residual scale, smoothing, threshold {detector.threshold:.4g})."
        )
    return (
        "One-step-ahead forecast residuals of a HybridGRU time-series model plus the distance of its state to the "
        "nearest state of normal data, as robust z-scores (`anomaly_detector.json`: standardisation, residual and "
        f"distance scales, smoothing, threshold {detector.threshold:.4g}; `anomaly_reference_states.safetensors`: "
        "the normal states)."
    )


def write_outputs(
    folder: Path, detector, test: LabelledSeries, scores: np.ndarray, metrics: dict | None, command: str
) -> None:
    import pandas as pd

    pd.DataFrame({"timestamp": test.timestamps, "score": scores}).to_csv(folder / "scores.csv", index=False)
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_scores(folder / "scores.png", test, scores, detector.threshold)
    detector.save_pretrained(folder / "model")
    write_model_card(
        folder / "model",
        title="HybridGRU anomaly detector",
        summary=model_card_summary(detector),
        metrics=metrics or {},
        command=command,
        pipeline_tag="time-series-forecasting",
        usage=USAGE,
    )


USAGE = """from hf_gru.tasks.anomaly import HybridGRUAnomalyDetector

detector = HybridGRUAnomalyDetector.from_pretrained("path/to/model")
scores = detector.score(series)  # (time,) or (time, channels) -> one score per step
alarms = scores > detector.threshold"""


def main(argv: list[str] | None = None) -> dict | None:
    parser = HfArgumentParser((AnomalyArguments, TrainingArguments))
    parser.set_defaults(**DEFAULT_TRAINING)  # any of them can be given on the command line
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    train, test = load_inputs(args)
    check_output_dir(training_args.output_dir, args.overwrite_output_dir)
    threshold_kwargs = {"risk": args.threshold_risk} if args.threshold_method == "pot" else {
        "quantile": args.threshold_quantile}  # fmt: skip
    set_seed(training_args.seed)

    detector = HybridGRUAnomalyDetector.from_config(
        num_input_channels=len(train.value_columns), context_length=args.context_length, seed=training_args.seed
    )
    observed = np.ones_like(train.values) if train.labels is None else np.repeat(
        (train.labels == 0)[:, None], train.values.shape[1], axis=1).astype(np.float32)  # fmt: skip
    output_dir = Path(training_args.output_dir)
    with tempfile.TemporaryDirectory(prefix="detect_anomalies_") as scratch:
        # The Trainer and the outputs write to a scratch folder, moved into place at the end: a failed run leaves
        # --output_dir as it was.
        training_args.output_dir = str(Path(scratch, "trainer"))
        detector.fit(train.values, training_args, train_observed_mask=observed,
                     validation_fraction=args.validation_fraction, smoothing_window=args.smoothing_window,
                     threshold_method=args.threshold_method, corrupt_probability=args.corrupt_probability,
                     nearest_state=args.nearest_state, **threshold_kwargs)  # fmt: skip
        scores = detector.score(test.values)
        metrics = None
        if test.labels is not None and len(np.unique(test.labels)) == 1:
            logger.warning("%s: 'is_anomaly' holds only %d: no metrics.", args.test_file, test.labels[0])
        elif test.labels is not None:
            metrics = anomaly_metrics(test.labels, scores, scores > detector.threshold)
            metrics.update(threshold=detector.threshold, seed=training_args.seed)
        result = Path(scratch, "result")
        result.mkdir()
        command = shlex.join(["python", "examples/detect_anomalies.py", *(sys.argv[1:] if argv is None else argv)])
        write_outputs(result, detector, test, scores, metrics, command)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(result), output_dir)
    logger.info("Wrote scores.csv, scores.png and model/ to %s", output_dir)
    if metrics is not None:
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=1))
    return metrics


if __name__ == "__main__":
    main()
