"""The packaged offline `evaluate` metrics against hand-computed values."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hf_gru.metrics import METRIC_NAMES, load_metric, metric_path

REPO = Path(__file__).resolve().parents[2]


def test_accuracy():
    accuracy = load_metric("accuracy")
    preds, refs = [1, 0, 1, 1, 0], [1, 1, 1, 0, 0]  # 3 of 5 correct
    assert accuracy.compute(predictions=preds, references=refs) == {"accuracy": pytest.approx(0.6)}
    assert accuracy.compute(predictions=preds, references=refs, normalize=False)["accuracy"] == 3
    # the correct ones weigh 1 + 1 + 1 of a total weight 6
    weighted = accuracy.compute(predictions=preds, references=refs, sample_weight=[1, 2, 1, 1, 1])
    assert weighted["accuracy"] == pytest.approx(0.5)


def test_f1_binary():
    f1 = load_metric("f1")
    preds, refs = [1, 0, 1, 1, 0], [1, 1, 1, 0, 0]
    # positive class 1: TP 2, FP 1, FN 1 -> P = R = 2/3 -> F1 = 2/3
    assert f1.compute(predictions=preds, references=refs)["f1"] == pytest.approx(2 / 3)
    # positive class 0: TP 1, FP 1, FN 1 -> F1 = 1/2
    assert f1.compute(predictions=preds, references=refs, pos_label=0)["f1"] == pytest.approx(0.5)


def test_f1_multiclass_averages():
    f1 = load_metric("f1")
    refs, preds = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    # class 0: P 1, R 2/3 -> 0.8; class 1: P 1/2, R 1/2 -> 0.5; class 2: P 1/2, R 1 -> 2/3. Supports 3, 2, 1.
    per_class = [0.8, 0.5, 2 / 3]
    expected = {
        "macro": sum(per_class) / 3,
        "weighted": (3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6,
        "micro": 4 / 6,  # single-label micro F1 is the accuracy
    }
    for average, value in expected.items():
        assert f1.compute(predictions=preds, references=refs, average=average)["f1"] == pytest.approx(value), average
    assert f1.compute(predictions=preds, references=refs, average=None)["f1"] == pytest.approx(per_class)


def test_f1_bad_average_is_value_error():
    f1 = load_metric("f1")
    with pytest.raises(ValueError, match="'avg'"):
        f1.compute(predictions=[0, 1], references=[0, 1], average="avg")
    with pytest.raises(ValueError, match="binary"):
        f1.compute(predictions=[0, 1, 2], references=[0, 2, 1])


def test_seqeval():
    seqeval = load_metric("seqeval")
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
    preds = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"]]
    scores = seqeval.compute(predictions=preds, references=refs)
    # gold entities PER, LOC, ORG(2 tokens); predicted PER and ORG(1 token): only PER matches -> P 1/2, R 1/3
    assert scores["overall_precision"] == pytest.approx(1 / 2)
    assert scores["overall_recall"] == pytest.approx(1 / 3)
    assert scores["overall_f1"] == pytest.approx(0.4)
    assert scores["overall_accuracy"] == pytest.approx(5 / 7)  # 5 of 7 tags equal
    assert scores["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert scores["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert scores["LOC"]["number"] == 1 and scores["LOC"]["recall"] == 0.0


def test_seqeval_strict_mode():
    seqeval = load_metric("seqeval")
    refs, preds = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    # CoNLL's lenient chunking starts an entity at a leading I- tag; strict IOB2 rejects it
    assert seqeval.compute(predictions=preds, references=refs)["overall_f1"] == 1.0
    assert seqeval.compute(predictions=preds, references=refs, mode="strict", scheme="IOB2")["overall_f1"] == 0.0
    with pytest.raises(ValueError, match="IOB3"):
        seqeval.compute(predictions=preds, references=refs, mode="strict", scheme="IOB3")
    with pytest.raises(ValueError, match="Sentence 0"):
        seqeval.compute(predictions=[["O"]], references=[["O", "O"]])


def test_wer():
    wer = load_metric("wer")
    refs = ["the cat sat on the mat", "hello world"]
    preds = ["the cat sit on mat", "hello world again"]
    # sentence 1: sat->sit and a deleted "the" (2 errors / 6 words); sentence 2: one insertion (1 / 2)
    scores = wer.compute(predictions=preds, references=refs, return_details=True)
    assert scores == {"wer": pytest.approx(3 / 8), "substitutions": 1, "deletions": 1, "insertions": 1, "hits": 6}
    assert wer.compute(predictions=refs, references=refs) == {"wer": 0.0}


def test_cer():
    cer = load_metric("cer")
    # one substitution in 4 characters, one insertion on 2: 2 / 6
    assert cer.compute(predictions=["abed", "xyz"], references=["abcd", "xy"])["cer"] == pytest.approx(1 / 3)
    assert cer.compute(predictions=["ab"], references=["a b"])["cer"] == pytest.approx(1 / 3)  # spaces count


def test_sacrebleu():
    bleu = load_metric("sacrebleu")
    # 1- to 4-gram matches 5/6, 3/5, 2/4, 1/3 ("the" clipped to one; "on the mat" vs "on a mat"); equal lengths: BP 1
    scores = bleu.compute(predictions=["the cat sat on the mat"], references=["the cat sat on a mat"])
    assert scores["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert scores["precisions"] == pytest.approx([500 / 6, 60.0, 50.0, 100 / 3]) and scores["brevity_penalty"] == 1.0
    # a 3-word hypothesis for a 6-word reference: BP = exp(1 - 6 / 3)
    short = bleu.compute(predictions=["the cat sat"], references=["the cat sat on the mat"])
    assert short["brevity_penalty"] == pytest.approx(2.718281828**-1)
    with pytest.raises(ValueError, match="'moses'"):
        bleu.compute(predictions=["a"], references=["a"], tokenize="moses")


def test_chrf():
    chrf = load_metric("chrf")
    # character 1-grams: P = R = 1/2 ("aa" vs "ab"); 2-grams: P = R = 0; longer orders absent: mean P = R = 1/4,
    # and F-beta (beta 2) of 1/4 and 1/4 is 1/4
    assert chrf.compute(predictions=["aa"], references=["ab"]) == {"chrf": pytest.approx(25.0)}
    assert chrf.compute(predictions=["a b"], references=["ab"]) == {"chrf": 100.0}  # whitespace is ignored
    assert chrf.compute(predictions=["xyz"], references=["ab"]) == {"chrf": 0.0}
    assert chrf.compute(predictions=["AB"], references=["ab"], lowercase=True) == {"chrf": 100.0}
    with pytest.raises(ValueError, match="word_order=-1"):
        chrf.compute(predictions=["a"], references=["a"], word_order=-1)


def test_unknown_metric_is_value_error():
    with pytest.raises(ValueError, match="'bleu'"):
        load_metric("bleu")


@pytest.mark.slow
def test_metrics_ship_in_the_wheel(tmp_path):
    """A non-editable build holds every metric script, and `load_metric` works from the installed layout."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        (src / name).write_bytes((REPO / name).read_bytes())
    subprocess.run(["cp", "-r", str(REPO / "hf_gru"), str(src / "hf_gru")], check=True)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip_wheel, "-w", str(tmp_path), str(src)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("hf_gru-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for metric in METRIC_NAMES:
        assert f"hf_gru/metrics/{metric}/{metric}.py" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        f"import hf_gru.metrics as m; assert m.__file__.startswith({str(site)!r}), m.__file__; "
        "print(m.load_metric('wer').compute(predictions=['a b'], references=['a c']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "{'wer': 0.5}" in out.stdout
    assert Path(metric_path("wer")).is_dir()
