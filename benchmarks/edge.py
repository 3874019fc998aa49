"""Batch-1 decode on edge runtimes: HybridGRU vs a parameter-matched Llama, PyTorch eager vs onnxruntime fp32/int8.

    python benchmarks/edge.py --threads 1                 # quick start (tiny) and ~20M (small) configs, contexts 128, 1024
    python benchmarks/edge.py --quick                     # smoke run: tiny config, contexts 16 and 64, no memory children
    python benchmarks/edge.py --sizes small --contexts 1024 --new-tokens 64

Models: configs/hybrid-gru-tiny (the quick start model, 1.3M parameters) and configs/hybrid-gru-small (~20M), random
weights (decode speed does not depend on training), and for each a LlamaForCausalLM of the same width, depth, heads,
FFN width and vocabulary whose parameter count is matched within 5% (its FFN width is adjusted if needed).
Runtimes: PyTorch eager (one forward per token on a DynamicCache), onnxruntime fp32 and onnxruntime dynamic int8
(`hf_gru.quantization.quantize_onnx_int8`). HybridGRU is exported with `hf_gru.export_onnx` (GRU state and attention
KV as graph inputs/outputs); Llama the standard way: `torch.onnx.export` (dynamo) of its forward on a DynamicCache
rebuilt from key/value inputs, one graph for prefill and decode. ExecuTorch is not measured (no .pte export here).

Each (model, runtime, context) prefills a random prompt of `context` tokens (untimed), then times `--new-tokens`
single-token steps; repetitions are interleaved across all runtimes of both models, and ratios are medians of paired
per-repetition ratios. Both onnxruntime graphs are driven by the same loop (numpy feeds, state outputs fed back).
Weight-streaming bound: bytes of weights one decode step reads (every weight matrix; an embedding table read only by a
lookup counts one row) divided by the memory bandwidth measured in this process (a 256 MiB tensor copy, read + write).
Peak memory: each case in a fresh subprocess, peak resident set (VmHWM) over the resident set before the model loads,
through prefill and decoding (weights, runtime buffers and cache).
"""

import argparse
import copy
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import base_parser, interleaved, markdown_table, paired_ratio, parameter_count, print_header, write_json
from torch import nn
from transformers import AutoConfig, DynamicCache, LlamaConfig, LlamaForCausalLM

import hf_gru
from hf_gru import HybridGRUForCausalLM
from hf_gru.quantization import quantize_onnx_int8

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZES = {"tiny": CONFIGS / "hybrid-gru-tiny", "small": CONFIGS / "hybrid-gru-small"}
RUNTIMES = ("eager", "ort-fp32", "ort-int8")
TARGET_BOUND_RATIO, TARGET_CONTEXT = 2.0, 1024  # hybrid ORT decode within 2x of the bound, ahead of Llama at 1024


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


def hybrid_config(size: str, max_positions: int):
    config = AutoConfig.from_pretrained(SIZES[size])
    config.max_position_embeddings = max(config.max_position_embeddings, max_positions)
    return config


def llama_config(hybrid, intermediate_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=hybrid.vocab_size, hidden_size=hybrid.hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=hybrid.num_hidden_layers, num_attention_heads=hybrid.num_attention_heads,
        num_key_value_heads=hybrid.num_key_value_heads, max_position_embeddings=hybrid.max_position_embeddings,
        tie_word_embeddings=hybrid.tie_word_embeddings, attn_implementation="sdpa", pad_token_id=0,
    )  # fmt: skip


def matched_llama_config(hybrid) -> LlamaConfig:
    """Llama with the hybrid's dimensions; its FFN width (a multiple of 8) moved until the counts agree best."""

    def count(ffn: int) -> int:
        with torch.device("meta"):
            return parameter_count(LlamaForCausalLM(llama_config(hybrid, ffn)))

    with torch.device("meta"):
        target = parameter_count(HybridGRUForCausalLM(hybrid))
    best = min(range(8, 2 * hybrid.intermediate_size + 8, 8), key=lambda ffn: abs(count(ffn) - target))
    if abs(count(best) / target - 1) > 0.05:
        raise ValueError(f"no Llama FFN width within 5% of the hybrid's {target} parameters")
    return llama_config(hybrid, best)


class LlamaStep(nn.Module):
    """Llama's own forward with its KV cache as explicit tensors: (input_ids, attention_mask, position_ids, k0, v0,
    k1, ...) -> (logits, k0', v0', ...). The cache is a transformers DynamicCache filled from the inputs."""

    def __init__(self, model: LlamaForCausalLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        cache = DynamicCache(config=self.model.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True
        )
        return (out.logits, *[t for layer in out.cache.layers for t in (layer.keys, layer.values)])


def llama_state_shapes(config: LlamaConfig) -> list[tuple[str, list]]:
    head_dim = config.hidden_size // config.num_attention_heads
    return [
        (f"past.{layer}.{kind}", [1, config.num_key_value_heads, 0, head_dim])
        for layer in range(config.num_hidden_layers)
        for kind in ("key", "value")
    ]


def export_llama(model: LlamaForCausalLM, path: Path) -> None:
    names = [name for name, _ in llama_state_shapes(model.config)]
    batch, seq, past, total = (torch.export.Dim(n) for n in ("batch", "sequence_length", "past_length", "total"))
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    example = [torch.zeros(2, model.config.num_key_value_heads, 4, head_dim) for _ in names]
    ids = torch.randint(0, model.config.vocab_size, (2, 3))
    mask, positions = torch.ones(2, 7, dtype=torch.long), torch.arange(4, 7).expand(2, -1)
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, tuple({0: batch, 2: past} for _ in names))
    with torch.no_grad():
        program = torch.onnx.export(
            LlamaStep(model).eval(), (ids, mask, positions, *example), dynamic_shapes=dynamic, dynamo=True,
            input_names=["input_ids", "attention_mask", "position_ids", *names], opset_version=18, verbose=False,
        )  # fmt: skip
    program.save(str(path))


def export_all(size: str, hybrid: HybridGRUForCausalLM, llama: LlamaForCausalLM, folder: Path) -> dict:
    """ONNX graphs fp32 and int8 of both models: {(model, runtime): path}."""
    paths = {}
    hybrid_dir = hf_gru.export_onnx(hybrid, folder / f"{size}-hybrid")
    paths[("hybrid", "ort-fp32")] = hybrid_dir / "model.onnx"
    paths[("llama", "ort-fp32")] = folder / f"{size}-llama.onnx"
    export_llama(llama, paths[("llama", "ort-fp32")])
    for name in ("hybrid", "llama"):
        paths[(name, "ort-int8")] = quantize_onnx_int8(paths[(name, "ort-fp32")])
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# Runners: prefill(prompt) once, then step() one token at a time
# ---------------------------------------------------------------------------------------------------------------------


class EagerRunner:
    def __init__(self, model: nn.Module):
        self.model = model.eval()

    @torch.no_grad()
    def prefill(self, prompt: torch.Tensor) -> None:
        self.cache = DynamicCache(config=self.model.config)
        self.model(input_ids=prompt, cache=self.cache, use_cache=True, logits_to_keep=1)

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> None:
        self.model(input_ids=token, cache=self.cache, use_cache=True)


class OrtRunner:
    """One graph with explicit state (hf_gru's export or LlamaStep): feeds the previous outputs back as inputs."""

    def __init__(self, path: Path, state_inputs: list[tuple[str, list]], threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.state_inputs = state_inputs

    def _run(self, ids: np.ndarray) -> None:
        length = self.mask.shape[1] + ids.shape[1]
        self.mask = np.ones((1, length), dtype=np.int64)
        positions = np.arange(length - ids.shape[1], length, dtype=np.int64)[None]
        feed = {"input_ids": ids, "attention_mask": self.mask, "position_ids": positions, **self.states}
        _, *outputs = self.session.run(None, feed)
        self.states = dict(zip(self.states, outputs, strict=True))

    def prefill(self, prompt: torch.Tensor) -> None:
        self.mask = np.ones((1, 0), dtype=np.int64)
        self.states = {name: np.zeros(shape, dtype=np.float32) for name, shape in self.state_inputs}
        self._run(prompt.numpy())

    def step(self, token: torch.Tensor) -> None:
        self._run(token.numpy())


def hybrid_state_shapes(config) -> list[tuple[str, list]]:
    from hf_gru.export import state_specs

    sizes = {"batch": 1, "past_length": 0}
    return [(spec["name"], [sizes.get(d, d) for d in spec["shape"]]) for spec in state_specs(config)]


def timed_decode(runner, prompt: torch.Tensor, new_tokens: int) -> float:
    """Seconds per decoded token, after an untimed prefill of `prompt`."""
    runner.prefill(prompt)
    token = prompt[:, -1:]
    start = time.perf_counter()
    for _ in range(new_tokens):
        runner.step(token)
    return (time.perf_counter() - start) / new_tokens


# ---------------------------------------------------------------------------------------------------------------------
# Bounds and memory
# ---------------------------------------------------------------------------------------------------------------------


def memory_bandwidth(megabytes: int = 256, reps: int = 5) -> float:
    """Bytes/s of a large tensor copy in this process (each byte read once and written once): the best of `reps`."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)
    best = min(_time(lambda: target.copy_(source)) for _ in range(reps))
    return 2 * source.numel() * 4 / best


def _time(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def eager_weight_bytes(model: nn.Module) -> int:
    """Bytes a decode step reads from the weights: all parameters, except an untied input embedding (one row)."""
    total = parameter_count(model) * 4
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is not None and head.weight is not embedding.weight:
        total -= embedding.weight.numel() * 4
    return total


def onnx_weight_bytes(path: Path) -> int:
    """Bytes of the graph's initializers that a decode step reads; a table used only as Gather data counts one row."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    GRAPH_ATTRIBUTES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    users: dict[str, set] = {}

    def visit(graph) -> None:
        for node in graph.node:
            for position, name in enumerate(node.input):
                users.setdefault(name, set()).add(node.op_type if position == 0 else f"{node.op_type}:{position}")
            for attribute in node.attribute:
                for subgraph in [attribute.g, *attribute.graphs] if attribute.type in GRAPH_ATTRIBUTES else []:
                    visit(subgraph)

    visit(model.graph)
    total = 0
    for initializer in model.graph.initializer:
        array = numpy_helper.to_array(initializer)
        only_gathered = users.get(initializer.name) == {"Gather"} and array.ndim == 2
        total += array[0].nbytes if only_gathered else array.nbytes
    return total


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def memory_child(args) -> None:
    """Subprocess: peak resident bytes of one (size, model, runtime, context) case over the imports' baseline."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _rss_kib("VmRSS")
    runner = make_runner(args.size, args.child_model, args.child_runtime, Path(args.child_path or "."), args)
    prompt = torch.randint(3, 1000, (1, args.child_context))
    timed_decode(runner, prompt, args.new_tokens)
    print(json.dumps({"peak_bytes": (_rss_kib("VmHWM") - before) * 1024}))


def make_runner(size: str, name: str, runtime: str, path: Path, args):
    hybrid = hybrid_config(size, args.max_context + args.new_tokens + 1)
    if runtime == "eager":
        model = HybridGRUForCausalLM(hybrid) if name == "hybrid" else LlamaForCausalLM(matched_llama_config(hybrid))
        return EagerRunner(model)
    shapes = hybrid_state_shapes(hybrid) if name == "hybrid" else llama_state_shapes(matched_llama_config(hybrid))
    return OrtRunner(path, shapes, args.threads)


def peak_memory(size: str, name: str, runtime: str, path: Path | None, context: int, args) -> int:
    command = [
        sys.executable, __file__, "--size", size, "--child-model", name, "--child-runtime", runtime,
        "--child-context", str(context), "--child-path", str(path or ""), "--threads", str(args.threads),
        "--new-tokens", str(args.new_tokens), "--max-context", str(args.max_context), "--seed", str(args.seed),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory child {size} {name} {runtime} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"]


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def run_size(size: str, contexts: list[int], args, folder: Path, bandwidth: float) -> list[dict]:
    hybrid_cfg = hybrid_config(size, max(contexts) + args.new_tokens + 1)
    models = {"hybrid": HybridGRUForCausalLM(hybrid_cfg).eval()}
    models["llama"] = LlamaForCausalLM(matched_llama_config(hybrid_cfg)).eval()
    for name, model in models.items():
        print(f"  {size} {name:6s} {parameter_count(model):>11,d} parameters", flush=True)
    print(f"  {size}: exporting ONNX fp32 + int8 ...", flush=True)
    paths = export_all(size, models["hybrid"], copy.deepcopy(models["llama"]), folder)
    runners, weight_bytes = {}, {}
    for name, model in models.items():
        runners[(name, "eager")] = EagerRunner(model)
        weight_bytes[(name, "eager")] = eager_weight_bytes(model)
        for runtime in ("ort-fp32", "ort-int8"):
            shapes = hybrid_state_shapes(hybrid_cfg) if name == "hybrid" else llama_state_shapes(model.config)
            runners[(name, runtime)] = OrtRunner(paths[(name, runtime)], shapes, args.threads)
            weight_bytes[(name, runtime)] = onnx_weight_bytes(paths[(name, runtime)])
    results = []
    for context in contexts:
        prompt = torch.randint(3, hybrid_cfg.vocab_size, (1, context))
        reps = args.reps or (2 if args.quick else 5)
        print(f"  {size}, context {context}: {reps} repetitions x {len(runners)} runs ...", flush=True)
        runs = {k: (lambda r=runner, p=prompt: timed_decode(r, p, args.new_tokens)) for k, runner in runners.items()}
        measured = interleaved(runs, reps, args.warmup, "cpu", timer=lambda run: run())
        for (name, runtime), times in measured.items():
            token_s = statistics.median(times)
            bound_s = weight_bytes[(name, runtime)] / bandwidth
            results.append({
                "size": size, "context": context, "model": name, "runtime": runtime, "token_s": token_s,
                "tokens_per_s": 1 / token_s, "vs_llama": paired_ratio(measured[("llama", runtime)], times),
                "vs_eager": paired_ratio(measured[(name, "eager")], times), "weight_bytes": weight_bytes[(name, runtime)],
                "bound_s": bound_s, "x_bound": token_s / bound_s, "runs": times,
                "file_bytes": paths[(name, runtime)].stat().st_size if runtime != "eager" else None,
            })  # fmt: skip
        if args.memory:
            for row in results[-len(measured) :]:
                path = paths.get((row["model"], row["runtime"]))
                row["peak_bytes"] = peak_memory(size, row["model"], row["runtime"], path, context, args)
    return results


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--sizes", default="tiny,small", help=f"among {sorted(SIZES)}")
    parser.add_argument("--contexts", default="128,1024")
    parser.add_argument("--new-tokens", type=int, default=32, help="timed decode steps per repetition")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory subprocesses")
    parser.add_argument("--size", help=argparse.SUPPRESS)  # internal: a memory child
    parser.add_argument("--child-model", help=argparse.SUPPRESS)
    parser.add_argument("--child-runtime", help=argparse.SUPPRESS)
    parser.add_argument("--child-context", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-path", help=argparse.SUPPRESS)
    parser.add_argument("--max-context", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_model:
        return memory_child(args)
    if args.dtype != "float32" or args.device != "cpu":
        raise SystemExit("error: edge.py measures float32 weights on the CPU (int8 is one of its runtimes)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.quick:
        args.sizes, args.contexts, args.new_tokens, args.memory = "tiny", "16,64", 4, False
    contexts = [int(c) for c in args.contexts.split(",")]
    args.max_context = max(contexts)
    info = print_header("Edge decode: batch 1, PyTorch eager vs onnxruntime fp32/int8, HybridGRU vs Llama", args)
    bandwidth = memory_bandwidth(64 if args.quick else 256)
    print(f"  memory bandwidth (tensor copy, read + write): {bandwidth / 1e9:.1f} GB/s", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="edge-") as folder:
        for size in args.sizes.split(","):
            results += run_size(size, contexts, args, Path(folder), bandwidth)
    print()
    print(results_table(results))
    print()
    print(target_table(results))
    payload = {"machine": info, "args": vars(args), "bandwidth_bytes_per_s": bandwidth, "results": results}
    write_json(args.json, payload)


def results_table(results: list[dict]) -> str:
    headers = [
        "size", "context", "model", "runtime", "ms/token", "tok/s", "vs llama", "vs eager", "weights MiB read",
        "bound ms", "x bound", "peak MiB",
    ]  # fmt: skip
    rows = [
        [
            r["size"], r["context"], r["model"], r["runtime"], f"{r['token_s'] * 1e3:.2f}", f"{r['tokens_per_s']:.0f}",
            f"{r['vs_llama']:.2f}x", f"{r['vs_eager']:.2f}x", f"{r['weight_bytes'] / 2**20:.1f}",
            f"{r['bound_s'] * 1e3:.3f}", f"{r['x_bound']:.1f}x",
            f"{r['peak_bytes'] / 2**20:.0f}" if "peak_bytes" in r else "-",
        ]
        for r in results
    ]  # fmt: skip
    return markdown_table(headers, rows)


def target_table(results: list[dict]) -> str:
    rows = []
    for size in dict.fromkeys(r["size"] for r in results):
        for runtime in ("ort-fp32", "ort-int8"):
            found = [r for r in results if (r["size"], r["model"], r["runtime"]) == (size, "hybrid", runtime)]
            at = [r for r in found if r["context"] == TARGET_CONTEXT] or found[-1:]
            for r in at:
                rows.append([
                    f"{size} hybrid {runtime}, context {r['context']}", f"<= {TARGET_BOUND_RATIO:.0f}x bound, > 1x llama",
                    f"{r['x_bound']:.1f}x bound, {r['vs_llama']:.2f}x llama",
                    "met" if r["x_bound"] <= TARGET_BOUND_RATIO and r["vs_llama"] > 1 else "NOT met",
                ])  # fmt: skip
    return markdown_table(["target", "wanted", "measured", ""], rows)


if __name__ == "__main__":
    main()
