"""Held-out perplexity of a causal language model, on the split examples/train_causal_lm.py holds out.

Used to compare a model with its quantized and pruned versions on the same tokens (examples/export_and_run.py,
examples/prune_causal_lm.py, tests).
"""

import math
from pathlib import Path

import torch
from datasets import load_dataset
from transformers import PreTrainedTokenizerBase

from .text import group_texts


def heldout_blocks(
    tokenizer: PreTrainedTokenizerBase, text_file: str | Path, block_size: int = 128, validation_percent: int = 10
) -> torch.LongTensor:
    """The last `validation_percent` percent of the lines of `text_file`, tokenized and cut into blocks (N, block_size),
    exactly as examples/train_causal_lm.py builds its validation set from a single --train_file."""
    if not Path(text_file).is_file():
        raise ValueError(f"text_file {str(text_file)!r} does not exist or is not a file.")
    if not 1 <= validation_percent <= 50:
        raise ValueError(f"validation_percent must be in [1, 50], got {validation_percent}.")
    lines = load_dataset(
        "text",
        data_files={"train": str(text_file)},
        split=f"train[{100 - validation_percent}%:]",
        keep_linebreaks=True,
    )
    encoded = tokenizer(lines["text"])
    blocks = group_texts({"input_ids": encoded["input_ids"]}, block_size)["input_ids"]
    if not blocks:
        raise ValueError(f"The held-out part of {str(text_file)!r} holds fewer than block_size={block_size} tokens.")
    return torch.tensor(blocks, dtype=torch.long)


@torch.no_grad()
def perplexity(model: torch.nn.Module, blocks: torch.LongTensor, batch_size: int = 16) -> float:
    """exp(mean next-token cross-entropy) over every predicted token of `blocks` (N, T), as Trainer's eval_loss."""
    total, count = 0.0, 0
    for batch in blocks.split(batch_size):
        batch = batch.to(model.device)
        loss = model(input_ids=batch, labels=batch).loss
        tokens = batch.shape[0] * (batch.shape[1] - 1)
        total, count = total + loss.item() * tokens, count + tokens
    return math.exp(total / count)


__all__ = ["heldout_blocks", "perplexity"]
