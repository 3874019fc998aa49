"""Distilling a pretrained encoder (e.g. sentence-transformers' all-MiniLM-L6-v2, a 6-layer BERT) into a bidirectional
HybridGRU encoder that keeps the teacher's tokenizer and token embeddings.

The student is a `HybridGRUModel` with `bidirectional=True` and the teacher's width, vocabulary and depth; its token
embedding is a copy of the teacher's word embedding. Nothing else is copied: BERT's blocks (post-LayerNorm, GELU FFN,
absolute positions, 12 heads of 32) differ from HybridGRU's (pre-RMSNorm, SwiGLU, RoPE), so the mixers and MLPs learn
from the teacher's outputs. The objective matches what a sentence-embedding model is used for: every token's final
hidden state (relative squared error) and the mean-pooled sentence embedding (cosine), as in the sentence-embedding
distillation of Reimers & Gurevych (2020), "Making Monolingual Sentence Embeddings Multilingual".
"""

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig
from ..models.hybrid_gru.modeling_hybrid_gru import HybridGRUModel
from .distillation import DistillationTrainer


def student_config(
    teacher_config: PreTrainedConfig, tokenizer: PreTrainedTokenizerBase, **overrides
) -> HybridGRUConfig:
    """A bidirectional HybridGRU config with the teacher's width, depth, vocabulary and position range and the
    tokenizer's pad id; `overrides` set any other field (`block_pattern`, `gru_variant`, `intermediate_size`, ...).

    The width and vocabulary cannot be overridden: the token embedding is copied from the teacher, and the teacher's
    hidden states are the targets.
    """
    fixed = {"hidden_size": teacher_config.hidden_size, "vocab_size": teacher_config.vocab_size}
    for name, value in fixed.items():
        if name in overrides and overrides[name] != value:
            raise ValueError(
                f"The student's {name} must equal the teacher's ({value}) to copy its embeddings and match its hidden "
                f"states, got {name}={overrides[name]}."
            )
    if len(tokenizer) > teacher_config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the teacher's vocabulary has {teacher_config.vocab_size}: "
            "they must belong together."
        )
    values = {
        **fixed,
        "intermediate_size": teacher_config.intermediate_size,
        "num_hidden_layers": teacher_config.num_hidden_layers,
        "num_attention_heads": teacher_config.num_attention_heads,
        "max_position_embeddings": teacher_config.max_position_embeddings,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "block_pattern": "GGA",
        "gru_variant": "mingru",
        "bidirectional": True,
        "tie_word_embeddings": False,  # an encoder: there is no output embedding to tie
    }
    values.update(overrides)
    if not values["bidirectional"]:
        raise ValueError("An encoder student must be bidirectional (the teacher sees both sides); got False.")
    return HybridGRUConfig(**values)


def build_student(teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **overrides) -> HybridGRUModel:
    """A fresh bidirectional `HybridGRUModel` (see `student_config`) whose token embedding is the teacher's.

    The student's final RMSNorm weight starts as the gain of the teacher's last LayerNorm (a post-LN encoder such as
    BERT ends with one), so the student's outputs start at the teacher's per-channel scale instead of 1: a LayerNorm
    and an RMSNorm with the same gain differ only by centring and the bias.
    """
    student = HybridGRUModel(student_config(teacher.config, tokenizer, **overrides))
    with torch.no_grad():
        student.embed_tokens.weight.copy_(teacher.get_input_embeddings().weight)
        gain = last_layer_norm_weight(teacher)
        if gain is not None:
            student.norm.weight.copy_(gain)
    return student


def last_layer_norm_weight(teacher: nn.Module) -> torch.Tensor | None:
    """The weight of the teacher's last `nn.LayerNorm` over the hidden size (BERT: the last layer's output norm)."""
    norms = [m for m in teacher.modules() if isinstance(m, nn.LayerNorm) and m.weight is not None]
    norms = [m for m in norms if m.weight.shape == (teacher.config.hidden_size,)]
    return norms[-1].weight if norms else None


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D): the mean over real tokens (sentence-transformers' pooling of all-MiniLM)."""
    weights = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def encoder_distillation_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    hidden_weight: float = 1.0,
    pooled_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """`loss = hidden_weight * relative squared error + pooled_weight * (1 - cosine)` over a batch.

    - `hidden_error`: sum over real tokens of |student - teacher|^2 / sum of |teacher|^2 (0 = equal, 1 = as far as
      predicting zeros), so the weight does not depend on the teacher's scale.
    - `pooled_cosine`: mean cosine similarity of the mean-pooled sentence embeddings.
    """
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(
            f"Student and teacher hidden states differ in shape: {tuple(student_hidden.shape)} vs "
            f"{tuple(teacher_hidden.shape)}."
        )
    teacher_hidden = teacher_hidden.float()
    student_hidden = student_hidden.float()
    real = attention_mask.unsqueeze(-1).to(teacher_hidden.dtype)
    hidden_error = ((student_hidden - teacher_hidden).square() * real).sum() / (teacher_hidden.square() * real).sum()
    pooled_cosine = F.cosine_similarity(
        mean_pool(student_hidden, attention_mask), mean_pool(teacher_hidden, attention_mask), dim=-1
    ).mean()
    loss = hidden_weight * hidden_error + pooled_weight * (1 - pooled_cosine)
    return {"loss": loss, "hidden_error": hidden_error.detach(), "pooled_cosine": pooled_cosine.detach()}


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (BERT: [CLS] and [SEP]), read off one encoded word."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise ValueError(f"Cannot find where {type(tokenizer).__name__} places its special tokens: {full} vs {bare}.")


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], max_length: int, chunk: bool
) -> Iterator[list[int]]:
    """Token ids with the tokenizer's special tokens ([CLS] ... [SEP]), at most `max_length` each.

    `chunk=False`: one sequence per text, truncated (short documents: reviews). `chunk=True`: the texts are one
    running document (a novel's paragraphs), cut into consecutive full-length pieces; the last short piece is dropped.
    """
    prefix, suffix = special_affixes(tokenizer)
    room = max_length - len(prefix) - len(suffix)
    if room <= 0:
        raise ValueError(f"max_length={max_length} leaves no room for tokens besides the special tokens.")
    pending: list[int] = []
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"Texts must be strings, got {type(text).__name__}: {text!r:.80}.")
        if not text.strip():
            continue
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not chunk:
            yield prefix + ids[:room] + suffix
            continue
        pending.extend(ids)
        while len(pending) >= room:
            yield prefix + pending[:room] + suffix
            pending = pending[room:]


@torch.no_grad()
def distillation_metrics(
    student: nn.Module, teacher: nn.Module, batches: Iterable[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Token-weighted `hidden_error` and sequence-weighted `pooled_cosine` of the student against the teacher over
    `batches` (dicts with `input_ids` and `attention_mask`), both models in eval mode."""
    modes = student.training, teacher.training
    student.eval(), teacher.eval()
    device = next(student.parameters()).device
    squared_error = reference = cosine = sequences = 0.0
    for batch in batches:
        input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        s = student(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        t = teacher(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        real = attention_mask.unsqueeze(-1).float()
        squared_error += ((s - t).square() * real).sum().item()
        reference += (t.square() * real).sum().item()
        cosine += F.cosine_similarity(mean_pool(s, attention_mask), mean_pool(t, attention_mask), dim=-1).sum().item()
        sequences += input_ids.shape[0]
    student.train(modes[0]), teacher.train(modes[1])
    if sequences == 0:
        raise ValueError("No batches to evaluate the distillation on.")
    return {"hidden_error": squared_error / reference, "pooled_cosine": cosine / sequences}


class EncoderDistillationTrainer(DistillationTrainer):
    """`DistillationTrainer` (stage `"hidden"`, no labels needed) whose loss is `encoder_distillation_loss` between the
    student's and the frozen teacher's final hidden states on the same batch; `layer_weight > 0` adds the per-layer
    MSE of the `"hidden"` stage (`layer_map`). `evaluate()` reports the same loss as `eval_loss`."""

    def __init__(
        self,
        *args,
        hidden_weight: float = 1.0,
        pooled_weight: float = 1.0,
        layer_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(*args, stage="hidden", **kwargs)
        self.hidden_weight, self.pooled_weight, self.layer_weight = hidden_weight, pooled_weight, layer_weight
        self.can_return_loss = True  # evaluation computes the loss although batches have no labels

    def _hidden_loss(self, mask: torch.Tensor, student_outputs=None, teacher_outputs=None) -> torch.Tensor:
        parts = encoder_distillation_loss(
            student_outputs.last_hidden_state,
            teacher_outputs.last_hidden_state,
            mask,
            self.hidden_weight,
            self.pooled_weight,
        )
        # The caller divides by the number of counted tokens (a per-token sum is expected): scale back up.
        loss = parts["loss"] * mask.sum().clamp(min=1)
        if self.layer_weight:
            loss = loss + self.layer_weight * super()._hidden_loss(mask)
        return loss


__all__ = [
    "student_config",
    "build_student",
    "mean_pool",
    "encoder_distillation_loss",
    "encode_texts",
    "distillation_metrics",
    "EncoderDistillationTrainer",
]
