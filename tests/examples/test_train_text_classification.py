"""examples/train_text_classification.py on tiny data: it learns, saves a folder the Auto classes and the
text-classification pipeline load, and rejects bad input with a ValueError naming it."""

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from tests.helpers import run_without_hf_gru

POSITIVE = ["great", "tasty", "love", "delicious", "perfect", "excellent", "yummy", "best"]
NEGATIVE = ["awful", "stale", "bad", "bland", "broken", "worst", "gross", "soggy"]
FILLER = ["the", "snack", "was", "really", "and", "box", "coffee", "these", "chips", "tea"]
TINY_MODEL = [
    "--hidden_size", "32", "--intermediate_size", "64", "--num_attention_heads", "2", "--vocab_size", "300",
    "--max_seq_length", "32", "--per_device_train_batch_size", "8", "--learning_rate", "5e-3", "--warmup_steps", "0",
    "--logging_steps", "2", "--disable_tqdm", "true",
]  # fmt: skip


def reviews(n: int, seed: int) -> list[dict]:
    """Short reviews whose label is given by which sentiment words they hold."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "great" if i % 2 == 0 else "other"
        words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if label == "great" else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def trained(text_classification, tmp_path_factory) -> tuple[Path, dict]:
    """One short training run shared by the checks below: 48 reviews, 8 epochs of a tiny bidirectional model."""
    tmp = tmp_path_factory.mktemp("text_classification")
    args = [
        "--train_file", write_jsonl(tmp / "train.jsonl", reviews(48, seed=0)),
        "--test_file", write_jsonl(tmp / "test.jsonl", reviews(16, seed=1)),
        "--validation_split_percentage", "25",
        "--num_train_epochs", "8",
        "--output_dir", str(tmp / "out"),
        *TINY_MODEL,
    ]  # fmt: skip
    metrics = text_classification.main(args)
    return tmp / "out", metrics


def test_learns_and_reports_metrics(trained):
    _, metrics = trained
    for key in ("eval_accuracy", "eval_f1", "test_accuracy", "test_f1", "test_f1_great", "test_f1_other"):
        assert key in metrics
    # half the test reviews are "great": a model that learned nothing scores about 0.5
    assert metrics["test_accuracy"] >= 0.9, metrics


def test_saved_folder(trained):
    folder, metrics = trained
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "loss_curve.png",
        "README.md",
        "all_results.json",
    ):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "great", "1": "other"} and config["bidirectional"] is True
    assert "AutoModelForSequenceClassification" in config["auto_map"]
    assert f"{metrics['test_accuracy']:.4f}" in (folder / "README.md").read_text()
    assert (folder / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_pipeline_matches_the_model(trained):
    """The pipeline's label and score equal a softmax over the Auto model's logits."""
    folder, _ = trained
    text = "the coffee was delicious and perfect"
    classifier = pipeline("text-classification", model=str(folder), trust_remote_code=True)
    result = classifier(text)[0]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        probs = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
    assert result["label"] == model.config.id2label[int(probs.argmax())] == "great"
    assert result["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_csv_integer_labels_and_validation_file(text_classification, tmp_path):
    """csv input, integer labels, an explicit validation file: label names are the integers as strings."""
    paths = {}
    for split, seed in (("train", 0), ("validation", 1)):
        paths[split] = tmp_path / f"{split}.csv"
        with paths[split].open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["review", "stars"])
            writer.writeheader()
            for row in reviews(12, seed):
                writer.writerow({"review": row["text"], "stars": 5 if row["label"] == "great" else 1})
    args = [
        "--train_file", str(paths["train"]), "--validation_file", str(paths["validation"]),
        "--text_column", "review", "--label_column", "stars", "--num_train_epochs", "1",
        "--output_dir", str(tmp_path / "out"), "--save_strategy", "no", "--load_best_model_at_end", "false",
        *TINY_MODEL,
    ]  # fmt: skip
    metrics = text_classification.main(args)
    assert "eval_accuracy" in metrics and "test_accuracy" not in metrics
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "1", "1": "5"}


def test_bad_input_is_value_error(text_classification, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", reviews(8, seed=0))
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "so so", "label": "meh"}])
    base = ["--train_file", train, "--output_dir", str(tmp_path / "out"), *TINY_MODEL]
    with pytest.raises(ValueError, match="'meh'"):
        text_classification.main([*base, "--test_file", test, "--do_train", "false"])
    with pytest.raises(ValueError, match="'sentiment'"):
        text_classification.main([*base, "--label_column", "sentiment"])
    with pytest.raises(ValueError, match="reviews.txt"):
        text_classification.main(["--train_file", str(tmp_path / "reviews.txt")])
    with pytest.raises(ValueError, match="1.5"):
        text_classification.main([*base, "--token_dropout", "1.5"])


def test_token_dropout_transform(text_classification):
    transform = text_classification.token_dropout_transform(0.3, special_ids={0}, seed=0)
    ids = list(range(1, 1001)) + [0]
    out = transform({"input_ids": [ids], "attention_mask": [[1] * len(ids)], "labels": [1]})
    kept = out["input_ids"][0]
    assert 0 in kept and out["labels"] == [1]  # special tokens and labels stay
    assert len(out["attention_mask"][0]) == len(kept)
    assert kept == [t for t in ids if t in set(kept)] and 0.6 < len(kept) / len(ids) < 0.8  # order kept, ~30% dropped
    again = text_classification.token_dropout_transform(0.3, special_ids={0}, seed=0)
    assert again({"input_ids": [ids], "attention_mask": [[1] * len(ids)], "labels": [1]})["input_ids"][0] == kept


@pytest.mark.slow
def test_pipeline_without_hf_gru(trained):
    """The saved folder classifies through its remote code in a process where hf_gru cannot be imported."""
    folder, _ = trained
    code = (
        "import json\nfrom transformers import pipeline\n"
        f"clf = pipeline('text-classification', model={str(folder)!r}, trust_remote_code=True)\n"
        "out = clf(['the coffee was delicious and perfect', 'the chips were stale and awful'])\n"
        "print(json.dumps({'labels': [o['label'] for o in out], 'module': type(clf.model).__module__}))\n"
    )
    result = run_without_hf_gru(code, cwd=folder.parent)
    assert result["labels"] == ["great", "other"]
    assert result["module"].startswith("transformers_modules")


@pytest.mark.slow
def test_fine_food_reviews_beats_majority(text_classification, tmp_path):
    """A short run on real data (1,000 fine-food reviews, 2 epochs) beats the majority class on 300 test reviews."""
    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "classification" / "fine_food_reviews"
    if not (data / "train.jsonl").is_file():
        pytest.skip(f"fine-food reviews not found at {data}")
    args = [
        "--train_file", str(data / "train.jsonl"), "--test_file", str(data / "test.jsonl"),
        "--max_train_samples", "1000", "--max_eval_samples", "300", "--max_seq_length", "128",
        "--num_train_epochs", "2", "--learning_rate", "1e-3", "--output_dir", str(tmp_path / "out"),
        "--disable_tqdm", "true",
    ]  # fmt: skip
    metrics = text_classification.main(args)
    test_labels = [json.loads(line)["label"] for line in (data / "test.jsonl").read_text().splitlines()[:300]]
    majority = max(test_labels.count(label) for label in set(test_labels)) / len(test_labels)
    assert metrics["test_accuracy"] > majority + 0.03, (metrics["test_accuracy"], majority)


def test_lowercase_tokenizer_is_saved_with_its_normalizer(text_classification, tmp_path):
    args = text_classification.ModelArguments(lowercase=True, vocab_size=300)
    tokenizer = text_classification.build_tokenizer(args, [row["text"] for row in reviews(20, seed=0)], 32)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("The SNACK was GREAT")["input_ids"] == reloaded("the snack was great")["input_ids"]


def test_dataset_name_with_class_labels(text_classification, tmp_path):
    """`--dataset_name` (here a local folder of parquet files, as the Hub serves them) with `ClassLabel` labels."""
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    for split, seed in (("train", 0), ("test", 1)):
        rows = reviews(12, seed)
        labels = [1 if row["label"] == "great" else 0 for row in rows]
        data = datasets.Dataset.from_dict({"text": [row["text"] for row in rows], "label": labels}, features=features)
        data.to_parquet(tmp_path / "data" / f"{split}.parquet")
    args = ["--dataset_name", str(tmp_path / "data"), "--num_train_epochs", "1", "--output_dir", str(tmp_path / "out")]
    metrics = text_classification.main([*args, *TINY_MODEL])
    assert "test_f1_neg" in metrics and "test_f1_pos" in metrics
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
