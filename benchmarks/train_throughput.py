"""Training throughput of HybridGRU vs transformers' LlamaForCausalLM (SDPA), same width, depth and parameter count.

    python benchmarks/train_throughput.py                       # CPU: seq 256 / 1024 / 4096, batch 8 (~1 h, 2 cores)
    python benchmarks/train_throughput.py --seqs 1024           # one length
    python benchmarks/train_throughput.py --quick               # smoke run, about a minute
    python benchmarks/train_throughput.py --autocast both       # every model in fp32 and under bf16 autocast
    python benchmarks/train_throughput.py --device cuda --dtype bfloat16 --seqs 1024,4096

One step = forward + backward + AdamW on random token ids (labels = inputs), random init, use_cache=False. Models:
Llama and HybridGRU (`gru` and `mingru` variants with pattern GGA, and a pure-GRU pattern G) at width 512, 6 layers,
vocab 8192, SwiGLU 1408, tied embeddings; the GRU width is chosen so every model's parameter count is within 5% of
Llama's (printed). Each model gets `--warmup` untimed steps, then `--reps` timed steps interleaved across models; the
speed-up is the median over repetitions of Llama's step time over the model's, measured in the same process.
MFU = model FLOPs (3x the forward matmul and attention FLOPs) per second over a measured matmul peak (same threads,
same dtype; three 2048^3 matmuls timed as one more entry of the interleaved rounds, so it sees the same load).
"""

import torch
from common import (
    HYBRIDS,
    base_parser,
    build_models,
    interleaved,
    markdown_table,
    median,
    paired_ratio,
    print_header,
    setup,
    write_json,
)
from torch import nn

DEFAULT_REPS = {256: 5, 1024: 5, 4096: 3}  # seq 4096 takes ~1 min a step per model on 2 cores: 3 repetitions
TARGETS = [  # (model, seq, minimum speed-up vs Llama), from the issue; "best" = the fastest hybrid
    ("best", 1024, 1.10),
    ("best", 4096, 1.50),
    ("hybrid-gru", 1024, 0.95),
]


def matmul_run(device: str, dtype: torch.dtype, size: int):
    """A square matmul of `size`, timed among the training steps so it sees the same machine load: the peak."""
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    return lambda: [a @ b for _ in range(3)]


def forward_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Matmul FLOPs of every Linear (LM head included) plus causal attention scores and weighted sums per token."""
    linear = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    config = model.config
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    attention_layers = sum(t != "linear_attention" for t in layer_types)
    head_dim = config.hidden_size // config.num_attention_heads
    average_keys = (seq_len + 1) / 2  # causal: query t sees t keys
    return linear + attention_layers * 4 * config.num_attention_heads * head_dim * average_keys


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor, autocast: bool) -> None:
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--seqs", default="256,1024,4096", help="comma-separated sequence lengths")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--models", default="gru,mingru,pure-mingru", help=f"hybrids among {sorted(HYBRIDS)}")
    parser.add_argument("--autocast", choices=["off", "bf16", "both"], default="off", help="bf16 autocast runs")
    args = parser.parse_args()
    dtype = setup(args)
    if args.quick:
        args.seqs, args.batch = "64,256", 2
    seqs = [int(s) for s in args.seqs.split(",")]
    info = print_header("Training throughput: forward + backward + AdamW, tokens/s", args)
    models = build_models(args.models, args.device, dtype)
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in models.items()}
    peak_size = 2048 if args.device == "cpu" else 8192
    amps = {"off": [False], "bf16": [True], "both": [False, True]}[args.autocast]
    label = {False: "", True: " (bf16 autocast)"}
    peak_runs = {amp: matmul_run(args.device, torch.bfloat16 if amp else dtype, peak_size) for amp in amps}

    rows, results = [], []
    for seq in seqs:
        reps = args.reps or (2 if args.quick else DEFAULT_REPS.get(seq, 5))
        ids = torch.randint(3, models["llama"].config.vocab_size, (args.batch, seq), device=args.device)
        runs = {
            name + label[amp]: (lambda m=model, o=optimizers[name], i=ids, a=amp: train_step(m, o, i, a))
            for amp in amps
            for name, model in models.items()
        }
        runs.update({"matmul peak" + label[amp]: peak_runs[amp] for amp in amps})
        print(f"  seq {seq}: {args.warmup} warm-up + {reps} interleaved repetitions per model ...", flush=True)
        times = interleaved(runs, reps, args.warmup, args.device)
        for amp in amps:
            peak = 3 * 2 * peak_size**3 / median(times.pop("matmul peak" + label[amp]))
            print(f"  matmul peak{label[amp]}, timed among the steps: {peak / 1e9:,.1f} GFLOP/s")
            for name, model in models.items():
                step_times = times[name + label[amp]]
                tokens_per_s = args.batch * seq / median(step_times)
                mfu = 3 * forward_flops_per_token(model, seq) * tokens_per_s / peak
                ratio = paired_ratio(times["llama" + label[amp]], step_times)
                gain = paired_ratio(times[name], step_times) if amp and False in amps else None
                rows.append([
                    seq, name + label[amp], f"{median(step_times) * 1e3:,.0f}", f"{tokens_per_s:,.0f}",
                    f"{ratio:.2f}x", f"{100 * mfu:.1f}%", f"{gain:.2f}x" if gain else "-",
                ])  # fmt: skip
                results.append({
                    "seq": seq, "model": name, "autocast_bf16": amp, "step_s": step_times,
                    "tokens_per_s": tokens_per_s, "speedup_vs_llama": ratio, "mfu": mfu, "peak_flops": peak,
                    "bf16_gain": gain,
                })  # fmt: skip
    print()
    headers = ["seq", "model", "step ms (median)", "tokens/s", "vs llama", "MFU", "bf16 autocast gain"]
    print(markdown_table(headers, rows))
    print()
    print(target_table(results))
    write_json(args.json, {"machine": info, "args": vars(args), "results": results})


def target_table(results: list[dict]) -> str:
    rows = []
    for model, seq, minimum in TARGETS:
        amp = min(r["autocast_bf16"] for r in results)  # the targets are for fp32 when it was run
        found = [r for r in results if r["seq"] == seq and r["model"] != "llama" and r["autocast_bf16"] == amp]
        if model != "best":
            found = [r for r in found if r["model"] == model]
        if not found:
            continue
        best = max(found, key=lambda r: r["speedup_vs_llama"])
        ratio = best["speedup_vs_llama"]
        met = "met" if ratio >= minimum else "NOT met"
        rows.append(
            [f"train tokens/s, seq {seq}, {model}", f">= {minimum:.2f}x", f"{ratio:.2f}x ({best['model']})", met]
        )
    return markdown_table(["target", "wanted", "measured", ""], rows)


if __name__ == "__main__":
    main()
