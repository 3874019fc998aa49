"""Prune the quick start model, give each pruned copy a short recovery fine-tune with the Trainer, and print a table of
sparsity vs held-out perplexity vs stored size vs decode speed:

    bash examples/quickstart.sh                 # trains outputs/hybrid-gru-austen (a few minutes)
    python examples/prune_causal_lm.py          # writes outputs/hybrid-gru-austen-pruned/<level>/ and results.json

    python examples/prune_causal_lm.py --levels structured:0.5,magnitude:0.5 --max_steps 50 --learning_rate 5e-4
    python examples/prune_causal_lm.py --levels none:0 --output_dir outputs/prune-control   # fine-tuned, unpruned

Levels: `structured:F` keeps the fraction F of the GRU state units and of the MLP channels in every layer
(`hf_gru.deploy.pruning.prune_structured`: a smaller model, saved and loaded like any other); `magnitude:S` zeroes the
fraction S of the smallest weights of every decoder linear (`magnitude_prune`: same dense size, masks kept through the
fine-tune); `none:0` fine-tunes an unpruned copy the same way (the control). Sparsity is the share of decoder-layer
linear weights removed or zeroed (the embedding is kept). Each pruned copy trains --max_steps steps on the training
part of the corpus (as train_causal_lm.py splits it) and is evaluated on the held-out part. Size: model.safetensors and
its gzip size (zeros compress; a dense file does not shrink). Speed: greedy PyTorch decode of --new_tokens tokens at
batch 1, the best of --repeats runs.
"""

import copy
import gzip
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, TrainingArguments, set_seed

from hf_gru.deploy.pruning import (
    linear_sparsity,
    magnitude_prune,
    prunable_linears,
    prune_structured,
    recovery_finetune,
)
from hf_gru.tasks.perplexity import perplexity, text_blocks

REPO_ROOT = Path(__file__).resolve().parent.parent
METHODS = ("structured", "magnitude", "none")  # none:0 = the control: fine-tuned, not pruned


@dataclass
class PruneArguments:
    model: str = field(default="outputs/hybrid-gru-austen", metadata={"help": "A saved HybridGRUForCausalLM folder."})
    levels: str = field(
        default="structured:0.75,structured:0.5,magnitude:0.5,magnitude:0.8",
        metadata={"help": "Comma-separated method:value (structured:KEEP_FRACTION, magnitude:SPARSITY)."},
    )
    text_file: str = field(
        default=str(REPO_ROOT / "data" / "austen" / "prideprejudice.txt"),
        metadata={"help": "The model's training corpus: its head fine-tunes, its held-out tail evaluates."},
    )
    validation_split_percentage: int = field(default=10, metadata={"help": "As in train_causal_lm.py."})
    block_size: int = field(default=128, metadata={"help": "Tokens per block."})
    new_tokens: int = field(default=64, metadata={"help": "Tokens generated per speed run."})
    repeats: int = field(default=3, metadata={"help": "Speed runs per model (the best counts)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir."})


TRAINING_DEFAULTS = dict(
    output_dir="outputs/hybrid-gru-austen-pruned", max_steps=100, per_device_train_batch_size=16, learning_rate=1e-3,
    warmup_steps=10, lr_scheduler_type="cosine", weight_decay=0.1, logging_steps=25, save_strategy="no",
    eval_strategy="no", report_to="none",
)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((PruneArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    levels = parse_levels(args.levels)
    if not Path(args.model, "config.json").is_file():
        raise ValueError(f"--model {args.model!r} is not a saved model folder (no config.json).")
    output_dir = Path(training_args.output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not args.overwrite_output_dir:
        raise ValueError(f"--output_dir {str(output_dir)!r} is not empty; pass --overwrite_output_dir to replace it.")

    if output_dir.exists() and args.overwrite_output_dir:
        shutil.rmtree(output_dir)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    original = AutoModelForCausalLM.from_pretrained(args.model).eval()
    split = (tokenizer, args.text_file, args.block_size, args.validation_split_percentage)
    heldout, train = text_blocks(*split, split="validation"), text_blocks(*split, split="train").tolist()
    train_set = Dataset.from_dict({"input_ids": train, "labels": train})
    prompt = tokenizer("Elizabeth", return_tensors="pt").input_ids
    dense_weights = sum(m.weight.numel() for m in prunable_linears(original).values())

    rows = [measure("none", original, None, heldout, prompt, args, output_dir / "none", tokenizer, dense_weights)]
    for name, method, value in levels:
        set_seed(training_args.seed)
        print(f"{name}: pruning, then {training_args.max_steps} fine-tuning steps ...", flush=True)
        masks = None
        if method == "structured":
            config = original.config
            model = prune_structured(
                original, round(value * config.gru_hidden_size), round(value * config.intermediate_size)
            )
        else:
            model = copy.deepcopy(original)
            masks = magnitude_prune(model, value) if method == "magnitude" else None
        before = perplexity(model.eval(), heldout)
        run_args = copy.deepcopy(training_args)
        run_args.output_dir = str(output_dir / name / "trainer")
        recovery_finetune(model, run_args, train_set, masks=masks)
        rows.append(measure(name, model.eval(), before, heldout, prompt, args, output_dir / name, tokenizer,
                            dense_weights))  # fmt: skip
    print_table(rows)
    results = {"arguments": asdict(args), "max_steps": training_args.max_steps, "rows": rows}
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def parse_levels(text: str) -> list[tuple[str, str, float]]:
    levels = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        method, _, value = item.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        valid = method in METHODS and (0 < number < 1 if method == "structured" else 0 <= number < 1)
        if not valid:
            raise ValueError(
                f"--levels item {item!r} must be structured:KEEP with 0 < KEEP < 1, magnitude:SPARSITY with "
                f"0 <= SPARSITY < 1, or none:0 (fine-tuned without pruning)."
            )
        levels.append((f"{method}-{value}", method, number))
    return levels


def measure(name, model, before, heldout, prompt, args, folder: Path, tokenizer, dense_weights: int) -> dict:
    """Saves the model to `folder` and returns its row of the table."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    weights = folder / "model.safetensors"
    kept = sum(int((m.weight != 0).sum()) for m in prunable_linears(model).values())
    row = {
        "level": name,
        "sparsity": 1 - kept / dense_weights,
        "zeros_in_linears": linear_sparsity(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "gru_hidden_size": model.config.gru_hidden_size,
        "intermediate_size": model.config.intermediate_size,
        "perplexity_before_finetune": before,
        "perplexity": perplexity(model, heldout),
        "bytes": weights.stat().st_size,
        "gzip_bytes": len(gzip.compress(weights.read_bytes(), compresslevel=6)),
        "tokens_per_s": decode_speed(model, prompt, args.new_tokens, args.repeats),
    }
    print(f"  {name}: perplexity {row['perplexity']:.2f}, {row['bytes'] / 2**20:.2f} MiB", flush=True)
    return row


def decode_speed(model, prompt: torch.Tensor, new_tokens: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                do_sample=False, disable_compile=True,
            )  # fmt: skip
        best = min(best, time.perf_counter() - start)
    return new_tokens / best


def print_table(rows: list[dict]) -> None:
    base = rows[0]
    print("\n| level | sparsity | GRU units / MLP channels | perplexity (before fine-tune) | size MiB | gzip MiB "
          "| decode tok/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        before = f" ({row['perplexity_before_finetune']:.1f})" if row["perplexity_before_finetune"] else ""
        print(f"| {row['level']} | {row['sparsity']:.0%} | {row['gru_hidden_size']} / {row['intermediate_size']} | "
              f"{row['perplexity']:.2f}{before} | {row['bytes'] / 2**20:.2f} | {row['gzip_bytes'] / 2**20:.2f} | "
              f"{row['tokens_per_s']:.0f} ({row['tokens_per_s'] / base['tokens_per_s']:.2f}x) |")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
