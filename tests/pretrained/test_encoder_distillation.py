"""hf_gru.pretrained.encoder_distillation: a bidirectional HybridGRU student built from a (tiny, random) BERT teacher keeps its
embeddings and tokenizer, learns from it, and saves as a checkpoint that fine-tunes as a classifier."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

from hf_gru import HybridGRUForSequenceClassification, HybridGRUModel
from hf_gru.pretrained.encoder_distillation import (
    EncoderDistillationTrainer,
    build_student,
    distillation_metrics,
    encode_texts,
    encoder_distillation_loss,
    student_config,
)
from tests.helpers import tiny_bert_teacher

TEXTS = [
    "elizabeth had a letter from mr darcy.",
    "she would not taste the stale tea, and he was very bad.",
    "a great snack, my box of coffee was good.",
    "her love for the letter was not much.",
]
STUDENT = {"intermediate_size": 48, "num_attention_heads": 2, "block_pattern": "GA"}


@pytest.fixture
def teacher(tmp_path):
    return tiny_bert_teacher(tmp_path / "teacher")


def test_student_copies_embeddings_and_uses_the_teachers_tokenizer(teacher):
    model, tokenizer = teacher
    student = build_student(model, tokenizer, **STUDENT)
    assert isinstance(student, HybridGRUModel) and student.config.bidirectional
    assert torch.equal(student.embed_tokens.weight, model.embeddings.word_embeddings.weight)
    assert torch.equal(student.norm.weight, model.encoder.layer[-1].output.LayerNorm.weight)
    config = student.config
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (len(tokenizer), 32, 2)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 2, 3)  # [PAD], [CLS], [SEP]
    assert config.layer_types == ["linear_attention", "full_attention"]


def test_student_config_refuses_a_width_that_cannot_take_the_embeddings(teacher):
    model, tokenizer = teacher
    with pytest.raises(ValueError, match="hidden_size=64"):
        student_config(model.config, tokenizer, hidden_size=64)
    with pytest.raises(ValueError, match="bidirectional"):
        student_config(model.config, tokenizer, bidirectional=False)


def test_encode_texts_truncates_rows_and_chunks_running_text(teacher):
    _, tokenizer = teacher
    rows = list(encode_texts(tokenizer, TEXTS + ["  "], max_length=8, chunk=False))
    assert len(rows) == len(TEXTS) and all(len(r) <= 8 and r[0] == 2 and r[-1] == 3 for r in rows)
    assert rows[0] == tokenizer(TEXTS[0], truncation=True, max_length=8)["input_ids"]
    chunks = list(encode_texts(tokenizer, TEXTS, max_length=8, chunk=True))
    body = [t for text in TEXTS for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert all(len(c) == 8 for c in chunks) and len(chunks) == len(body) // 6
    assert [t for c in chunks for t in c[1:-1]] == body[: 6 * len(chunks)]


def test_loss_is_zero_for_the_teacher_itself_and_ignores_padding():
    teacher_hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    student_hidden = teacher_hidden.clone()
    student_hidden[0, 3:] += 100.0  # padding positions only
    parts = encoder_distillation_loss(student_hidden, teacher_hidden, mask)
    assert parts["loss"].abs() < 1e-6 and parts["pooled_cosine"] > 1 - 1e-6
    zeros = encoder_distillation_loss(torch.zeros_like(teacher_hidden), teacher_hidden, mask, pooled_weight=0.0)
    assert torch.isclose(zeros["loss"], torch.tensor(1.0))  # relative error of predicting zeros


def test_distillation_loss_decreases_and_teacher_stays_frozen(teacher, tmp_path, one_torch_thread):
    model, tokenizer = teacher
    frozen = {name: p.clone() for name, p in model.named_parameters()}
    student = build_student(model, tokenizer, **STUDENT)
    sequences = [{"input_ids": ids} for ids in encode_texts(tokenizer, TEXTS * 4, max_length=16, chunk=False)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=15, learning_rate=1e-2, per_device_train_batch_size=8,
        report_to="none", save_strategy="no", logging_steps=5, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = EncoderDistillationTrainer(
        model=student, teacher_model=model, args=args, train_dataset=sequences,
        data_collator=DataCollatorWithPadding(tokenizer),
    )  # fmt: skip
    batches = trainer.get_eval_dataloader(sequences)
    before, eval_before = distillation_metrics(student, model, batches), trainer.evaluate(sequences)["eval_loss"]
    trainer.train()
    after, eval_after = distillation_metrics(student, model, batches), trainer.evaluate(sequences)["eval_loss"]
    assert eval_after < 0.5 * eval_before, (eval_before, eval_after)
    assert after["hidden_error"] < before["hidden_error"] and after["pooled_cosine"] > before["pooled_cosine"]
    for name, p in model.named_parameters():
        assert torch.equal(p, frozen[name]), name


def test_saved_student_loads_as_a_sequence_classifier(teacher, tmp_path):
    model, tokenizer = teacher
    student = build_student(model, tokenizer, **STUDENT)
    folder = tmp_path / "student"
    student.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)
    assert isinstance(classifier, HybridGRUForSequenceClassification)
    for name, tensor in student.state_dict().items():
        assert torch.equal(classifier.model.state_dict()[name], tensor), name
    reloaded = AutoTokenizer.from_pretrained(folder)
    batch = reloaded(TEXTS, padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == tokenizer(TEXTS, padding=True, return_tensors="pt")["input_ids"].tolist()
    assert classifier(**batch, labels=torch.tensor([0, 1, 2, 0])).logits.shape == (4, 3)
