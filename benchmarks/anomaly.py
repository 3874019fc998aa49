"""Anomaly detection on medical series: hf_gru's forecast-residual detector vs aeon's detectors, plus scoring speed.

    pip install -e ".[anomaly]"                          # aeon (data, detectors, metrics), stumpy, pyod
    python benchmarks/anomaly.py --threads 1 --json benchmarks/results/cpu_anomaly_ecg.json    # ~40 minutes
    python benchmarks/anomaly.py --quick                 # smoke run: 1 seed, 30 steps, 2,000 test samples, 500 stepwise
    python benchmarks/anomaly.py --threads 1 --series ecg-diff-count-3 --seeds 0 --max-steps 1 --skip-baselines  # speed

Data, read from aeon's wheel (no download): `ecg-diff-count-3` (an ECG; train on TRAIN_NA, 10,000 normal samples;
score TEST, 10,000 samples with 3 anomalous heartbeats of 100 samples) and KDD-TSAD 135 `InternalBleeding16` (a
patient's heart rate from the UCR anomaly archive; train on TRAIN, 1,200 normal samples; score TEST, 7,501 samples,
one anomaly of 12 samples). hf_gru trains with the example's defaults (`hf_gru.tasks.anomaly.DEFAULT_TRAINING`,
context 200, smoothing 50; chosen on the ECG set's TRAIN_NA/TRAIN_A, not on any test part; see
`benchmarks/anomaly_defaults.py`) for `--seeds` seeds. Baselines from aeon with their window set to about one period
(ECG: one heartbeat, 100 samples; InternalBleeding16: the first autocorrelation peak of TRAIN): STOMP (matrix profile
via stumpy), KMeansAD (unsupervised on TEST, and semi-supervised: fit on the training part), LOF (pyod), MERLIN
(discord lengths window +- 10%). Metrics from aeon: point AUC-ROC and AUC-PR, range VUS-PR; fit and score seconds.
Per series and as the mean over the series.

Scoring speed (first series): seconds per sample of `detector.score(TEST)` (batched: a few forwards, each giving
the forecast after every step) against the stepwise loop that scoring ran before (`score(..., stepwise=True)`: one
forward per step, the forecast on a fork of the cache) over the first `--stepwise-samples` steps of TEST (default:
all); same model, same process, `--threads` threads, interleaved in 5 rounds (the median of the rounds' ratios), with
the largest score difference between the two.

Streaming cost at batch 1: microseconds per sample of `StreamingAnomalyScorer.update` fed one sample at a time,
against re-scoring the last `context_length` samples with one full forward per sample (what a detector without a
recurrent state does), same model, same process, interleaved.
"""

import copy
import statistics
import time
from pathlib import Path

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
VALIDATION_FRACTION = 0.2  # the held-out normal share of the training part (fit's default)


def run_hf_gru(train: np.ndarray, test: np.ndarray, labels: np.ndarray, seed: int, max_steps: int, output_dir: str):
    """The detector with its defaults, and the same trained model calibrated without the nearest-state term (the
    residual score alone, an ablation): (detector, metrics, residual-only metrics)."""
    start = time.perf_counter()
    detector = HybridGRUAnomalyDetector.from_config(num_input_channels=1, context_length=CONTEXT_LENGTH, seed=seed)
    args = TrainingArguments(output_dir, **dict(DEFAULT_TRAINING, max_steps=max_steps), seed=seed, use_cpu=True)
    detector.fit(train, args, validation_fraction=VALIDATION_FRACTION)
    fit_seconds = time.perf_counter() - start
    results = []
    for candidate in (detector, residual_only(detector, train)):
        start = time.perf_counter()
        scores = candidate.score(test)
        score_seconds = time.perf_counter() - start
        metrics = anomaly_metrics(labels, scores, scores > candidate.threshold)
        results.append(dict(metrics, fit_s=fit_seconds, score_s=score_seconds, threshold=candidate.threshold))
    return detector, *results


def residual_only(detector: HybridGRUAnomalyDetector, train: np.ndarray) -> HybridGRUAnomalyDetector:
    """The fitted detector's model, calibrated on the same held-out part without the nearest-state term."""
    ablation = HybridGRUAnomalyDetector(detector.model, copy.deepcopy(detector.state))
    split = int(len(train) * (1.0 - VALIDATION_FRACTION))
    ablation.calibrate(train[split:], None, train[:split], None, detector.state.smoothing_window, nearest_state=False)
    return ablation


def baselines(window: int, seed: int) -> dict:
    """aeon detectors: name -> (detector, semi_supervised)."""
    from aeon.anomaly_detection.series.distance_based import LOF, MERLIN, STOMP, KMeansAD

    return {
        "STOMP": (STOMP(window_size=window), False),
        "KMeansAD": (KMeansAD(window_size=window, random_state=seed), False),
        "KMeansAD (fit on train)": (KMeansAD(window_size=window, random_state=seed), True),
        "LOF": (LOF(window_size=window), False),
        "MERLIN": (MERLIN(min_length=int(window * 0.9), max_length=int(window * 1.1)), False),
    }


def run_baseline(detector, semi_supervised: bool, train: np.ndarray, test: np.ndarray, labels: np.ndarray) -> dict:
    """Semi-supervised: fit on the training part, then score the test part (timed apart); unsupervised: `fit_predict`
    on the test part, reported as scoring time."""
    start = time.perf_counter()
    timing = {}
    if semi_supervised:
        detector.fit(train, axis=0)
        timing["fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = detector.predict(test, axis=0)
    else:
        scores = detector.fit_predict(test, axis=0)
    timing["score_s"] = time.perf_counter() - start
    return dict(anomaly_metrics(labels, scores), **timing)


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


def scoring_speed(detector: HybridGRUAnomalyDetector, test: np.ndarray, stepwise_samples: int, rounds: int = 5):
    """Batched `score` of the whole series vs the stepwise loop over its first `stepwise_samples` samples, interleaved
    because the machine is shared: each of `rounds` rounds times one batched run and the next part of the stepwise
    stream. The ratio is the median over rounds of (stepwise s per sample) / (batched s per sample)."""
    batched, stepwise, parts = [], [], []
    scorer = detector.stream(stepwise=True)
    bounds = np.linspace(0, stepwise_samples, rounds + 1).astype(int)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        begin = time.perf_counter()
        detector.score(test)
        batched.append((time.perf_counter() - begin) / len(test))
        begin = time.perf_counter()
        parts.append(scorer.update(test[start:stop]))
        stepwise.append((time.perf_counter() - begin) / (stop - start))
    reference = np.concatenate(parts + [scorer.flush()])
    difference = float(np.abs(detector.score(test[:stepwise_samples]) - reference).max())
    return {
        "batched_s": statistics.median(batched) * len(test), "batched_samples": len(test),
        "stepwise_s": float(np.dot(stepwise, np.diff(bounds))), "stepwise_samples": stepwise_samples,
        "stepwise_over_batched": statistics.median(s / b for s, b in zip(stepwise, batched, strict=True)),
        "per_round": [s / b for s, b in zip(stepwise, batched, strict=True)], "max_abs_score_difference": difference,
    }  # fmt: skip


def aeon_kdd_tsad_135(part: str):
    """aeon's bundled KDD-TSAD 135 (UCR anomaly archive: InternalBleeding16, a patient's heart rate): TRAIN (1,200
    normal samples) and TEST (7,501 samples whose first 1,200 are TRAIN; one labelled anomaly of 12 samples)."""
    import aeon

    folder = Path(aeon.__file__).parent / "datasets" / "data" / "KDD-TSAD_135"
    return folder / f"135_UCR_Anomaly_InternalBleeding16_{part}.csv"


# name -> (training file, test file, baselines' window: one period; None = the first autocorrelation peak of TRAIN)
SERIES = {
    "ecg-diff-count-3": (lambda: aeon_anomaly_csv(part="TRAIN_NA"), lambda: aeon_anomaly_csv(part="TEST"), 100),
    "InternalBleeding16": (lambda: aeon_kdd_tsad_135("TRAIN"), lambda: aeon_kdd_tsad_135("TEST"), None),
}


def period(series: np.ndarray, minimum: int = 10) -> int:
    """The first lag >= `minimum` at which the autocorrelation of `series` (T,) peaks above 0.3: about one period."""
    centred = series - series.mean()
    correlation = np.correlate(centred, centred, "full")[len(centred) - 1 :]
    correlation = correlation / correlation[0]
    for lag in range(minimum, len(correlation) // 2):
        if correlation[lag] > 0.3 and correlation[lag - 1] < correlation[lag] >= correlation[lag + 1]:
            return lag
    raise ValueError("no autocorrelation peak above 0.3: pass the window by hand")


def measure_speed(name: str, detector: HybridGRUAnomalyDetector, test: np.ndarray, args, payload: dict) -> None:
    """Scoring speed and streaming cost of the last seed's detector, added to `payload`."""
    speed = scoring_speed(detector, test, args.stepwise_samples or len(test))
    print(
        f"  scoring {speed['batched_samples']} samples of {name}: batched {speed['batched_s']:.2f} s; stepwise "
        f"loop {speed['stepwise_s']:.1f} s for {speed['stepwise_samples']} samples; "
        f"**{speed['stepwise_over_batched']:.0f}x** faster per sample batched (largest score difference "
        f"{speed['max_abs_score_difference']:.1e})", flush=True
    )  # fmt: skip
    cost = streaming_cost(detector, test[:, 0], args.stream_samples)
    print(
        f"  streaming at batch 1: {cost['stream_us_per_sample']:.0f} µs/sample; re-scoring a "
        f"{CONTEXT_LENGTH}-sample window per sample: {cost['window_us_per_sample']:.0f} µs/sample; ratio "
        f"{cost['window_over_stream']:.2f}x", flush=True
    )  # fmt: skip
    payload.update(scoring=speed, streaming=cost)


def benchmark_series(name: str, args, payload: dict | None) -> dict:
    """hf_gru over the seeds, then (with `payload`) its scoring speed, before any baseline runs in the process, then
    the baselines, on one series; prints and returns the results by detector."""
    train_path, test_path, window = SERIES[name]
    train = read_timeeval_csv(train_path()).values
    test_file = read_timeeval_csv(test_path())
    test, labels = test_file.values, test_file.labels
    if args.quick:  # 2,000 samples from up to 1,000 before the first anomaly
        start = max(int(np.argmax(labels)) - 1000, 0)
        test, labels = test[start : start + 2000], labels[start : start + 2000]
    window = window or period(train[:, 0])
    print(f"## {name}: train {len(train)} samples, test {len(test)} ({int(labels.sum())} anomalous); window {window}")
    results, detector = {}, None
    for seed in args.seeds:
        detector, metrics, ablation = run_hf_gru(train, test, labels, seed, args.max_steps, args.output_dir)
        results[f"hf_gru seed {seed}"], results[f"hf_gru residual only, seed {seed}"] = metrics, ablation
        print(f"  hf_gru seed {seed}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)
        print(f"  hf_gru residual only, seed {seed}: " + ", ".join(f"{k}={v:.4g}" for k, v in ablation.items()))
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ValueError(f"{name}: the test part needs labels of both kinds")
    if payload is not None:
        measure_speed(name, detector, test, args, payload)
    for baseline_name, (baseline, semi_supervised) in (
        [] if args.skip_baselines else baselines(window, args.seeds[0]).items()
    ):
        train_1d, test_1d = train[:, 0].astype(np.float64), test[:, 0].astype(np.float64)  # stumpy wants float64
        results[baseline_name] = run_baseline(baseline, semi_supervised, train_1d, test_1d, labels)
        print(
            f"  {baseline_name}: " + ", ".join(f"{k}={v:.4g}" for k, v in results[baseline_name].items()), flush=True
        )
    for mean_name, prefix in (
        ("hf_gru (mean of seeds)", "hf_gru seed"),
        ("hf_gru residual only (mean)", "hf_gru residual only, seed"),
    ):
        seeds = [results[f"{prefix} {s}"] for s in args.seeds]
        results[mean_name] = {
            k: statistics.mean(m[k] for m in seeds) for k in ("auc_roc", "auc_pr", "vus_pr", "fit_s", "score_s")
        }
    rows = [
        [detector_name, m["auc_roc"], m["auc_pr"], m["vus_pr"], m.get("fit_s", "-"), m["score_s"]]
        for detector_name, m in results.items()
    ]
    print(markdown_table(["detector", "AUC-ROC", "AUC-PR", "VUS-PR", "fit s", "score s"], rows))
    mean = results["hf_gru (mean of seeds)"]
    if args.skip_baselines:
        return results
    best = max((n for n in results if not n.startswith("hf_gru")), key=lambda n: results[n]["auc_pr"])
    print(f"  hf_gru mean over seeds: AUC-PR {mean['auc_pr']:.4f}, VUS-PR {mean['vus_pr']:.4f}; best baseline "
          f"{best}: AUC-PR {results[best]['auc_pr']:.4f}, VUS-PR {results[best]['vus_pr']:.4f}", flush=True)  # fmt: skip
    return results


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--series", nargs="+", default=list(SERIES), choices=list(SERIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=DEFAULT_TRAINING["max_steps"])
    parser.add_argument("--stream-samples", type=int, default=100)
    parser.add_argument("--stepwise-samples", type=int, default=None, help="stepwise loop's share of TEST (all)")
    parser.add_argument("--output-dir", default="/tmp/hf_gru_anomaly_benchmark", help="Trainer scratch folder")
    parser.add_argument("--skip-baselines", action="store_true", help="hf_gru and the scoring speed only")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.max_steps, args.stream_samples = args.seeds[:1], 30, 50
        args.stepwise_samples = args.stepwise_samples or 500
    torch.set_num_threads(args.threads)
    info = machine_info(args)
    print("# Anomaly detection: hf_gru vs aeon's detectors (train on the normal part, score the test part)")
    print("  " + ", ".join(f"{k}={v}" for k, v in info.items()))
    payload = {"machine": info, "args": vars(args), "results": {}, "partial": True}
    for index, name in enumerate(args.series):
        payload["results"][name] = benchmark_series(name, args, payload if index == 0 else None)
        write_json(args.json, payload)
    detectors = set.intersection(*(set(payload["results"][name]) for name in args.series))
    detectors = [d for d in payload["results"][args.series[0]] if d in detectors and "seed " not in d]
    rows = [
        [
            d,
            *(
                statistics.mean(payload["results"][n][d][k] for n in args.series)
                for k in ("auc_roc", "auc_pr", "vus_pr")
            ),
        ]
        for d in detectors
    ]
    print(f"# Mean over {len(args.series)} series ({', '.join(args.series)})")
    print(markdown_table(["detector", "AUC-ROC", "AUC-PR", "VUS-PR"], rows))
    payload.pop("partial")
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
