"""examples/distill_encoder.py with a tiny random BERT teacher: it distils, saves a Hub-ready folder with the
teacher's tokenizer, and that folder fine-tunes with examples/train_text_classification.py."""

import json
from pathlib import Path

import pytest
from transformers import AutoModel, AutoTokenizer

from hf_gru import HybridGRUModel
from tests.examples.test_train_text_classification import reviews, write_jsonl
from tests.helpers import tiny_bert_teacher

NOVEL = "\n\n".join(
    ["elizabeth had a letter from mr darcy, and she was not to be in it.", "he would love her very much."] * 12
)


def test_rejects_files_it_cannot_read(distill_encoder, tmp_path):
    (tmp_path / "notes.md").write_text("text")
    with pytest.raises(ValueError, match="notes.md"):
        distill_encoder.main(["--train_files", str(tmp_path / "notes.md"), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="missing.txt"):
        distill_encoder.main(["--train_files", str(tmp_path / "missing.txt"), "--output_dir", str(tmp_path / "o")])


@pytest.mark.slow  # a distillation run and a fine-tuning run of tiny models: ~30 s on a busy 2-core machine
def test_distils_then_fine_tunes_as_a_classifier(distill_encoder, text_classification, tmp_path):
    teacher, tokenizer = tiny_bert_teacher(tmp_path / "teacher")
    (tmp_path / "novel.txt").write_text(NOVEL)
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": r["text"], "label": r["label"]} for r in reviews(40, 0)])
    out = tmp_path / "student"
    metrics = distill_encoder.main([
        "--teacher", str(tmp_path / "teacher"), "--train_files", str(tmp_path / "novel.txt"), rows,
        "--max_seq_length", "16", "--validation_split_percentage", "20", "--num_attention_heads", "2",
        "--intermediate_size", "48", "--block_pattern", "GA", "--max_steps", "12", "--learning_rate", "1e-2",
        "--per_device_train_batch_size", "8", "--warmup_steps", "0", "--disable_tqdm", "true",
        "--output_dir", str(out),
    ])  # fmt: skip
    assert metrics["held_out_hidden_error"] < metrics["before_hidden_error"]
    assert metrics["held_out_pooled_cosine"] > metrics["before_pooled_cosine"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "all_results.json"):
        assert (out / name).is_file(), name
    student = AutoModel.from_pretrained(out)
    assert isinstance(student, HybridGRUModel) and student.config.bidirectional
    # started as the teacher's embedding (tests/pretrained/test_encoder_distillation.py) and trained with the rest
    assert student.embed_tokens.weight.shape == teacher.embeddings.word_embeddings.weight.shape
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tokenizer.get_vocab()

    results = text_classification.main([
        "--model_name_or_path", str(out), "--train_file", rows,
        "--test_file", write_jsonl(tmp_path / "test.jsonl", reviews(12, 1)), "--max_seq_length", "16",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--disable_tqdm", "true",
        "--output_dir", str(tmp_path / "classifier"),
    ])  # fmt: skip
    assert 0.0 <= results["test_accuracy"] <= 1.0
    config = json.loads((tmp_path / "classifier" / "config.json").read_text())
    assert config["architectures"] == ["HybridGRUForSequenceClassification"] and config["bidirectional"]
    assert Path(tmp_path / "classifier" / "tokenizer.json").is_file()


@pytest.mark.slow  # one fine-tuning run of a tiny BERT
def test_classification_example_fine_tunes_a_bert_folder(text_classification, tmp_path):
    """The baseline of the encoder table: the teacher itself (any transformers encoder) through the same script."""
    tiny_bert_teacher(tmp_path / "bert")
    results = text_classification.main([
        "--model_name_or_path", str(tmp_path / "bert"),
        "--train_file", write_jsonl(tmp_path / "train.jsonl", reviews(24, 0)),
        "--test_file", write_jsonl(tmp_path / "test.jsonl", reviews(8, 1)), "--max_seq_length", "16",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--disable_tqdm", "true",
        "--output_dir", str(tmp_path / "classifier"),
    ])  # fmt: skip
    assert 0.0 <= results["test_accuracy"] <= 1.0
    config = json.loads((tmp_path / "classifier" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert "fine-tuned from" in (tmp_path / "classifier" / "README.md").read_text()
