"""Per-token decode time, wall-clock, of a bare `model()` loop against `generate()`, for Llama and the hybrids.

Separates what the models' own forward passes cost per token from what `generate()` adds around them: if the ratio
vs Llama is the same in both columns, `generate()` is not what holds the hybrid back. Batch 1, dynamic cache, greedy.

    python benchmarks/decode_overhead.py --threads 1 --context 1024
"""

import itertools
import time

import torch
from common import (
    HYBRIDS,
    LLAMA,
    StepClock,
    base_parser,
    build,
    describe,
    interleaved,
    markdown_table,
    median,
    paired_ratio,
    print_header,
    setup,
    synchronize,
    write_json,
)
from transformers import DynamicCache, LogitsProcessorList


@torch.no_grad()
def loop_token_seconds(model, prompt: torch.Tensor, new_tokens: int, device: str) -> float:
    """Median seconds per token of greedy decoding by hand: one `model()` call per token, growing 2-D mask."""
    mask = torch.ones_like(prompt)
    out = model(prompt, attention_mask=mask, cache=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
    token, gaps = out.logits[:, -1:].argmax(-1), []
    for _ in range(new_tokens):
        synchronize(device)
        start = time.perf_counter()
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = model(token, attention_mask=mask, cache=out.cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1:].argmax(-1)
        synchronize(device)
        gaps.append(time.perf_counter() - start)
    return median(gaps)


@torch.no_grad()
def generate_token_seconds(model, prompt: torch.Tensor, new_tokens: int, device: str) -> float:
    """Median gap between consecutive tokens' logits inside `generate()` (dynamic cache, greedy)."""
    clock = StepClock(device)
    model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1,
        do_sample=False, pad_token_id=0, logits_processor=LogitsProcessorList([clock]), disable_compile=True,
    )  # fmt: skip
    return median([b - a for a, b in itertools.pairwise(clock.stamps)])


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--context", type=int, default=1024, help="prompt length")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--models", default="mingru,gru", help=f"hybrids among {sorted(HYBRIDS)}")
    args = parser.parse_args()
    dtype = setup(args)
    if args.quick:
        args.context, args.new_tokens = 64, 4
    reps = args.reps or (2 if args.quick else 5)
    info = print_header("Per-token decode: bare model() loop vs generate()", args)
    specs = [LLAMA] + [HYBRIDS[name] for name in args.models.split(",")]
    models = {spec.name: build(spec, args.device, dtype).eval() for spec in specs}
    describe(models)
    prompt = torch.randint(3, models["llama"].config.vocab_size, (1, args.context), device=args.device)

    times = {}
    for mode, measure in (("loop", loop_token_seconds), ("generate", generate_token_seconds)):
        runs = {
            name: (lambda m=model, f=measure: f(m, prompt, args.new_tokens, args.device))
            for name, model in models.items()
        }
        times[mode] = interleaved(runs, reps, args.warmup, args.device, timer=lambda run: run())
    rows, results = [], []
    for name in models:
        row = {"model": name}
        for mode in ("loop", "generate"):
            row[f"{mode}_ms"] = 1000 * median(times[mode][name])
            row[f"{mode}_speedup"] = paired_ratio(times[mode]["llama"], times[mode][name])
        row["generate_overhead_ms"] = row["generate_ms"] - row["loop_ms"]
        results.append({**row, "runs": {mode: times[mode][name] for mode in times}})
        rows.append([name, f"{row['loop_ms']:.2f}", f"{row['loop_speedup']:.2f}x", f"{row['generate_ms']:.2f}",
                     f"{row['generate_speedup']:.2f}x", f"{row['generate_overhead_ms']:+.2f}"])  # fmt: skip
    print(
        f"\ncontext {args.context}, batch 1, dynamic cache, {args.new_tokens} tokens, median of {reps} interleaved reps"
    )
    headers = [
        "model",
        "loop ms/token",
        "loop vs llama",
        "generate ms/token",
        "generate vs llama",
        "generate - loop ms",
    ]
    print(markdown_table(headers, rows))
    write_json(args.json, {"machine": info, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
