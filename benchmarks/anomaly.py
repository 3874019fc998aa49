"""Anomaly detection on ECG: hf_gru's forecast-residual detector vs aeon's detectors, plus the streaming cost.

    pip install -e ".[anomaly]"                          # aeon (data, detectors, metrics), stumpy, pyod
    python benchmarks/anomaly.py --threads 1 --json benchmarks/results/cpu_anomaly_ecg.json    # ~30 minutes
    python benchmarks/anomaly.py --quick                 # smoke run: 1 seed, 30 steps, 2,000 test samples, 500 stepwise

Data: aeon's `ecg-diff-count-3` (read from the installed wheel): TRAIN_NA (10,000 normal samples) to train on, TEST
(10,000 samples, 3 anomalous heartbeats of 100 samples) to score. hf_gru trains with the example's defaults
(`hf_gru.tasks.anomaly.DEFAULT_TRAINING`, context 200, smoothing 50, chosen on TRAIN_NA/TRAIN_A, not on TEST) for
`--seeds` seeds. Baselines from aeon with their window set to one heartbeat (`--window`, 100 samples): STOMP (matrix
profile via stumpy), KMeansAD (unsupervised on TEST, and semi-supervised: fit on TRAIN_NA), LOF (pyod), MERLIN
(discord lengths window +- 10%). Metrics from aeon: point AUC-ROC and AUC-PR, range VUS-PR; fit + score wall time.

Scoring speed: seconds for `detector.score(TEST)` (batched: a few forwards, each giving the forecast after every step;
median of 3) against the stepwise loop that scoring ran before (`score(..., stepwise=True)`: one forward per step,
the forecast on a fork of the cache) over the first `--stepwise-samples` steps of TEST (default: all), as a ratio of
seconds per sample; same model, same process, `--threads` threads; with the largest score difference between the two.

Streaming cost at batch 1: microseconds per sample of `StreamingAnomalyScorer.update` fed one sample at a time,
against re-scoring the last `context_length` samples with one full forward per sample (what a detector without a
recurrent state does), same model, same process, interleaved.
"""

import statistics
import time

import numpy as np
import torch
from common import base_parser, machine_info, markdown_table, write_json
from transformers import TrainingArguments

from hf_gru.tasks.anomaly import (
    DEFAULT_TRAINING,
    HybridGRUAnomalyDetector,
    aeon_anomaly_csv,
    anomaly_metrics,
    read_timeeval_csv,
)

CONTEXT_LENGTH = 200


def run_hf_gru(train: np.ndarray, test: np.ndarray, labels: np.ndarray, seed: int, max_steps: int, output_dir: str):
    start = time.perf_counter()
    detector = HybridGRUAnomalyDetector.from_config(num_input_channels=1, context_length=CONTEXT_LENGTH, seed=seed)
    args = TrainingArguments(output_dir, **dict(DEFAULT_TRAINING, max_steps=max_steps), seed=seed, use_cpu=True)
    detector.fit(train, args)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = detector.score(test)
    score_seconds = time.perf_counter() - start
    metrics = anomaly_metrics(labels, scores, scores > detector.threshold)
    return detector, dict(metrics, fit_s=fit_seconds, score_s=score_seconds, threshold=detector.threshold)


def baselines(window: int, seed: int) -> dict:
    """aeon detectors: name -> (detector, semi_supervised)."""
    from aeon.anomaly_detection.series.distance_based import LOF, MERLIN, STOMP, KMeansAD

    return {
        "STOMP": (STOMP(window_size=window), False),
        "KMeansAD": (KMeansAD(window_size=window, random_state=seed), False),
        "KMeansAD (fit on TRAIN_NA)": (KMeansAD(window_size=window, random_state=seed), True),
        "LOF": (LOF(window_size=window), False),
        "MERLIN": (MERLIN(min_length=int(window * 0.9), max_length=int(window * 1.1)), False),
    }


def run_baseline(detector, semi_supervised: bool, train: np.ndarray, test: np.ndarray, labels: np.ndarray) -> dict:
    start = time.perf_counter()
    if semi_supervised:
        detector.fit(train, axis=0)
        scores = detector.predict(test, axis=0)
    else:
        scores = detector.fit_predict(test, axis=0)
    seconds = time.perf_counter() - start
    return dict(anomaly_metrics(labels, scores), fit_score_s=seconds)


@torch.no_grad()
def streaming_cost(detector: HybridGRUAnomalyDetector, series: np.ndarray, samples: int, rounds: int = 3) -> dict:
    """Median over `rounds` of µs per sample: streaming update vs one forward over the trailing window."""
    model = detector.model
    standardised = torch.as_tensor((series - detector.state.loc[0]) / detector.state.scale[0], dtype=torch.float32)
    stream_us, window_us = [], []
    for _ in range(rounds):
        scorer = detector.stream()
        scorer.update(series[:CONTEXT_LENGTH])  # warm state, as a running monitor has
        start = time.perf_counter()
        for t in range(CONTEXT_LENGTH, CONTEXT_LENGTH + samples):
            scorer.update(series[t : t + 1])
        stream_us.append((time.perf_counter() - start) / samples * 1e6)
        start = time.perf_counter()
        for t in range(CONTEXT_LENGTH, CONTEXT_LENGTH + samples):
            model(past_values=standardised[None, t - CONTEXT_LENGTH : t, None])
        window_us.append((time.perf_counter() - start) / samples * 1e6)
    stream, window = statistics.median(stream_us), statistics.median(window_us)
    return {"stream_us_per_sample": stream, "window_us_per_sample": window, "window_over_stream": window / stream}


def scoring_speed(detector: HybridGRUAnomalyDetector, test: np.ndarray, stepwise_samples: int, rounds: int = 3):
    """Batched `score` of the whole series vs the stepwise loop over its first `stepwise_samples` samples, interleaved
    on a busy machine: each of `rounds` rounds times one batched run and the next third of the stepwise stream."""
    batched, stepwise, parts = [], 0.0, []
    scorer = detector.stream(stepwise=True)
    bounds = np.linspace(0, stepwise_samples, rounds + 1).astype(int)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        begin = time.perf_counter()
        detector.score(test)
        batched.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        parts.append(scorer.update(test[start:stop]))
        stepwise += time.perf_counter() - begin
    reference = np.concatenate(parts + [scorer.flush()])
    difference = float(np.abs(detector.score(test[:stepwise_samples]) - reference).max())
    per_sample_batched, per_sample_stepwise = statistics.median(batched) / len(test), stepwise / stepwise_samples
    return {
        "batched_s": statistics.median(batched), "batched_samples": len(test), "stepwise_s": stepwise,
        "stepwise_samples": stepwise_samples, "stepwise_over_batched": per_sample_stepwise / per_sample_batched,
        "max_abs_score_difference": difference,
    }  # fmt: skip


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=DEFAULT_TRAINING["max_steps"])
    parser.add_argument("--window", type=int, default=100, help="baselines' window: one heartbeat")
    parser.add_argument("--stream-samples", type=int, default=100)
    parser.add_argument("--stepwise-samples", type=int, default=None, help="stepwise loop's share of TEST (all)")
    parser.add_argument("--output-dir", default="/tmp/hf_gru_anomaly_benchmark", help="Trainer scratch folder")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.max_steps, args.stream_samples = args.seeds[:1], 30, 50
        args.stepwise_samples = args.stepwise_samples or 500
    torch.set_num_threads(args.threads)
    info = machine_info(args)
    print("# Anomaly detection on aeon's ecg-diff-count-3 (train TRAIN_NA, score TEST)")
    print("  " + ", ".join(f"{k}={v}" for k, v in info.items()))
    train = read_timeeval_csv(aeon_anomaly_csv(part="TRAIN_NA")).values
    test_file = read_timeeval_csv(aeon_anomaly_csv(part="TEST"))
    test, labels = test_file.values, test_file.labels
    if args.quick:
        test, labels = test[:2000], labels[:2000]

    results, detector = {}, None
    for seed in args.seeds:
        detector, metrics = run_hf_gru(train, test, labels, seed, args.max_steps, args.output_dir)
        results[f"hf_gru seed {seed}"] = metrics
        print(f"  hf_gru seed {seed}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)
        write_json(args.json, {"machine": info, "args": vars(args), "results": results, "partial": True})
    for name, (baseline, semi_supervised) in baselines(args.window, args.seeds[0]).items():
        train_1d, test_1d = train[:, 0].astype(np.float64), test[:, 0].astype(np.float64)  # stumpy wants float64
        results[name] = run_baseline(baseline, semi_supervised, train_1d, test_1d, labels)
        print(f"  {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in results[name].items()), flush=True)
        write_json(args.json, {"machine": info, "args": vars(args), "results": results, "partial": True})

    seeds = [results[f"hf_gru seed {s}"] for s in args.seeds]
    summary = {k: (statistics.mean(m[k] for m in seeds), min(m[k] for m in seeds)) for k in ("auc_pr", "vus_pr")}
    rows = [
        [name, m["auc_roc"], m["auc_pr"], m["vus_pr"], m.get("fit_score_s", m.get("fit_s", 0) + m.get("score_s", 0))]
        for name, m in results.items()
    ]
    print(markdown_table(["detector", "AUC-ROC", "AUC-PR", "VUS-PR", "fit + score s"], rows))
    best = max((n for n in results if not n.startswith("hf_gru")), key=lambda n: results[n]["auc_pr"])
    print(f"  hf_gru mean (min) over seeds: AUC-PR {summary['auc_pr'][0]:.4f} ({summary['auc_pr'][1]:.4f}), VUS-PR "
          f"{summary['vus_pr'][0]:.4f} ({summary['vus_pr'][1]:.4f}); best baseline {best}: AUC-PR "
          f"{results[best]['auc_pr']:.4f}, VUS-PR {results[best]['vus_pr']:.4f}")  # fmt: skip

    speed = scoring_speed(detector, test, args.stepwise_samples or len(test))
    print(
        f"  scoring {speed['batched_samples']} samples: batched {speed['batched_s']:.2f} s; stepwise loop "
        f"{speed['stepwise_s']:.1f} s for {speed['stepwise_samples']} samples; **{speed['stepwise_over_batched']:.0f}x** "
        f"faster per sample batched (largest score difference {speed['max_abs_score_difference']:.1e})", flush=True
    )  # fmt: skip
    write_json(args.json, {"machine": info, "args": vars(args), "results": results, "scoring": speed, "partial": True})
    cost = streaming_cost(detector, test[:, 0], args.stream_samples)
    print(
        f"  streaming at batch 1: {cost['stream_us_per_sample']:.0f} µs/sample; re-scoring a {CONTEXT_LENGTH}-sample "
        f"window per sample: {cost['window_us_per_sample']:.0f} µs/sample; ratio {cost['window_over_stream']:.2f}x"
    )
    write_json(
        args.json, {"machine": info, "args": vars(args), "results": results, "scoring": speed, "streaming": cost}
    )


if __name__ == "__main__":
    main()
