"""examples/export_and_run.py and examples/prune_causal_lm.py end to end on a tiny saved LM (slow: two ONNX exports,
a few fine-tuning steps)."""

from pathlib import Path

import pytest
import torch

from hf_gru import HybridGRUForCausalLM
from hf_gru.tasks.text import train_bpe_tokenizer
from tests.helpers import tiny_config

from .conftest import load_example
from .lm_testing import write_tiny_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny randomly initialised LM with a BPE tokenizer trained on the corpus head, and that corpus file."""
    work = tmp_path_factory.mktemp("tiny_lm")
    corpus, _ = write_tiny_data(work, train_lines=400, valid_lines=1)
    tokenizer = train_bpe_tokenizer(corpus.read_text().splitlines(), vocab_size=300)
    config = tiny_config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, gru_variant="gru",
    )  # fmt: skip
    torch.manual_seed(0)
    HybridGRUForCausalLM(config).save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    return work / "model", corpus


def test_export_and_run_reports_every_variant(lm_folder, tmp_path):
    pytest.importorskip("onnxruntime", reason="export extra")
    pytest.importorskip("torchao", reason="export extra")
    onnx = pytest.importorskip("onnx", reason="export extra")
    model, corpus = lm_folder
    argv = ["--model", str(model), "--output_dir", str(tmp_path / "out"), "--text_file", str(corpus),
            "--block_size", "32", "--new_tokens", "4", "--repeats", "1"]  # fmt: skip
    results = load_example("export_and_run").main(argv)
    variants = results["variants"]
    assert list(variants) == ["PyTorch fp32", "PyTorch int8 (torchao)", "ONNX fp32 (onnxruntime)",
                              "ONNX int8 (onnxruntime)"]  # fmt: skip
    # the float ONNX graph computes what the PyTorch model computes
    assert variants["ONNX fp32 (onnxruntime)"]["perplexity"] == pytest.approx(variants["PyTorch fp32"]["perplexity"])
    for name in ("PyTorch int8 (torchao)", "ONNX int8 (onnxruntime)"):  # width 32: scales and graph weigh more
        assert variants[name]["size_ratio"] < 0.8 and 0.9 < variants[name]["perplexity_ratio"] < 1.1
    assert (tmp_path / "out" / "results.json").is_file()
    # the classic GRU's hidden projection runs inside the ONNX Scan body: quantized there too
    graph = onnx.load(str(tmp_path / "out" / "int8" / "model.onnx")).graph
    bodies = [a.g for node in graph.node if node.op_type == "Scan" for a in node.attribute if a.name == "body"]
    body_ops = [node.op_type for body in bodies for node in body.node]
    assert bodies and "MatMul" not in body_ops and "MatMulInteger" in body_ops
    with pytest.raises(ValueError, match="not empty"):
        load_example("export_and_run").main(argv)


def test_prune_example_shrinks_the_structured_model_and_keeps_magnitude_zeros(lm_folder, tmp_path):
    model, corpus = lm_folder
    argv = ["--model", str(model), "--output_dir", str(tmp_path / "out"), "--text_file", str(corpus),
            "--block_size", "32", "--levels", "structured:0.5,magnitude:0.5", "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--new_tokens", "4", "--repeats", "1", "--disable_tqdm", "true",
            "--use_cpu", "true"]  # fmt: skip
    rows = {row["level"]: row for row in load_example("prune_causal_lm").main(argv)["rows"]}
    assert set(rows) == {"none", "structured-0.5", "magnitude-0.5"}
    assert rows["structured-0.5"]["gru_hidden_size"] == 16 and rows["structured-0.5"]["intermediate_size"] == 32
    assert rows["structured-0.5"]["bytes"] < 0.8 * rows["none"]["bytes"]
    assert rows["magnitude-0.5"]["zeros_in_linears"] == pytest.approx(0.5, abs=0.01)  # after the fine-tune
    assert rows["magnitude-0.5"]["gzip_bytes"] < rows["none"]["gzip_bytes"]
    with pytest.raises(ValueError, match="structured:2"):
        load_example("prune_causal_lm").main([*argv, "--levels", "structured:2", "--overwrite_output_dir", "true"])
