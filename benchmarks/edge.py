"""Batch-1 decode on edge runtimes: HybridGRU vs a parameter-matched Llama, PyTorch eager vs onnxruntime fp32/int8 and
ExecuTorch.

    python benchmarks/edge.py --threads 1       # quick start (tiny) and ~20M (small) configs, contexts 128, 1024
    python benchmarks/edge.py --quick           # smoke run: tiny, contexts 16 and 64, no ExecuTorch/memory
    python benchmarks/edge.py --sizes small --contexts 1024 --runtimes ort-fp32,ort-int8,executorch
    python benchmarks/edge.py --threads 1 --sizes small --contexts 1024 --no-memory \
        --runtimes eager-int8,ort-fp32,ort-int8     # issue 21's int8 targets

Models: configs/hybrid-gru-tiny (the quick start model, 1.3M parameters) and configs/hybrid-gru-small (~20M), random
weights (decode speed does not depend on training), and for each a LlamaForCausalLM of the same width, depth, heads,
FFN width and vocabulary whose parameter count is matched within 5% (its FFN width is adjusted if needed).
Runtimes: PyTorch eager (one forward per token on a DynamicCache), PyTorch int8 (`quantize_int8(engine="torch.ao")`:
dynamic int8 Linear, fbgemm/x86), onnxruntime fp32, onnxruntime int8 (`hf_gru.deploy.quantization.quantize_onnx_int8`:
MatMulNBits 8-bit weights, the tied LM head included) and ExecuTorch with its portable kernels (a decode-step program, fp32; the
prompt is fed one token per call; the XNNPACK delegate refused the hybrid's program: "Output node ... is already in
the inputs", pass-through outputs). HybridGRU is exported with `hf_gru.export_onnx` / `hf_gru.export_executorch` (GRU
state and attention KV as graph inputs/outputs); Llama the standard way: `torch.onnx.export` (dynamo) /
`torch.export` + `to_edge_transform_and_lower` of its own forward on a DynamicCache rebuilt from key/value inputs.

Each runner prefills a random prompt of `context` tokens once (untimed) and restarts from that state for every
repetition of `--new-tokens` timed single-token steps; repetitions are interleaved across all runtimes of both models,
and ratios are medians of paired per-repetition ratios. Every exported graph is driven by the same loop (state
outputs fed back as inputs). Weight-streaming bound: bytes of weights one decode step reads (every weight matrix; an
embedding table read only by a lookup counts one row; for ExecuTorch the program size) divided by the memory
bandwidth measured in this process (a 256 MiB tensor copy, read + write). Peak memory: each case in a fresh
subprocess, peak resident set (VmHWM) over the resident set before the model loads, through prefill and decoding.
"""

import argparse
import copy
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import base_parser, interleaved, markdown_table, paired_ratio, parameter_count, print_header, write_json
from torch import nn
from transformers import AutoConfig, DynamicCache, LlamaConfig, LlamaForCausalLM

import hf_gru
from hf_gru import HybridGRUForCausalLM
from hf_gru.deploy.quantization import quantize_int8, quantize_onnx_int8, state_dict_bytes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZES = {"tiny": CONFIGS / "hybrid-gru-tiny", "small": CONFIGS / "hybrid-gru-small"}
RUNTIMES = ("eager", "eager-int8", "ort-fp32", "ort-int8", "executorch")
TARGET_BOUND_RATIO, TARGET_CONTEXT = 2.0, 1024  # hybrid ORT decode within 2x of the bound, ahead of Llama at 1024
# issue 21: ORT int8 >= 1.5x ORT fp32 and within 3x of its bound; PyTorch int8 >= 1.0x PyTorch fp32 (context 1024)
INT8_SPEEDUP, INT8_BOUND_RATIO, EAGER_INT8_SPEEDUP = 1.5, 3.0, 1.0
FLOAT_OF = {"eager-int8": "eager", "ort-int8": "ort-fp32"}


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


def export_llama_executorch(model: LlamaForCausalLM, path: Path, max_length: int) -> Path:
    """LlamaStep for one token per call, lowered to an ExecuTorch program (portable kernels), as export_executorch."""
    from executorch.exir import to_edge_transform_and_lower

    names = [name for name, _ in llama_state_shapes(model.config)]
    # Batch fixed at 1 (this benchmark's batch). Seen failing here all the same (torch 2.13, transformers 5.24):
    # torch.export cannot prove a stride guard of the grouped-query attention, min(32 + 32 * past, 64 + 64 * past) ==
    # 32 + 32 * past, for a bounded past length (also with repeat_kv swapped for repeat_interleave); the failure is
    # reported and that runtime skipped for Llama.
    past = torch.export.Dim("past_length", min=0, max=max_length - 1)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    example = [torch.zeros(1, model.config.num_key_value_heads, 3, head_dim) for _ in names]
    ids, mask, positions = torch.randint(0, 100, (1, 1)), torch.ones(1, 4, dtype=torch.long), torch.full((1, 1), 3)
    dynamic = (None, {1: past + 1}, None, tuple({2: past} for _ in names))
    with torch.no_grad():
        program = torch.export.export(
            LlamaStep(model).eval(), (ids, mask, positions, *example), dynamic_shapes=dynamic
        )
    lowered = to_edge_transform_and_lower(program)
    path.write_bytes(lowered.to_executorch().buffer)
    return path


def export_all(size: str, models: dict, runtimes: list[str], folder: Path, max_length: int) -> dict:
    """Exported files of both models: {(model, runtime): path}. A failed ExecuTorch export is reported and skipped."""
    paths = {}
    if "ort-fp32" in runtimes or "ort-int8" in runtimes:
        paths[("hybrid", "ort-fp32")] = hf_gru.export_onnx(models["hybrid"], folder / f"{size}-hybrid") / "model.onnx"
        paths[("llama", "ort-fp32")] = folder / f"{size}-llama.onnx"
        export_llama(copy.deepcopy(models["llama"]), paths[("llama", "ort-fp32")])
        if "ort-int8" in runtimes:
            for name in ("hybrid", "llama"):
                paths[(name, "ort-int8")] = quantize_onnx_int8(paths[(name, "ort-fp32")])
    if "executorch" in runtimes:
        exports = {
            "hybrid": lambda: hf_gru.export_executorch(
                models["hybrid"], folder / f"{size}-hybrid-et", max_length=max_length, max_batch_size=2,
                backend="portable",
            ) / "model.pte",
            "llama": lambda: export_llama_executorch(
                copy.deepcopy(models["llama"]), folder / f"{size}-llama.pte", max_length
            ),
        }  # fmt: skip
        for name, export in exports.items():
            try:
                paths[(name, "executorch")] = export()
            except Exception as error:  # an op or guard ExecuTorch cannot lower: say so, measure the rest
                print(f"  {size} {name}: ExecuTorch export failed, skipped: {type(error).__name__}: {error}"[:600])
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# Runners: prefill(prompt) once, then step() one token at a time
# ---------------------------------------------------------------------------------------------------------------------


class EagerRunner:
    def __init__(self, model: nn.Module):
        self.model = model.eval()

    @torch.no_grad()
    def prefill(self, prompt: torch.Tensor) -> None:
        self.start = DynamicCache(config=self.model.config)
        self.model(input_ids=prompt, cache=self.start, use_cache=True, logits_to_keep=1)

    def restart(self) -> None:
        self.cache = copy.deepcopy(self.start)  # decoding grows the cache in place

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> None:
        self.model(input_ids=token, cache=self.cache, use_cache=True)


class GraphRunner:
    """One exported graph with explicit state (hf_gru's exports, LlamaStep): (input_ids, attention_mask, position_ids,
    *states) -> (logits, *states), the outputs fed back as the next inputs. `max_chunk=1`: a decode-step program
    (ExecuTorch) that takes the prompt one token per call."""

    def __init__(self, run, state_inputs: list[tuple[str, list]], max_chunk: int | None = None):
        self.run, self.state_inputs, self.max_chunk = run, state_inputs, max_chunk

    def _feed(self, ids: torch.Tensor) -> None:
        length = self.length + ids.shape[1]
        mask = torch.ones(1, length, dtype=torch.long)
        positions = torch.arange(self.length, length)[None]
        _, *self.states = self.run([ids, mask, positions, *self.states])
        self.length = length

    def prefill(self, prompt: torch.Tensor) -> None:
        self.length, self.states = 0, [torch.zeros(shape) for _, shape in self.state_inputs]
        for chunk in prompt.split(self.max_chunk or prompt.shape[1], dim=1):
            self._feed(chunk)
        self.start = (self.length, self.states)

    def restart(self) -> None:
        self.length, self.states = self.start[0], list(self.start[1])  # state tensors are replaced, never mutated

    def step(self, token: torch.Tensor) -> None:
        self._feed(token)


def ort_runner(path: Path, state_inputs: list[tuple[str, list]], threads: int) -> GraphRunner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(inputs: list[torch.Tensor]) -> list:
        feed = {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)}
        return [torch.from_numpy(output) for output in session.run(None, feed)]

    return GraphRunner(run, state_inputs)


def executorch_runner(path: Path, state_inputs: list[tuple[str, list]]) -> GraphRunner:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")

    def run(inputs: list[torch.Tensor]) -> list:
        # the outputs live in the program's planned memory, which the next call overwrites: copy them out
        return [output.clone() for output in method.execute([t.contiguous() for t in inputs])]

    return GraphRunner(run, state_inputs, max_chunk=1)


def hybrid_state_shapes(config) -> list[tuple[str, list]]:
    from hf_gru.deploy import state_specs

    sizes = {"batch": 1, "past_length": 0}
    return [(spec["name"], [sizes.get(d, d) for d in spec["shape"]]) for spec in state_specs(config)]


def timed_decode(runner, prompt: torch.Tensor, new_tokens: int) -> float:
    """Seconds per decoded token, from the state after `prompt` (prefilled once per runner, restored untimed)."""
    runner.restart()
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
    runner.prefill(prompt)
    if isinstance(runner, EagerRunner):
        runner.cache = runner.start  # no copy: the peak is that of a plain prefill + decode
    else:
        runner.restart()
    for _ in range(args.new_tokens):
        runner.step(prompt[:, -1:])
    print(json.dumps({"peak_bytes": (_rss_kib("VmHWM") - before) * 1024}))


def make_runner(size: str, name: str, runtime: str, path: Path, args, model: nn.Module | None = None):
    hybrid = hybrid_config(size, args.max_context + args.new_tokens + 1)
    llama = matched_llama_config(hybrid)
    if runtime in ("eager", "eager-int8"):
        if model is None:
            model = HybridGRUForCausalLM(hybrid) if name == "hybrid" else LlamaForCausalLM(llama)
            if runtime == "eager-int8":
                model = quantize_int8(model, engine="torch.ao")
        return EagerRunner(model)
    shapes = hybrid_state_shapes(hybrid) if name == "hybrid" else llama_state_shapes(llama)
    if runtime == "executorch":
        return executorch_runner(path, shapes)
    return ort_runner(path, shapes, args.threads)


def weights_read(runtime: str, model: nn.Module, path: Path | None) -> int:
    if runtime == "eager":
        return eager_weight_bytes(model)
    if runtime == "eager-int8":  # the int8 copy's stored weights, less the float embedding table but one row
        embedding = model.get_input_embeddings().weight
        return state_dict_bytes(model) - embedding.numel() * 4 + embedding.shape[1] * 4
    if runtime == "executorch":
        return path.stat().st_size  # the program's constant data: the float weights (XNNPACK packs them)
    return onnx_weight_bytes(path)


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
    print(f"  {size}: exporting {', '.join(r for r in args.runtimes if r != 'eager')} ...", flush=True)
    paths = export_all(size, models, args.runtimes, folder, max(contexts) + args.new_tokens + 1)
    runners, weight_bytes = {}, {}
    for runtime in args.runtimes:
        for name, model in models.items():
            if runtime not in ("eager", "eager-int8") and (name, runtime) not in paths:
                continue
            path = paths.get((name, runtime))
            if runtime == "eager-int8":
                model = quantize_int8(copy.deepcopy(model), engine="torch.ao")
            runners[(name, runtime)] = make_runner(size, name, runtime, path, args, model)
            weight_bytes[(name, runtime)] = weights_read(runtime, model, path)
    results = []
    for context in contexts:
        prompt = torch.randint(3, hybrid_cfg.vocab_size, (1, context))
        reps = args.reps or (2 if args.quick else 5)
        print(f"  {size}, context {context}: prefill, then {reps} repetitions x {len(runners)} runs ...", flush=True)
        for runner in runners.values():
            runner.prefill(prompt)
        runs = {k: (lambda r=runner, p=prompt: timed_decode(r, p, args.new_tokens)) for k, runner in runners.items()}
        measured = interleaved(runs, reps, args.warmup, "cpu", timer=lambda run: run())
        for (name, runtime), times in measured.items():
            token_s = statistics.median(times)
            bound_s = weight_bytes[(name, runtime)] / bandwidth
            llama = measured.get(("llama", runtime))
            path = paths.get((name, runtime))
            results.append({
                "size": size, "context": context, "model": name, "runtime": runtime, "token_s": token_s,
                "tokens_per_s": 1 / token_s, "vs_llama": paired_ratio(llama, times) if llama else None,
                "vs_eager": paired_ratio(measured[(name, "eager")], times),
                "vs_float": paired_ratio(measured[(name, FLOAT_OF[runtime])], times)
                if (name, FLOAT_OF.get(runtime)) in measured else None,
                "weight_bytes": weight_bytes[(name, runtime)],
                "bound_s": bound_s, "x_bound": token_s / bound_s, "runs": times,
                "file_bytes": path.stat().st_size if path else None,
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
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"among {RUNTIMES}; eager always runs")
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
        args.runtimes = args.runtimes.replace("executorch", "")  # its exports take minutes
    contexts = [int(c) for c in args.contexts.split(",")]
    args.runtimes = ["eager", *(r for r in args.runtimes.split(",") if r in RUNTIMES and r != "eager")]
    if "executorch" in args.runtimes and importlib.util.find_spec("executorch") is None:
        print("  executorch is not installed: its runtime is skipped (pip install 'hf_gru[export]')")
        args.runtimes.remove("executorch")
    args.max_context = max(contexts)
    info = print_header("Edge decode: batch 1, PyTorch eager vs onnxruntime / ExecuTorch, HybridGRU vs Llama", args)
    bandwidth = memory_bandwidth(64 if args.quick else 256)
    print(f"  memory bandwidth (tensor copy, read + write): {bandwidth / 1e9:.1f} GB/s", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="edge-") as folder:
        for size in args.sizes.split(","):
            results += run_size(size, contexts, args, Path(folder), bandwidth)
    # Other processes on a shared machine lower a single bandwidth reading: keep the best of two, before and after.
    bandwidth = max(bandwidth, memory_bandwidth(64 if args.quick else 256))
    print(f"  memory bandwidth, best of the readings before and after: {bandwidth / 1e9:.1f} GB/s")
    for row in results:
        row["bound_s"] = row["weight_bytes"] / bandwidth
        row["x_bound"] = row["token_s"] / row["bound_s"]
    print()
    print(results_table(results))
    print()
    print(target_table(results))
    payload = {"machine": info, "args": vars(args), "bandwidth_bytes_per_s": bandwidth, "results": results}
    write_json(args.json, payload)


def results_table(results: list[dict]) -> str:
    headers = [
        "size", "context", "model", "runtime", "ms/token", "tok/s", "vs llama", "vs eager", "vs fp32", "weights MiB read",
        "bound ms", "x bound", "peak MiB",
    ]  # fmt: skip
    rows = [
        [
            r["size"], r["context"], r["model"], r["runtime"], f"{r['token_s'] * 1e3:.2f}", f"{r['tokens_per_s']:.0f}",
            f"{r['vs_llama']:.2f}x" if r["vs_llama"] else "-", f"{r['vs_eager']:.2f}x",
            f"{r['vs_float']:.2f}x" if r.get("vs_float") else "-",
            f"{r['weight_bytes'] / 2**20:.1f}",
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
                    f"{size} hybrid {runtime}, context {r['context']}",
                    f"<= {TARGET_BOUND_RATIO:.0f}x bound, > 1x llama",
                    f"{r['x_bound']:.1f}x bound, {r['vs_llama']:.2f}x llama",
                    "met" if r["x_bound"] <= TARGET_BOUND_RATIO and r["vs_llama"] > 1 else "NOT met",
                ])  # fmt: skip
    for size in dict.fromkeys(r["size"] for r in results):
        for runtime in ("ort-int8", "eager-int8"):
            found = [r for r in results if (r["size"], r["model"], r["runtime"]) == (size, "hybrid", runtime)]
            at = [r for r in found if r["context"] == TARGET_CONTEXT] or found[-1:]
            for r in at:
                if runtime == "ort-int8":
                    wanted = f">= {INT8_SPEEDUP}x ort-fp32, <= {INT8_BOUND_RATIO:.0f}x bound"
                    measured = f"{r['vs_float']:.2f}x ort-fp32, {r['x_bound']:.1f}x bound"
                    met = r["vs_float"] >= INT8_SPEEDUP and r["x_bound"] <= INT8_BOUND_RATIO
                else:
                    wanted, measured = f">= {EAGER_INT8_SPEEDUP}x eager fp32", f"{r['vs_float']:.2f}x eager fp32"
                    met = r["vs_float"] >= EAGER_INT8_SPEEDUP
                rows.append([f"{size} hybrid {runtime}, context {r['context']}", wanted, measured,
                             "met" if met else "NOT met"])  # fmt: skip
    return markdown_table(["target", "wanted", "measured", ""], rows)


if __name__ == "__main__":
    main()
