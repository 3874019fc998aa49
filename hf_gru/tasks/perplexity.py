"""Held-out perplexity of a causal language model, on the split examples/train_causal_lm.py holds out.

Used to compare a model with its quantized, pruned and exported versions on the same tokens
(examples/export_and_run.py, examples/prune_causal_lm.py, tests).
"""

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import load_dataset
from transformers import PreTrainedTokenizerBase

from .text import group_texts

SPLITS = ("train", "validation")


def text_blocks(
    tokenizer: PreTrainedTokenizerBase,
    text_file: str | Path,
    block_size: int = 128,
    validation_percent: int = 10,
    split: str = "validation",
) -> torch.LongTensor:
    """One split of the lines of `text_file`, tokenized and cut into blocks (N, block_size), exactly as
    examples/train_causal_lm.py builds its sets from a single --train_file: "validation" is the last
    `validation_percent` percent of the lines, "train" the rest."""
    if not Path(text_file).is_file():
        raise ValueError(f"text_file {str(text_file)!r} does not exist or is not a file.")
    if not 1 <= validation_percent <= 50:
        raise ValueError(f"validation_percent must be in [1, 50], got {validation_percent}.")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    percent = 100 - validation_percent
    spec = f"train[:{percent}%]" if split == "train" else f"train[{percent}%:]"
    lines = load_dataset("text", data_files={"train": str(text_file)}, split=spec, keep_linebreaks=True)
    tokenized = lines.map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=lines.column_names)
    tokenized = tokenized.remove_columns([c for c in tokenized.column_names if c != "input_ids"])
    # Grouped 1000 rows at a time, as the script does: each group drops its own remainder shorter than a block.
    grouped = tokenized.map(group_texts, batched=True, batch_size=1000, fn_kwargs={"block_size": block_size})
    blocks = grouped["input_ids"]
    if not blocks:
        raise ValueError(f"The {split} part of {str(text_file)!r} holds fewer than block_size={block_size} tokens.")
    return torch.tensor(list(blocks), dtype=torch.long)


@torch.no_grad()
def perplexity(model, blocks: torch.LongTensor, batch_size: int = 16) -> float:
    """exp(mean next-token cross-entropy) over every predicted token of `blocks` (N, T), as Trainer's eval_loss.

    `model` is a causal LM module or anything with an `OnnxCausalLM`-style `step(input_ids) -> (logits, state)`.
    """
    total, count = 0.0, 0
    for batch in blocks.split(batch_size):
        if hasattr(model, "step"):
            logits = model.step(batch)[0]
        else:
            logits = model(input_ids=batch.to(model.device)).logits.cpu()
        total += F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum").item()
        count += batch[:, 1:].numel()
    return math.exp(total / count)


__all__ = ["text_blocks", "perplexity"]
