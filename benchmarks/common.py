"""Shared pieces of the speed and memory benchmarks: size-matched HybridGRU and Llama models, interleaved timing.

Not run on its own; see benchmarks/train_throughput.py, decode_latency.py and memory.py.
"""

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor

from hf_gru import HybridGRUConfig, HybridGRUForCausalLM

# The sizes: width 512, 6 layers, vocab 8192, SwiGLU width 1408 (~2.75x), 8 heads, tied embeddings (both).
WIDTH, DEPTH, VOCAB, FFN, HEADS = 512, 6, 8192, 1408, 8
MAX_POSITIONS = 16384


@dataclass(frozen=True)
class ModelSpec:
    """One model of a benchmark: `llama`, or a HybridGRU with a GRU variant and block pattern."""

    name: str
    variant: str | None = None  # None: Llama
    pattern: str = "GGA"


LLAMA = ModelSpec("llama")
HYBRIDS = {
    "gru": ModelSpec("hybrid-gru", "gru", "GGA"),
    "mingru": ModelSpec("hybrid-mingru", "mingru", "GGA"),
    "pure-gru": ModelSpec("pure-gru", "gru", "G"),
    "pure-mingru": ModelSpec("pure-mingru", "mingru", "G"),
}


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights and activations")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repetitions: a smoke run")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per model (default per case)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per model before timing")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def setup(args: argparse.Namespace) -> torch.dtype:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls as a GPU user runs them; both models alike
        torch.backends.cudnn.allow_tf32 = True
    return getattr(torch, args.dtype)


def machine_info(args: argparse.Namespace) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": args.device,
        "dtype": args.dtype,
    }
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_header(title: str, args: argparse.Namespace) -> dict:
    info = machine_info(args)
    print(f"# {title}")
    print("  " + ", ".join(f"{k}={v}" for k, v in info.items()))
    return info


def parameter_count(model: nn.Module) -> int:
    """Parameters, tied input/output embeddings counted once (also on the meta device, where they are not tied)."""
    count = sum(p.numel() for p in model.parameters())
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if model.config.tie_word_embeddings and head is not None and head.weight is not embed.weight:
        count -= head.weight.numel()
    return count


def llama_config(**overrides) -> LlamaConfig:
    values = dict(
        vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=DEPTH,
        num_attention_heads=HEADS, max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
        attn_implementation="sdpa", use_cache=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    values.update(overrides)
    return LlamaConfig(**values)


def hybrid_config(spec: ModelSpec, gru_hidden_size: int, **overrides) -> HybridGRUConfig:
    values = dict(
        vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=DEPTH,
        num_attention_heads=HEADS, max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
        attn_implementation="sdpa", gru_variant=spec.variant, block_pattern=spec.pattern,
        gru_hidden_size=gru_hidden_size, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    values.update(overrides)
    return HybridGRUConfig(**values)


def matched_gru_hidden_size(spec: ModelSpec, target: int) -> int:
    """The GRU state width (a multiple of 16) whose model has the parameter count closest to `target`.

    Widths and depths are the issue's; only the GRU width moves, so MLPs and attention layers are identical to Llama's.
    Counted on the meta device: nothing is allocated.
    """

    def count(size: int) -> int:
        with torch.device("meta"):
            return parameter_count(HybridGRUForCausalLM(hybrid_config(spec, size)))

    low, high = 1, 4 * WIDTH // 16  # in units of 16; the count grows with the width: bisect
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if count(16 * mid) < target else (low, mid)
    return min((16 * max(low - 1, 1), 16 * low), key=lambda size: abs(count(size) - target))


def build(spec: ModelSpec, device: str, dtype: torch.dtype, **overrides) -> nn.Module:
    """A randomly initialised model of `spec`, parameter count matched to Llama's within 5% (checked)."""
    with torch.device("meta"):
        target = parameter_count(LlamaForCausalLM(llama_config(**overrides)))
    if spec.variant is None:
        model = LlamaForCausalLM(llama_config(**overrides))
    else:
        size = matched_gru_hidden_size(spec, target)
        model = HybridGRUForCausalLM(hybrid_config(spec, size, **overrides))
    count = parameter_count(model)
    if abs(count / target - 1) > 0.05:
        raise ValueError(f"{spec.name}: {count} parameters, more than 5% away from Llama's {target}.")
    return model.to(device=device, dtype=dtype)


def build_models(hybrids: str, device: str, dtype: torch.dtype, training: bool = True) -> dict[str, nn.Module]:
    """Llama and the comma-separated `hybrids` (keys of HYBRIDS), parameter-matched and described on stdout, in
    training mode or, with `training=False`, in eval mode."""
    specs = [LLAMA] + [HYBRIDS[name] for name in hybrids.split(",")]
    models = {spec.name: build(spec, device, dtype).train(training) for spec in specs}
    describe(models)
    return models


def describe(models: dict[str, nn.Module]) -> None:
    """Prints each model's parameter count, ratio to Llama's, GRU width and layer pattern."""
    reference = parameter_count(models["llama"])
    for name, model in models.items():
        count = parameter_count(model)
        extra = ""
        if hasattr(model.config, "gru_variant"):
            extra = f"  gru_hidden_size={model.config.gru_hidden_size} pattern={model.config.block_pattern}"
        print(f"  {name:14s} {count:>11,d} parameters ({count / reference:.3f}x llama){extra}")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepClock(LogitsProcessor):
    """A logits processor that records the time at which each new token's logits are ready, inside `generate()`."""

    def __init__(self, device: str):
        self.device, self.stamps = device, []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        synchronize(self.device)
        self.stamps.append(time.perf_counter())
        return scores


def interleaved(
    runs: dict[str, Callable[[], object]], reps: int, warmup: int, device: str, timer: Callable | None = None
) -> dict[str, list[float]]:
    """Times each run `reps` times, interleaved (A B C, B C A, ...), after `warmup` untimed rounds.

    `timer(run) -> seconds` replaces plain wall-clock timing of the call when the run measures itself.
    Returns every timing per run, in repetition order, so ratios can be paired repetition by repetition.
    """
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    synchronize(device)
    times: dict[str, list] = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            if timer is not None:
                times[name].append(timer(runs[name]))
                continue
            synchronize(device)
            start = time.perf_counter()
            runs[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(baseline: list, candidate: list) -> float:
    """Median over repetitions of baseline_time / candidate_time (> 1: the candidate is faster).

    Pairing each repetition with its neighbour in time cancels most of the load that other processes put on a
    shared machine.
    """
    return statistics.median(b / c for b, c in zip(baseline, candidate, strict=True))


def median(values: list) -> float:
    return statistics.median(values)


def cache_bytes(cache) -> dict[str, int]:
    """Bytes held by a transformers cache, split into attention KV and GRU state (conv inputs + recurrent state).

    Read off the tensors each cache layer holds, whatever its class (dynamic, static, hybrid layers). Only the
    state itself counts: bookkeeping tensors (position counters such as transformers 5.25's 0-d
    `cumulative_length_linear`) are neither KV nor GRU state.
    """
    kinds = {"keys": "attention", "values": "attention", "conv_states": "gru", "recurrent_states": "gru"}
    held = {"attention": 0, "gru": 0}
    for layer in cache.layers:
        for name, value in vars(layer).items():
            if name not in kinds:
                continue
            tensors = value.values() if isinstance(value, dict) else [value]
            for tensor in tensors:
                if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                    held[kinds[name]] += tensor.numel() * tensor.element_size()
    return held


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"  wrote {path}")
