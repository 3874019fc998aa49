"""Memory of HybridGRU vs Llama: cache bytes versus context length, and peak memory of a training step versus length.

    python benchmarks/memory.py                     # CPU: cache at 256..8192, training at 256/1024/4096, batch 1
    python benchmarks/memory.py --quick             # smoke run, about a minute
    python benchmarks/memory.py --device cuda --dtype bfloat16

Cache: one prefill of `context` random tokens (batch 1) with the default dynamic cache and with a static cache sized to
the context; the bytes are read off the tensors the cache holds, split into attention KV and GRU state (short-conv
inputs + recurrent state). Training: each (model, length) runs in a fresh subprocess: build the model and AdamW, one
warm-up step (allocates the optimizer state), then the peak memory of one more step (forward + backward + AdamW) over
the memory held before it: peak resident set size on CPU (Linux VmHWM, reset through /proc/self/clear_refs), peak
allocated bytes on CUDA. Same size-matched models as train_throughput.py.
"""

import argparse
import json
import re
import subprocess
import sys

import torch
from common import (
    HYBRIDS,
    LLAMA,
    base_parser,
    build,
    build_models,
    cache_bytes,
    markdown_table,
    print_header,
    setup,
    write_json,
)
from transformers import StaticCache

TARGET_CACHE_RATIO, TARGET_CONTEXT = 0.35, 4096  # pattern GGA: cache <= 0.35x Llama's at context 4096


def spec_of(name: str):
    return LLAMA if name == "llama" else next(s for s in HYBRIDS.values() if s.name == name)


def prefill_cache(model, context: int, static: bool, device: str) -> dict[str, int]:
    ids = torch.randint(3, model.config.vocab_size, (1, context), device=device)
    cache = StaticCache(config=model.config, max_cache_len=context) if static else None
    with torch.no_grad():
        out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    return cache_bytes(out.cache if cache is None else cache)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def train_child(args) -> None:
    """Runs in a subprocess: prints {"peak_bytes": ...} for one training step of one model at one length."""
    dtype = setup(args)
    model = build(spec_of(args.child_model), args.device, dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(3, model.config.vocab_size, (args.batch, args.child_seq), device=args.device)

    def step() -> None:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    if args.device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        before = _rss_kib("VmRSS")
        step()
        peak = (_rss_kib("VmHWM") - before) * 1024
    print(json.dumps({"peak_bytes": peak}))


def train_peak(name: str, seq: int, args) -> int:
    command = [
        sys.executable, __file__, "--child-model", name, "--child-seq", str(seq), "--batch", str(args.batch),
        "--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads), "--seed", str(args.seed),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"training child {name} seq {seq} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"]


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--contexts", default="256,1024,4096,8192", help="cache: prompt lengths (batch 1)")
    parser.add_argument("--seqs", default="256,1024,4096", help="training: sequence lengths")
    parser.add_argument("--batch", type=int, default=1, help="training batch size (peaks grow linearly with it)")
    parser.add_argument("--models", default="mingru,gru,pure-mingru", help=f"hybrids among {sorted(HYBRIDS)}")
    parser.add_argument("--child-model", help=argparse.SUPPRESS)  # internal: one training measurement
    parser.add_argument("--child-seq", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_model:
        return train_child(args)
    dtype = setup(args)
    if args.quick:
        args.contexts, args.seqs, args.batch = "64,256,1024", "64,256", 2
    info = print_header("Memory: cache bytes vs context, training-step peak vs length", args)
    models = build_models(args.models, args.device, dtype, training=False)

    cache_rows, cache_results = [], []
    for context in (int(c) for c in args.contexts.split(",")):
        for static in (False, True):
            print(f"  cache: context {context}, {'static' if static else 'dynamic'} ...", flush=True)
            held = {name: prefill_cache(model, context, static, args.device) for name, model in models.items()}
            llama_total = sum(held["llama"].values())
            for name, parts in held.items():
                total = sum(parts.values())
                cache_rows.append([
                    context, "static" if static else "dynamic", name, f"{parts['attention'] / 2**20:.2f}",
                    f"{parts['gru'] / 2**20:.3f}", f"{total / 2**20:.2f}", f"{total / llama_total:.3f}x",
                ])  # fmt: skip
                cache_results.append({"context": context, "static": static, "model": name, **parts,
                                      "ratio": total / llama_total})  # fmt: skip
    names = list(models)
    del models
    train_rows, train_results = [], []
    for seq in (int(s) for s in args.seqs.split(",")):
        print(f"  training peak: seq {seq}, batch {args.batch} ...", flush=True)
        peaks = {name: train_peak(name, seq, args) for name in names}
        for name, peak in peaks.items():
            train_rows.append([seq, args.batch, name, f"{peak / 2**20:,.0f}", f"{peak / peaks['llama']:.2f}x"])
            train_results.append({"seq": seq, "batch": args.batch, "model": name, "peak_bytes": peak,
                                  "ratio": peak / peaks["llama"]})  # fmt: skip
    print()
    headers = ["context", "cache", "model", "attention KV MiB", "GRU state MiB", "total MiB", "vs llama"]
    print(markdown_table(headers, cache_rows))
    print()
    print(markdown_table(["seq", "batch", "model", "training peak MiB", "vs llama"], train_rows))
    print()
    print(target_table(cache_results))
    write_json(args.json, {"machine": info, "args": vars(args), "cache": cache_results, "training": train_results})


def target_table(results: list[dict]) -> str:
    rows = []
    for static in (False, True):
        found = [r for r in results if r["context"] == TARGET_CONTEXT and r["static"] == static]
        for r in found:
            if r["model"] == "llama" or spec_of(r["model"]).pattern != "GGA":
                continue
            met = "met" if r["ratio"] <= TARGET_CACHE_RATIO else "NOT met"
            kind = "static" if static else "dynamic"
            rows.append([f"cache bytes, context {TARGET_CONTEXT}, {r['model']}, {kind}", f"<= {TARGET_CACHE_RATIO}x",
                         f"{r['ratio']:.3f}x", met])  # fmt: skip
    gru_bytes = {}
    for r in results:
        if r["model"] != "llama" and not r["static"]:
            gru_bytes.setdefault(r["model"], set()).add(r["gru"])
    for name, sizes in gru_bytes.items():
        constant = "met" if len(sizes) == 1 else "NOT met"
        rows.append([f"GRU state independent of context, {name}", "one size", f"{sorted(sizes)} bytes", constant])
    return markdown_table(["target", "wanted", "measured", ""], rows)


if __name__ == "__main__":
    main()
