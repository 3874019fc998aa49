"""Deploy the quick start model: export it to ONNX (fp32 and int8), quantize the PyTorch model to int8 (torchao),
generate with the onnxruntime runtime, and compare stored size, held-out perplexity and decode speed:

    bash examples/quickstart.sh                 # trains outputs/hybrid-gru-austen (a few minutes)
    pip install -e ".[export]"                  # onnx, onnxscript, onnxruntime, torchao
    python examples/export_and_run.py           # writes outputs/hybrid-gru-austen-onnx/{fp32,int8}/ and results.json

    python examples/export_and_run.py --model outputs/mine --output_dir outputs/mine-onnx --overwrite_output_dir

Perplexity is measured on the part of the corpus examples/train_causal_lm.py held out (the last 10% of the lines of
data/austen/prideprejudice.txt, blocks of 128 tokens), so the fp32 row repeats that script's validation perplexity.
Decode speed: greedy generation of --new_tokens tokens after --prompt at batch 1 on --threads threads (tokens / wall
time, the short prompt's prefill included), the best of --repeats runs.
"""

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser

import hf_gru
from hf_gru.deploy.quantization import quantize_int8, state_dict_bytes
from hf_gru.tasks.perplexity import perplexity, text_blocks

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_SIZE_RATIO, TARGET_PERPLEXITY_RATIO = 0.30, 1.03  # issue 14: int8 file <= 30% of fp32, perplexity <= +3%


@dataclass
class ExportArguments:
    model: str = field(default="outputs/hybrid-gru-austen", metadata={"help": "A saved HybridGRUForCausalLM folder."})
    output_dir: str = field(default="outputs/hybrid-gru-austen-onnx", metadata={"help": "Gets fp32/ and int8/."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir."})
    text_file: str = field(
        default=str(REPO_ROOT / "data" / "austen" / "prideprejudice.txt"),
        metadata={"help": "Corpus whose held-out tail gives the perplexity (the model's training file)."},
    )
    validation_split_percentage: int = field(default=10, metadata={"help": "As in train_causal_lm.py."})
    block_size: int = field(default=128, metadata={"help": "Tokens per perplexity block."})
    prompt: str = field(default="Elizabeth", metadata={"help": "Prompt of the generated sample and speed runs."})
    new_tokens: int = field(default=64, metadata={"help": "Tokens generated per speed run."})
    repeats: int = field(default=3, metadata={"help": "Speed runs per variant (the best counts)."})
    threads: int = field(default=1, metadata={"help": "CPU threads for PyTorch and onnxruntime alike."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ExportArguments).parse_args_into_dataclasses(args=argv)
    check_arguments(args)
    torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    if output_dir.exists() and args.overwrite_output_dir:
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    blocks = text_blocks(tokenizer, args.text_file, args.block_size, args.validation_split_percentage)
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
          f"{len(blocks)} held-out blocks of {args.block_size} tokens", flush=True)  # fmt: skip

    print("exporting ONNX fp32 and int8 ...", flush=True)
    for name, quantize in (("fp32", None), ("int8", "int8")):
        hf_gru.export_onnx(args.model, output_dir / name, quantize=quantize)
    quantized = quantize_int8(AutoModelForCausalLM.from_pretrained(args.model).eval())
    variants = {  # name -> (model or runtime, stored bytes)
        "PyTorch fp32": (model, state_dict_bytes(model)),
        "PyTorch int8 (torchao)": (quantized, state_dict_bytes(quantized)),
    }
    for name, folder in (("ONNX fp32 (onnxruntime)", "fp32"), ("ONNX int8 (onnxruntime)", "int8")):
        runtime = hf_gru.OnnxCausalLM.from_pretrained(output_dir / folder, session_options=session_options(args))
        variants[name] = (runtime, (output_dir / folder / "model.onnx").stat().st_size)

    prompt = tokenizer(args.prompt, return_tensors="pt").input_ids
    rows = {}
    for name, (runner, size) in variants.items():
        print(f"measuring {name} ...", flush=True)
        rows[name] = {
            "bytes": size,
            "perplexity": perplexity(runner, blocks),
            "tokens_per_s": decode_speed(runner, prompt, args.new_tokens, args.repeats),
        }
    sample = variants["ONNX int8 (onnxruntime)"][0].generate(prompt, max_new_tokens=60, do_sample=False)
    print(f"\ngreedy sample from the int8 ONNX runtime:\n{tokenizer.decode(sample[0], skip_special_tokens=True)}\n")
    report = summarize(rows)
    results = {"arguments": asdict(args), "variants": rows, "targets": report, "torch_threads": args.threads}
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved the exports and results.json in {output_dir}/")
    return results


def check_arguments(args: ExportArguments) -> None:
    """ValueErrors for bad values, before anything is loaded or written."""
    if not Path(args.model, "config.json").is_file():
        raise ValueError(
            f"--model {args.model!r} is not a saved model folder (no config.json); `bash examples/quickstart.sh` "
            "writes the default one."
        )
    output_dir = Path(args.output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not args.overwrite_output_dir:
        raise ValueError(f"--output_dir {args.output_dir!r} is not empty; pass --overwrite_output_dir to replace it.")
    for name in ("block_size", "new_tokens", "repeats", "threads"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}.")


def session_options(args: ExportArguments):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    return options


def decode_speed(runner, prompt: torch.Tensor, new_tokens: int, repeats: int) -> float:
    """Tokens/s of greedy generation of exactly `new_tokens` tokens, the best of `repeats` runs."""
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if not hasattr(runner, "step"):
        kwargs["disable_compile"] = True
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            runner.generate(prompt, attention_mask=torch.ones_like(prompt), **kwargs)
        best = min(best, time.perf_counter() - start)
    return new_tokens / best


def summarize(rows: dict) -> dict:
    """Prints the table and the issue's int8 targets; returns the target checks."""
    baseline = {"PyTorch": rows["PyTorch fp32"], "ONNX": rows["ONNX fp32 (onnxruntime)"]}
    print("| variant | size MiB | size vs fp32 | perplexity | vs fp32 | decode tok/s | vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        base = baseline[name.split()[0]]
        row["size_ratio"] = row["bytes"] / base["bytes"]
        row["perplexity_ratio"] = row["perplexity"] / base["perplexity"]
        row["speed_ratio"] = row["tokens_per_s"] / base["tokens_per_s"]
        print(f"| {name} | {row['bytes'] / 2**20:.2f} | {row['size_ratio']:.1%} | {row['perplexity']:.2f} | "
              f"{row['perplexity_ratio'] - 1:+.2%} | {row['tokens_per_s']:.0f} | "
              f"{row['speed_ratio']:.2f}x |")  # fmt: skip
    report = {}
    for name in ("PyTorch int8 (torchao)", "ONNX int8 (onnxruntime)"):
        row = rows[name]
        report[name] = {
            "size_met": row["size_ratio"] <= TARGET_SIZE_RATIO,
            "perplexity_met": row["perplexity_ratio"] <= TARGET_PERPLEXITY_RATIO,
        }
        print(f"{name}: size {row['size_ratio']:.1%} of fp32 (target <= {TARGET_SIZE_RATIO:.0%}: "
              f"{'met' if report[name]['size_met'] else 'NOT met'}), perplexity {row['perplexity_ratio'] - 1:+.2%} "
              f"(target <= +3%: {'met' if report[name]['perplexity_met'] else 'NOT met'})")  # fmt: skip
    return report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
