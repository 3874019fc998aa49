"""Per-token decode time, wall-clock, of a bare `model()` loop against `generate()`, for Llama and the hybrids.

Separates what the models' own forward passes cost per token from what `generate()` adds around them: if the ratio
vs Llama is the same in both columns, `generate()` is not what holds the hybrid back. Then splits one bare loop's
per-token time by part (forward hooks: token mixers by kind, MLPs, norms, LM head, the rest), which shows how much of
Llama's time the hybrid can save at all. Batch 1, dynamic cache, greedy.

    python benchmarks/decode_overhead.py --threads 1 --context 1024
"""

import collections
import itertools
import time
from collections.abc import Callable

import torch
from common import (
    HYBRIDS,
    StepClock,
    base_parser,
    build_models,
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
def decode_steps(
    model, prompt: torch.Tensor, new_tokens: int, device: str, after_prefill: Callable[[], object] = lambda: None
) -> list[float]:
    """Greedy decoding by hand after a prefill: one `model()` call per token with a growing 2-D mask. Returns the
    seconds of each step; `after_prefill()` runs between the prefill and the first step."""
    mask = torch.ones_like(prompt)
    out = model(prompt, attention_mask=mask, cache=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
    token, gaps = out.logits[:, -1:].argmax(-1), []
    after_prefill()
    for _ in range(new_tokens):
        synchronize(device)
        start = time.perf_counter()
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = model(token, attention_mask=mask, cache=out.cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1:].argmax(-1)
        synchronize(device)
        gaps.append(time.perf_counter() - start)
    return gaps


def loop_token_seconds(model, prompt: torch.Tensor, new_tokens: int, device: str) -> float:
    """Median seconds per token of the bare decoding loop."""
    return median(decode_steps(model, prompt, new_tokens, device))


@torch.no_grad()
def generate_token_seconds(model, prompt: torch.Tensor, new_tokens: int, device: str) -> float:
    """Median gap between consecutive tokens' logits inside `generate()` (dynamic cache, greedy)."""
    clock = StepClock(device)
    model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1,
        do_sample=False, pad_token_id=0, logits_processor=LogitsProcessorList([clock]), disable_compile=True,
    )  # fmt: skip
    return median([b - a for a, b in itertools.pairwise(clock.stamps)])


def part_of(name: str, module: torch.nn.Module) -> str | None:
    """Which part of a decoder a module is, for the per-token breakdown (None: counted in its parent or the rest)."""
    kind = type(module).__name__
    if name.endswith((".mixer", ".self_attn")):
        return "attention layers" if "Attention" in kind else "GRU layers"
    if name.endswith(".mlp"):
        return "MLPs"
    if name.endswith(("input_layernorm", "post_attention_layernorm")):
        return "norms"
    return "LM head" if name == "lm_head" else None


def breakdown(model, prompt: torch.Tensor, new_tokens: int, device: str) -> dict[str, float]:
    """Milliseconds per decoded token in each part of the bare loop, plus `total` and `rest` (embedding, masks,
    positions, the final norm, Python glue). Hooks synchronise on a GPU and add a little time of their own."""
    spent, handles = collections.defaultdict(float), []
    for name, module in model.named_modules():
        part = part_of(name, module)
        if part is None:
            continue

        def start(module, args):
            synchronize(device)
            module._benchmark_start = time.perf_counter()

        def stop(module, args, output, part=part):
            synchronize(device)
            spent[part] += time.perf_counter() - module._benchmark_start

        handles += [module.register_forward_pre_hook(start), module.register_forward_hook(stop)]
    try:
        decode_steps(model, prompt, 2, device)  # warm-up
        steps = decode_steps(model, prompt, new_tokens, device, after_prefill=spent.clear)
    finally:
        for handle in handles:
            handle.remove()
    per_token = {part: 1000 * seconds / new_tokens for part, seconds in spent.items()}
    per_token["total"] = 1000 * sum(steps) / new_tokens
    per_token["rest"] = per_token["total"] - sum(v for k, v in per_token.items() if k != "total")
    return per_token


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
    models = build_models(args.models, args.device, dtype, training=False)
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

    parts = ["attention layers", "GRU layers", "MLPs", "norms", "LM head", "rest", "total"]
    split = {name: breakdown(model, prompt, args.new_tokens, args.device) for name, model in models.items()}
    print("\nOne bare loop split by part (ms per token; hooks add a little):")
    table = [[name, *(f"{split[name].get(part, 0.0):.2f}" for part in parts)] for name in models]
    print(markdown_table(["model", *parts], table))
    write_json(args.json, {"machine": info, "args": vars(args), "results": results, "breakdown_ms": split})


if __name__ == "__main__":
    main()
