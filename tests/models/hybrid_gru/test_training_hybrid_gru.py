"""Training behaviour: Trainer, gradient checkpointing, gradient accumulation, embedding resizing."""

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_gru import HybridGRUForCausalLM
from tests.helpers import assert_close, tiny_config


def pad_collate(features: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pads a batch; padded labels are -100 so they never count in the loss."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[i, : len(f["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def toy_dataset(num_rows: int = 32) -> Dataset:
    """Sequences of varying length with a learnable rule (each token is the previous plus one)."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(num_rows):
        length = int(torch.randint(4, 12, (1,), generator=generator))
        start = int(torch.randint(3, 60, (1,), generator=generator))
        rows.append({"input_ids": list(range(start, start + length))})
    return Dataset.from_list(rows)


def train(tmp_path, model, batch_size: int, accumulation: int, max_steps: int, lr: float = 1e-2) -> Trainer:
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=max_steps,
        learning_rate=lr,
        lr_scheduler_type="constant",
        optim="sgd",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=toy_dataset(), data_collator=pad_collate)
    trainer.train()
    return trainer


@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_trainer_loss_goes_down(tmp_path, variant):
    model = HybridGRUForCausalLM(tiny_config(gru_variant=variant))
    losses = [e["loss"] for e in train(tmp_path, model, 8, 1, 30, lr=0.5).state.log_history if "loss" in e]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_gradient_accumulation_4x1_equals_1x4(tmp_path):
    """Uneven lengths make naive per-micro-batch averaging wrong; `num_items_in_batch` makes it exact."""
    config = tiny_config(block_pattern="GAG")
    one_big = HybridGRUForCausalLM(config)
    four_small = HybridGRUForCausalLM(config)
    four_small.load_state_dict(one_big.state_dict())
    train(tmp_path / "a", one_big, batch_size=4, accumulation=1, max_steps=3)
    train(tmp_path / "b", four_small, batch_size=1, accumulation=4, max_steps=3)
    for (name, a), b in zip(one_big.named_parameters(), four_small.parameters(), strict=True):
        assert_close(a, b, 1e-5, name)


@pytest.mark.parametrize("variant", ["gru", "mingru"])
def test_gradient_checkpointing_gives_same_gradients(variant):
    model = HybridGRUForCausalLM(tiny_config(gru_variant=variant, block_pattern="GAG")).train()
    batch = pad_collate([{"input_ids": list(range(5, 14))}, {"input_ids": list(range(20, 26))}])

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(**batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name in plain:
        assert_close(checkpointed[name], plain[name], 1e-6, name)


def test_resize_token_embeddings_keeps_old_rows_and_tying():
    model = HybridGRUForCausalLM(tiny_config())
    old = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(120)
    assert model.config.vocab_size == 120
    assert model.get_input_embeddings().weight.shape == (120, 32)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert torch.equal(model.get_input_embeddings().weight[:99], old)
    out = model(torch.tensor([[5, 110, 119]]))
    assert out.logits.shape == (1, 3, 120)
