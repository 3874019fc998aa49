"""How the anomaly detector's scoring defaults were chosen: on TRAIN_A (labelled validation data), never on TEST.

    python benchmarks/anomaly_defaults.py --threads 1 --corrupt 0 --warmup-off --json benchmarks/results/cpu_anomaly_defaults.json
    python benchmarks/anomaly_defaults.py --threads 1 --seeds 0 1 2 --corrupt 0 0.1 --smoothing 25 50 100
    python benchmarks/anomaly_defaults.py --threads 1 --seeds 0 1 2 --smoothing 50 --reference-states 0 10000 4096 2048

Trains the default detector (`DEFAULT_TRAINING`, context 200) on aeon's ecg-diff-count-3 TRAIN_NA for each seed and
each `--corrupt` value (fit's `corrupt_probability`), then scores TRAIN_A (10,000 samples with labelled anomalies)
with the same weights under each scoring option: the nearest-state term's reference size (`--reference-states`,
calibrate's `max_reference_states`; 0: the residual alone), the smoothing window and, with `--warmup-off`, the warm-up
residual scale off as well (the stationary scale from the first step). Point AUC-PR and range VUS-PR from aeon; they
rank scores, so the threshold plays no part.
"""

import itertools
import statistics

import numpy as np
import torch
from common import base_parser, machine_info, markdown_table, write_json
from transformers import TrainingArguments

from hf_gru.tasks.anomaly import (
    DEFAULT_CORRUPT_PROBABILITY,
    DEFAULT_TRAINING,
    MAX_REFERENCE_STATES,
    HybridGRUAnomalyDetector,
    aeon_anomaly_csv,
    anomaly_metrics,
    read_timeeval_csv,
)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--smoothing", type=int, nargs="+", default=[1, 10, 25, 50, 100])
    parser.add_argument(
        "--corrupt",
        type=float,
        nargs="+",
        default=[DEFAULT_CORRUPT_PROBABILITY],
        help="fit's corrupt_probability values",
    )
    parser.add_argument("--warmup-off", action="store_true", help="also score without the warm-up residual scale")
    parser.add_argument(
        "--reference-states",
        type=int,
        nargs="+",
        default=[MAX_REFERENCE_STATES],
        help="calibrate's max_reference_states values (0: no nearest-state term)",
    )
    parser.add_argument("--output-dir", default="/tmp/hf_gru_anomaly_defaults", help="Trainer scratch folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = machine_info(args)
    train = read_timeeval_csv(aeon_anomaly_csv(part="TRAIN_NA")).values
    split = int(len(train) * 0.8)  # fit's held-out part (validation_fraction 0.2)
    validation = read_timeeval_csv(aeon_anomaly_csv(part="TRAIN_A"))
    results: dict[str, list[dict]] = {}
    for seed, corrupt in itertools.product(args.seeds, args.corrupt):
        detector = HybridGRUAnomalyDetector.from_config(num_input_channels=1, context_length=200, seed=seed)
        training_args = TrainingArguments(args.output_dir, **DEFAULT_TRAINING, seed=seed, use_cpu=True)
        detector.fit(train, training_args, corrupt_probability=corrupt)
        for references in args.reference_states:
            detector.calibrate(train[split:], None, train[:split], None, nearest_state=references > 0,
                               max_reference_states=max(references, 1))  # fmt: skip
            warmup_scale = detector.state.warmup_residual_scale
            for window, warmup in itertools.product(args.smoothing, (True, False) if args.warmup_off else (True,)):
                detector.state.smoothing_window = window
                detector.state.warmup_residual_scale = warmup_scale if warmup else []
                metrics = anomaly_metrics(validation.labels, detector.score(validation.values))
                name = (
                    f"corrupt {corrupt:g}, reference states {references or 'none'}, smoothing {window}, warm-up scale "
                    f"{'on' if warmup else 'off'}"
                )
                results.setdefault(name, []).append(dict(metrics, seed=seed))
                print(f"  seed {seed}, {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
        write_json(args.json, {"machine": info, "args": vars(args), "results": results, "partial": True})
    rows = [
        [name, *(statistics.mean(m[k] for m in runs) for k in ("auc_roc", "auc_pr", "vus_pr"))]
        for name, runs in results.items()
    ]
    print(f"# TRAIN_A, mean over seeds {args.seeds}")
    print(markdown_table(["scoring", "AUC-ROC", "AUC-PR", "VUS-PR"], rows))
    write_json(args.json, {"machine": info, "args": vars(args), "results": results})


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
