"""hf_gru.tasks.anomaly and examples/detect_anomalies.py: streaming == offline, missing points, thresholds, save/load,
the CSV checks of the example (errors name the file and the column; nothing written), and an end-to-end run (slow)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForTimeSeriesPrediction, TrainingArguments

from hf_gru.tasks.anomaly import (
    CenteredMean,
    DetectorState,
    HybridGRUAnomalyDetector,
    TooFewExcessesError,
    pot_threshold,
    quantile_threshold,
    read_timeeval_csv,
    robust_location_scale,
)
from hf_gru.tasks.anomaly import detector as anomaly_detector
from tests.helpers import REPO

CONTEXT, CHANNELS = 8, 2
TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, block_pattern="GL")


def load_example():
    spec = importlib.util.spec_from_file_location("detect_anomalies", REPO / "examples" / "detect_anomalies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_detector(
    channels: int = CHANNELS, smoothing_window: int = 5, nearest_state: bool = False
) -> HybridGRUAnomalyDetector:
    """A tiny untrained detector with a hand-set calibration (the scoring arithmetic does not care about training);
    `nearest_state`: with the nearest-state term, against 40 random reference states and a 3-step warm-up scale."""
    detector = HybridGRUAnomalyDetector.from_config(channels, CONTEXT, seed=0, **TINY)
    detector.model.eval()
    detector.state = DetectorState(
        loc=[0.5] * channels, scale=[2.0] * channels, residual_median=[0.1] * channels,
        residual_scale=[0.7] * channels, smoothing_window=smoothing_window, threshold=1.5, threshold_method="quantile",
    )  # fmt: skip
    if nearest_state:
        hidden_size = detector.model.config.hidden_size
        rng = np.random.default_rng(0)
        detector.reference_states = rng.standard_normal((channels, 40, hidden_size)).astype(np.float32)
        detector.state.state_distance_median, detector.state.state_distance_scale = [3.0] * channels, [0.5] * channels
        detector.state.warmup_state_distance_scale = [[2.0] * channels, [1.0] * channels, [0.6] * channels]
    return detector


def signal(length: int, channels: int = CHANNELS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    return (np.sin(t / 3.0 + np.arange(channels)) + 0.1 * rng.standard_normal((length, channels))).astype(np.float32)


def streamed(detector, series, sizes, mask=None, stepwise=False) -> np.ndarray:
    scorer, out, start = detector.stream(stepwise), [], 0
    for size in sizes:
        chunk_mask = None if mask is None else mask[start : start + size]
        out.append(scorer.update(series[start : start + size], chunk_mask))
        start += size
    assert start == len(series)
    return np.concatenate(out + [scorer.flush()])


@pytest.mark.parametrize("chunking", ["ones", "sevens", "random", "one-chunk"])
@pytest.mark.parametrize("forward_steps", [4096, 4])
@pytest.mark.parametrize("nearest_state", [False, True])
def test_batched_scores_equal_the_stepwise_loop(chunking, forward_steps, nearest_state, monkeypatch, one_torch_thread):
    """The batched scorer (forwards of up to `SCORING_CHUNK` steps, each giving every step's forecast and state at
    once) gives the scores of the reference loop (one forward per step), offline and streamed in chunks of any size,
    with and without the nearest-state term."""
    monkeypatch.setattr(anomaly_detector, "SCORING_CHUNK", forward_steps)
    detector, series = make_detector(nearest_state=nearest_state), signal(30)
    reference = detector.score(series, stepwise=True)
    assert reference.shape == (30,) and np.isfinite(reference).all()
    np.testing.assert_allclose(streamed(detector, series, [1] * 30, stepwise=True), reference, rtol=0, atol=1e-6)
    sizes = {"ones": [1] * 30, "sevens": [7, 7, 7, 7, 2], "random": [3, 11, 1, 9, 6], "one-chunk": [30]}[chunking]
    np.testing.assert_allclose(detector.score(series), reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(streamed(detector, series, sizes), reference, rtol=0, atol=1e-5)


def test_residuals_and_states_are_the_forecasting_heads_one_shot_ones(one_torch_thread):
    """The cached one-step loop gives the forecast of one call over [padding, x_0..x_{t-1}], and the state after step
    t of one call over [padding, x_0..x_t], for every t."""
    detector, series = make_detector(), signal(12)
    residuals, states = detector.stream().advance(series, np.ones_like(series))
    assert states.shape == (12, CHANNELS, TINY["hidden_size"])
    standardised = torch.as_tensor((series - 0.5) / 2.0)
    padded = torch.cat([torch.zeros(CONTEXT, CHANNELS), standardised])
    observed = torch.cat([torch.zeros(CONTEXT, CHANNELS), torch.ones(len(series), CHANNELS)])
    with torch.no_grad():
        for t in (0, 1, 5, 11):
            out = detector.model(
                past_values=padded[None, : CONTEXT + t], past_observed_mask=observed[None, : CONTEXT + t]
            )
            expected = standardised[t] - out.prediction_outputs[0, 0]
            np.testing.assert_allclose(residuals[t], expected.numpy(), atol=1e-5)
            out = detector.model(
                past_values=padded[None, : CONTEXT + t + 1], past_observed_mask=observed[None, : CONTEXT + t + 1]
            )
            np.testing.assert_allclose(states[t], out.forecast_hidden_states[0, :, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize("nearest_state", [False, True])
def test_masked_points_are_ignored_and_unmasked_nan_is_refused(nearest_state, one_torch_thread):
    detector, series = make_detector(nearest_state=nearest_state), signal(20)
    mask = np.ones_like(series)
    mask[3:6, 0] = 0  # one channel missing
    mask[10:12] = 0  # every channel missing
    with_nan, with_junk = series.copy(), series.copy()
    with_nan[mask == 0], with_junk[mask == 0] = np.nan, 1e6
    scores = detector.score(with_nan, mask)
    np.testing.assert_array_equal(scores, detector.score(with_junk, mask))
    reference = detector.score(with_nan, mask, stepwise=True)  # two channels, missing points: batched == stepwise
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(streamed(detector, with_nan, [4, 1, 9, 6], mask), reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(streamed(detector, with_junk, [20], mask, stepwise=True), reference, rtol=0, atol=1e-6)
    unsmoothed = make_detector(smoothing_window=1)
    assert (unsmoothed.score(with_nan, mask)[10:12] == 0).all()  # nothing observed: nothing anomalous
    with pytest.raises(ValueError, match="NaN or inf values at observed points.*time step 3"):
        detector.score(with_nan)


def test_bad_series_shapes_are_value_errors():
    detector = make_detector()
    with pytest.raises(ValueError, match="3 channel"):
        detector.score(np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        detector.score(np.zeros((0,), np.float32))
    uncalibrated = HybridGRUAnomalyDetector.from_config(1, CONTEXT, **TINY)
    with pytest.raises(ValueError, match="not calibrated"):
        uncalibrated.score(np.zeros(10, np.float32))


@pytest.mark.parametrize("sizes", [[103], [1] * 103, [7] * 14 + [5], [3, 50, 1, 49]])
@pytest.mark.parametrize("window", [1, 2, 5, 50])
def test_centered_mean_matches_a_direct_computation(sizes, window):
    values = np.random.default_rng(0).random(103)
    before, after = window // 2, window - 1 - window // 2
    expected = [values[max(t - before, 0) : t + after + 1].mean() for t in range(103)]
    smoother, out, start = CenteredMean(window), [], 0
    for size in sizes:
        out.append(smoother.push(values[start : start + size]))
        start += size
    np.testing.assert_allclose(np.concatenate(out + [smoother.flush()]), expected, rtol=1e-12)


def test_robust_scale_and_thresholds():
    rng = np.random.default_rng(0)
    residuals = np.stack([rng.normal(1.0, 2.0, 20_000), rng.normal(-1.0, 0.5, 20_000)], axis=1)
    residuals[:100, 0] = 1e3  # outliers barely move the median and MAD
    median, scale = robust_location_scale(residuals, np.ones_like(residuals))
    np.testing.assert_allclose(median, [1.0, -1.0], atol=0.05)
    np.testing.assert_allclose(scale, [2.0, 0.5], rtol=0.05)

    scores = np.random.default_rng(2).exponential(1.0, 50_000)
    assert quantile_threshold(scores, 0.99) == pytest.approx(np.log(100), rel=0.05)
    # Exp(1) has a generalised Pareto tail with shape 0: the risk-r quantile is ln(1 / r); at r = 1e-5 (below one
    # sample in 50,000) POT extrapolates past the data. Over seeds 0-4 the estimates were within 8% of it.
    assert pot_threshold(scores, risk=1e-4) == pytest.approx(np.log(1e4), rel=0.05)
    assert pot_threshold(scores, risk=1e-5) == pytest.approx(np.log(1e5), rel=0.1)
    with pytest.raises(TooFewExcessesError):
        pot_threshold(scores[:300], risk=1e-3)
    with pytest.raises(ValueError, match="quantile"):
        quantile_threshold(scores, 1.0)


def test_context_corruption_changes_one_segment_of_the_context_and_never_the_target():
    """NextStepWindows(corrupt_probability=...): off, the windows are those of a detector trained before it (same
    padding draws); on, each corrupted window differs from the clean one in one run of at most context // 2 steps,
    its target and masks untouched."""
    context, series = 20, torch.randn(300, 2).numpy()
    observed = np.ones_like(series)
    clean = anomaly_detector.NextStepWindows(series, observed, context, 1, pad_probability=0.3, seed=3)
    off = anomaly_detector.NextStepWindows(series, observed, context, 1, 0.3, seed=3, corrupt_probability=0.0)
    on = anomaly_detector.NextStepWindows(series, observed, context, 1, 0.3, seed=3, corrupt_probability=1.0)
    assert torch.equal(clean.pad_lengths, off.pad_lengths) and torch.equal(clean.pad_lengths, on.pad_lengths)
    kinds = set()
    for index in range(0, len(clean), 7):
        a, b, c = clean[index], off[index], on[index]
        for key in a:
            assert torch.equal(a[key], b[key]), key
            if key != "past_values":
                assert torch.equal(a[key], c[key]), key
        changed = (a["past_values"] != c["past_values"]).any(-1).nonzero().flatten()
        assert 1 <= len(changed) <= context // 2 or len(changed) == 0  # a copied segment may equal the original
        if len(changed):
            assert changed[-1] - changed[0] < context // 2, changed  # one run
        kinds.add(bool(on.corrupt_noise[index]))
    assert kinds == {True, False}  # both kinds: additive noise and a segment from elsewhere in the series
    with pytest.raises(ValueError, match="corrupt_probability.*1.5"):
        make_detector().fit(series, TrainingArguments("unused", report_to="none"), corrupt_probability=1.5)


def test_fit_with_trainer_calibrates_on_held_out_normal_data(tmp_path, one_torch_thread):
    detector = HybridGRUAnomalyDetector.from_config(1, CONTEXT, seed=0, **TINY)
    train = signal(120, channels=1)
    args = TrainingArguments(tmp_path, max_steps=3, per_device_train_batch_size=8, report_to="none",
                             save_strategy="no", use_cpu=True, disable_tqdm=True)  # fmt: skip
    trainer = detector.fit(train, args, validation_fraction=0.25, smoothing_window=3, threshold_method="pot")
    assert trainer.state.global_step == 3
    state = detector.state
    assert state.loc[0] == pytest.approx(train[:90].mean(), rel=1e-5)  # standardisation from the training part only
    assert state.smoothing_window == 3 and len(state.residual_scale) == 1
    assert state.threshold_method == "quantile"  # 30 held-out scores: too few for POT, the fallback is recorded
    # the reference: the states of the 90 training steps, then of the 30 held-out ones, one per step and channel
    assert detector.reference_states.shape == (1, 120, TINY["hidden_size"])
    assert len(state.state_distance_scale) == 1 and np.array(state.warmup_state_distance_scale).shape == (CONTEXT, 1)
    held_out = detector.calibrate(train[90:], None, train[:90], None, smoothing_window=3, threshold_method="quantile",
                                  quantile=0.9)  # fmt: skip
    assert state.threshold == pytest.approx(np.quantile(held_out, 0.9))
    residual_only = detector.calibrate(
        train[90:], smoothing_window=3, threshold_method="quantile", nearest_state=False
    )
    assert detector.reference_states is None and state.state_distance_scale == []
    assert (np.abs(residual_only - held_out) > 1e-3).any()
    with pytest.raises(ValueError, match="warmup_series"):
        detector.calibrate(train[90:], threshold_method="quantile")  # nearest_state needs normal states to compare to


def periodic(length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return (np.sin(2 * np.pi * t / 25) + 0.5 * np.sin(2 * np.pi * t / 7) + 0.05 * rng.standard_normal(length)).astype(
        np.float32
    )


RECOVERY_STEPS = 10  # README: unsmoothed residual scores fall back below the threshold within 10 steps of a spike


def test_warm_up_and_recovery_after_a_spike(tmp_path, one_torch_thread):
    """A detector trained on a periodic signal scores a fresh stream with one spike: the spike has the top score, the
    scores are back below the threshold within `context_length` steps after it (the model state, which the nearest-
    state term measures, holds the spike while the attention window sees it), and within RECOVERY_STEPS steps with the
    residual term alone. The stream's first steps (short context) score like the rest thanks to the warm-up scales;
    without the residual one they score higher and raise an alarm (here 0.85 and 1.47 on average, against 0.83 over
    the normal steps after them)."""
    context, spike = 25, 300
    detector = HybridGRUAnomalyDetector.from_config(1, context, seed=0, **dict(TINY, num_hidden_layers=3))
    args = TrainingArguments(tmp_path, max_steps=150, per_device_train_batch_size=16, learning_rate=3e-3,
                             lr_scheduler_type="cosine", warmup_steps=10, report_to="none", save_strategy="no",
                             use_cpu=True, disable_tqdm=True, seed=0)  # fmt: skip
    train = periodic(1500, seed=0)
    options = dict(smoothing_window=1, threshold_method="quantile", quantile=0.999)
    detector.fit(train, args, **options)
    for scale, stationary in (
        ("warmup_residual_scale", "residual_scale"),
        ("warmup_state_distance_scale", "state_distance_scale"),
    ):
        warmup_scale = np.array(getattr(detector.state, scale))
        assert warmup_scale.shape == (context, 1) and (np.diff(warmup_scale, axis=0) <= 0).all()
        assert (warmup_scale >= np.array(getattr(detector.state, stationary))).all()

    test = periodic(600, seed=1)
    test[spike] += 5.0
    for nearest_state, recovery in ((True, context), (False, RECOVERY_STEPS)):
        detector.calibrate(train[1200:], None, train[:1200], None, nearest_state=nearest_state, **options)
        scores, threshold = detector.score(test), detector.threshold
        assert scores.argmax() == spike and scores[spike] > 3 * threshold
        assert (scores[spike + recovery : spike + recovery + 50] < threshold).all()
        normal = scores[context:spike]
        assert scores[:context].mean() < 1.2 * normal.mean() and scores[:context].max() < threshold
    detector.state.warmup_residual_scale = []  # the stationary scale from the first step, as detectors saved before
    cold = detector.score(test)
    assert cold[:context].mean() > 1.5 * normal.mean() and cold[:context].max() > threshold  # a false alarm
    np.testing.assert_allclose(cold[context:], scores[context:], rtol=0, atol=1e-10)


def test_save_load_round_trip(tmp_path, one_torch_thread):
    detector, series = make_detector(nearest_state=True), signal(15)
    detector.save_pretrained(tmp_path / "detector")
    loaded = HybridGRUAnomalyDetector.from_pretrained(tmp_path / "detector")
    assert loaded.state == detector.state
    np.testing.assert_array_equal(loaded.reference_states, detector.reference_states)
    np.testing.assert_allclose(loaded.score(series), detector.score(series), rtol=1e-6)  # float32 kernels may differ
    reference_file = tmp_path / "detector" / "anomaly_reference_states.safetensors"
    make_detector().save_pretrained(tmp_path / "detector")  # no nearest-state term: its stale reference goes
    assert not reference_file.exists() and HybridGRUAnomalyDetector.from_pretrained(tmp_path / "detector").score(
        series
    ).shape == (15,)
    detector.save_pretrained(tmp_path / "detector")
    reference_file.unlink()
    with pytest.raises(ValueError, match="anomaly_reference_states.safetensors"):
        HybridGRUAnomalyDetector.from_pretrained(tmp_path / "detector")
    detector = make_detector()
    detector.save_pretrained(tmp_path / "detector")
    model = AutoModelForTimeSeriesPrediction.from_pretrained(tmp_path / "detector")  # a plain model folder too
    assert type(model).__name__ == "HybridGRUForTimeSeriesPrediction"
    with pytest.raises(ValueError, match="anomaly_detector.json"):
        HybridGRUAnomalyDetector.from_pretrained(tmp_path)
    # A detector saved before the warm-up scale existed loads and scores with the stationary scale throughout.
    state_file = tmp_path / "detector" / "anomaly_detector.json"
    saved = json.loads(state_file.read_text())
    saved.pop("warmup_residual_scale")
    state_file.write_text(json.dumps(saved))
    assert HybridGRUAnomalyDetector.from_pretrained(tmp_path / "detector").state.warmup_residual_scale == []


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


GOOD_ROWS = [f"{i},{np.sin(i / 3):.4f},{i % 7:.1f},0" for i in range(40)]


@pytest.mark.parametrize(
    "header, rows, match",
    [
        ("time,a,b,is_anomaly", GOOD_ROWS, "no column 'timestamp'"),
        ("timestamp,is_anomaly", [f"{i},0" for i in range(40)], "no value column"),
        ("timestamp,a,b,is_anomaly", GOOD_ROWS[:5] + ["5,abc,1.0,0"] + GOOD_ROWS[6:], "column 'a'.*'abc'.*row 7"),
        ("timestamp,a,b,is_anomaly", GOOD_ROWS[:5] + ["5,1.0,,0"] + GOOD_ROWS[6:], "column 'b'.*''"),
        ("timestamp,a,b,is_anomaly", GOOD_ROWS[:5] + ["5,1.0,2.0,2"] + GOOD_ROWS[6:], "column 'is_anomaly'.*'2'"),
    ],
)
def test_csv_reader_names_the_file_and_column(tmp_path, header, rows, match):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(ValueError, match=match) as error:
        read_timeeval_csv(path)
    assert str(path) in str(error.value)


def test_csv_reader_reads_values_and_labels(tmp_path):
    data = read_timeeval_csv(write_csv(tmp_path / "ok.csv", "timestamp,a,b,is_anomaly", GOOD_ROWS))
    assert data.value_columns == ["a", "b"] and data.values.shape == (40, 2) and data.values.dtype == np.float32
    assert data.labels.tolist() == [0] * 40 and data.timestamps[3] == "3"
    with pytest.raises(ValueError, match="differ from the training file"):
        read_timeeval_csv(tmp_path / "ok.csv", value_columns=["a"])


@pytest.mark.parametrize(
    "test_header, test_rows, match",
    [
        ("timestamp,a,b", [f"{i},1.0,2.0" for i in range(5)], "test.csv: 5 rows.*shorter than --context_length 8"),
        ("timestamp,a,c", [f"{i},1.0,2.0" for i in range(40)], "test.csv: value columns"),
        ("timestamp,a,b,is_anomaly", [f"{i},1.0,x,0" for i in range(40)], "test.csv: column 'b'"),
    ],
)
def test_example_validates_before_writing(tmp_path, test_header, test_rows, match):
    example = load_example()
    train = write_csv(tmp_path / "train.csv", "timestamp,a,b,is_anomaly", GOOD_ROWS)
    test = write_csv(tmp_path / "test.csv", test_header, test_rows)
    output_dir = tmp_path / "out"
    argv = ["--train_file", str(train), "--test_file", str(test), "--output_dir", str(output_dir),
            "--context_length", str(CONTEXT), "--max_steps", "1"]  # fmt: skip
    with pytest.raises(ValueError, match=match):
        example.main(argv)
    assert not output_dir.exists()


def test_example_refuses_a_non_empty_output_dir(tmp_path):
    example = load_example()
    train = write_csv(tmp_path / "train.csv", "timestamp,a,b,is_anomaly", GOOD_ROWS)
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("mine")
    argv = ["--train_file", str(train), "--test_file", str(train), "--output_dir", str(output_dir),
            "--context_length", str(CONTEXT)]  # fmt: skip
    with pytest.raises(ValueError, match="not empty.*--overwrite_output_dir"):
        example.main(argv)
    assert [p.name for p in output_dir.iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_example_end_to_end_on_an_ecg_slice(tmp_path, one_torch_thread):
    """The first 2,000 rows of aeon's ECG parts (one anomalous heartbeat in the test slice), 30 training steps."""
    pytest.importorskip("aeon", reason="the ECG data and the metrics come from aeon (pip install 'hf_gru[anomaly]')")
    from hf_gru.tasks.anomaly import aeon_anomaly_csv

    paths = {}
    for part in ("TRAIN_NA", "TEST"):
        lines = aeon_anomaly_csv(part=part).read_text().splitlines()[:2001]
        paths[part] = write_csv(tmp_path / f"{part}.csv", lines[0], lines[1:])
    output_dir = tmp_path / "out"
    argv = ["--train_file", str(paths["TRAIN_NA"]), "--test_file", str(paths["TEST"]), "--output_dir",
            str(output_dir), "--max_steps", "30", "--context_length", "100"]  # fmt: skip
    metrics = load_example().main(argv)
    assert {"auc_roc", "auc_pr", "vus_pr", "precision", "recall", "f1", "range_f1"} <= set(metrics)
    assert json.loads((output_dir / "metrics.json").read_text()) == metrics
    scores = (output_dir / "scores.csv").read_text().splitlines()
    assert scores[0] == "timestamp,score" and len(scores) == 2001
    assert (output_dir / "scores.png").stat().st_size > 10_000
    assert "auc_pr" in (output_dir / "model" / "README.md").read_text()  # model card with the metrics
    loaded = HybridGRUAnomalyDetector.from_pretrained(output_dir / "model")
    assert loaded.threshold == metrics["threshold"]
