"""Decode latency, decode and prefill tokens/s, and cache bytes of HybridGRU vs Llama through `generate()`.

    python benchmarks/decode_latency.py                  # CPU: contexts 256..8192 at batch 1, 256..4096 at batch 8
    python benchmarks/decode_latency.py --quick          # smoke run, about a minute
    python benchmarks/decode_latency.py --contexts 1024,8192 --batches 1
    python benchmarks/decode_latency.py --device cuda --dtype bfloat16

Each measurement is one greedy `generate()` call on a random prompt of `context` tokens per row, with the default
dynamic cache or `cache_implementation="static"`, for the same size-matched models as train_throughput.py (random
init, tied embeddings). A logits processor stamps the clock at every generated token: prefill = time to the first
token, per-token latency = median gap between the following tokens (so the prefill is never counted as decoding).
`--new-tokens` tokens are forced (min_new_tokens) so every call decodes the same count; a static cache is sized to
each call's prompt + new tokens (generate would keep the largest size seen before); torch.compile stays off in
generate for both models (`disable_compile=True`), so both run eagerly. Repetitions are interleaved across models
and speed-ups are medians of per-repetition ratios against Llama. Cache bytes are read off the returned cache.
"""

import itertools
import time

import torch
from common import (
    HYBRIDS,
    StepClock,
    base_parser,
    build_models,
    cache_bytes,
    interleaved,
    markdown_table,
    median,
    paired_ratio,
    print_header,
    setup,
    synchronize,
    write_json,
)
from transformers import LogitsProcessorList

TARGETS = [  # (what, context, batch, cache or None for the better of the two, minimum ratio vs Llama)
    ("decode tokens/s", 1024, 1, None, 1.3),
    ("decode tokens/s", 8192, 1, None, 2.0),
    ("prefill tokens/s", 1024, 1, None, 0.9),
]


def timed_generate(model, prompt: torch.Tensor, new_tokens: int, cache: str, device: str) -> dict:
    clock = StepClock(device)
    kwargs = {} if cache == "dynamic" else {"cache_implementation": cache}
    # generate() sizes a static cache to the largest length any earlier call used (to spare torch.compile a
    # recompile); size it to this call, so each row measures its own context
    model._previous_max_cache_length = -1
    synchronize(device)
    start = time.perf_counter()
    out = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        do_sample=False, pad_token_id=0, logits_processor=LogitsProcessorList([clock]), disable_compile=True,
        return_dict_in_generate=True, **kwargs,
    )  # fmt: skip
    gaps = [b - a for a, b in itertools.pairwise(clock.stamps)]
    return {"prefill_s": clock.stamps[0] - start, "token_s": median(gaps), "cache": cache_bytes(out.cache)}


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--contexts", default="256,1024,4096,8192", help="prompt lengths at batch 1")
    parser.add_argument("--batch8-contexts", default="256,1024,4096", help="prompt lengths at batch 8")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--caches", default="dynamic,static")
    parser.add_argument("--models", default="mingru,gru", help=f"hybrids among {sorted(HYBRIDS)}")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    dtype = setup(args)
    if args.quick:
        args.contexts, args.batch8_contexts, args.new_tokens = "64,256", "64", 8
    info = print_header("Decode latency through generate(): prefill, per-token latency, cache bytes", args)
    models = build_models(args.models, args.device, dtype, training=False)

    cases = []
    for batch in (int(b) for b in args.batches.split(",")):
        contexts = args.contexts if batch == 1 else args.batch8_contexts
        cases += [(context, batch) for context in (int(c) for c in contexts.split(",") if c)]
    rows, results = [], []
    for context, batch in cases:
        prompt = torch.randint(3, models["llama"].config.vocab_size, (batch, context), device=args.device)
        for cache in args.caches.split(","):
            reps = args.reps or (2 if args.quick else 5 if context <= 1024 else 3)
            runs = {
                name: (lambda m=model, p=prompt, c=cache: timed_generate(m, p, args.new_tokens, c, args.device))
                for name, model in models.items()
            }
            print(f"  context {context}, batch {batch}, {cache} cache: {reps} repetitions ...", flush=True)
            with torch.no_grad():
                measured = interleaved(runs, reps, args.warmup, args.device, timer=lambda run: run())
            llama = measured["llama"]
            for name, runs_of_model in measured.items():
                token_s = median([m["token_s"] for m in runs_of_model])
                prefill_s = median([m["prefill_s"] for m in runs_of_model])
                decode_ratio = paired_ratio([m["token_s"] for m in llama], [m["token_s"] for m in runs_of_model])
                prefill_ratio = paired_ratio([m["prefill_s"] for m in llama], [m["prefill_s"] for m in runs_of_model])
                held = runs_of_model[-1]["cache"]
                total = held["attention"] + held["gru"]
                cache_ratio = total / sum(llama[-1]["cache"].values())
                rows.append([
                    context, batch, cache, name, f"{token_s * 1e3:.1f}", f"{batch / token_s:,.1f}",
                    f"{decode_ratio:.2f}x", f"{batch * context / prefill_s:,.0f}", f"{prefill_ratio:.2f}x",
                    f"{total / 2**20:.1f}", f"{cache_ratio:.2f}x",
                ])  # fmt: skip
                results.append({
                    "context": context, "batch": batch, "cache": cache, "model": name, "token_s": token_s,
                    "decode_tokens_per_s": batch / token_s, "decode_speedup": decode_ratio,
                    "prefill_tokens_per_s": batch * context / prefill_s, "prefill_speedup": prefill_ratio,
                    "cache_bytes": held, "cache_ratio": cache_ratio,
                    "runs": [{k: v for k, v in m.items() if k != "cache"} for m in runs_of_model],
                })  # fmt: skip
    headers = [
        "context", "batch", "cache", "model", "ms/token", "decode tok/s", "decode vs llama", "prefill tok/s",
        "prefill vs llama", "cache MiB", "cache vs llama",
    ]  # fmt: skip
    print()
    print(markdown_table(headers, rows))
    print()
    print(target_table(results))
    write_json(args.json, {"machine": info, "args": vars(args), "results": results})


def target_table(results: list[dict]) -> str:
    rows = []
    for what, context, batch, cache, minimum in TARGETS:
        key = "decode_speedup" if what.startswith("decode") else "prefill_speedup"
        found = [r for r in results if (r["context"], r["batch"]) == (context, batch) and r["model"] != "llama"]
        found = [r for r in found if cache is None or r["cache"] == cache]
        if not found:
            continue
        best = max(found, key=lambda r: r[key])
        met = "met" if best[key] >= minimum else "NOT met"
        where = f"{best['model']}, {best['cache']} cache"
        rows.append(
            [f"{what}, context {context}, batch {batch}", f">= {minimum:.2f}x", f"{best[key]:.2f}x ({where})", met]
        )
    return markdown_table(["target", "wanted", "measured", ""], rows)


if __name__ == "__main__":
    main()
