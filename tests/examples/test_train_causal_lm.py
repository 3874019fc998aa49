"""examples/train_causal_lm.py end to end on a tiny corpus: the saved folder, its metrics, its loading paths."""

import json
import math
import os
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

import hf_gru  # noqa: F401
from tests.examples.lm_testing import load_script, run_without_hf_gru, tiny_argv

PROMPT = "Elizabeth"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, str]:
    """One tiny run with --push_to_hub while offline: it trains and saves, then the push fails with a clear message.

    Returns (work folder, output folder, the error message).
    """
    work = tmp_path_factory.mktemp("lm")
    output_dir = work / "out"
    argv = tiny_argv(work, output_dir, push_to_hub=True, hub_model_id="hf-gru-tests/tiny", sample_prompt=PROMPT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never reach the network from a test
        with pytest.raises(SystemExit) as stopped:
            load_script().main(argv)
    return work, output_dir, str(stopped.value)


def test_offline_push_fails_clearly_and_keeps_the_folder(trained):
    _, output_dir, message = trained
    assert "Could not push" in message and "hf-gru-tests/tiny" in message and "OfflineModeIsEnabled" in message
    assert str(output_dir) in message and "intact" in message
    for name in (
        "config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "configuration_hybrid_gru.py", "modeling_hybrid_gru.py", "README.md", "loss_curve.png", "all_results.json",
    ):  # fmt: skip
        assert (output_dir / name).is_file(), name


def test_periodic_eval_checkpoints_and_plot(trained):
    _, output_dir, _ = trained
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert [e["step"] for e in history if "eval_loss" in e] == [2, 4]  # every eval_steps; the last one is reported
    assert [e["step"] for e in history if "loss" in e] == [1, 2, 3, 4]
    assert (output_dir / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reported_perplexity_matches_an_independent_evaluation(trained):
    """Re-tokenizes valid.txt by hand, cuts 32-token blocks, and recomputes the loss with the reloaded model."""
    work, output_dir, _ = trained
    metrics = json.loads((output_dir / "all_results.json").read_text())
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]), rel=1e-9)
    assert metrics["world_size"] == 1
    model = AutoModelForCausalLM.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    lines = (work / "valid.txt").read_text().splitlines(keepends=True)
    ids = [i for line in lines for i in tokenizer(line)["input_ids"]]
    blocks = torch.tensor(ids[: 16 * 32]).view(16, 32)  # --max_eval_samples 16, --block_size 32
    with torch.no_grad():
        loss = model(input_ids=blocks, labels=blocks).loss.item()
    assert loss == pytest.approx(metrics["eval_loss"], abs=1e-4)


def test_model_card_has_metrics_and_command(trained):
    _, output_dir, _ = trained
    card = (output_dir / "README.md").read_text()
    metrics = json.loads((output_dir / "all_results.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
    assert f"| perplexity | {metrics['perplexity']:.4g} |" in card
    assert f"| eval_loss | {metrics['eval_loss']:.4g} |" in card
    assert "python examples/train_causal_lm.py --train_file" in card and "--push_to_hub" in card
    assert "trust_remote_code=True" in card and "![loss curve](loss_curve.png)" in card


def test_saved_folder_loads_with_auto_classes_and_pipeline(trained):
    _, output_dir, _ = trained
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert type(model).__name__ == "HybridGRUForCausalLM"
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|endoftext|>", "<|pad|>")
    assert model.config.vocab_size == len(tokenizer) and model.config.pad_token_id == tokenizer.pad_token_id
    generator = pipeline("text-generation", model=str(output_dir), device="cpu")
    text = generator(PROMPT, max_new_tokens=6, do_sample=False)[0]["generated_text"]
    assert text.startswith(PROMPT) and len(text) > len(PROMPT)


def test_trust_remote_code_load_where_hf_gru_is_not_importable(trained, tmp_path):
    """The saved folder works with only transformers installed: its own modeling code is loaded from the folder."""
    _, output_dir, _ = trained
    ids = [[5, 17, 42, 99, 3, 250]]
    model = AutoModelForCausalLM.from_pretrained(output_dir).eval()
    with torch.no_grad():
        expected = model(input_ids=torch.tensor(ids)).logits[0, -1, :8].tolist()
    code = f"""
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
folder = {str(output_dir)!r}
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
with torch.no_grad():
    logits = model(input_ids=torch.tensor({ids})).logits[0, -1, :8].tolist()
generator = pipeline("text-generation", model=folder, trust_remote_code=True, device="cpu")
text = generator({PROMPT!r}, max_new_tokens=6, do_sample=False)[0]["generated_text"]
print(json.dumps({{"module": type(model).__module__, "logits": logits, "text": text, "eos": tokenizer.eos_token}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = run_without_hf_gru(code, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.")  # the folder's copy of the code, not hf_gru
    assert report["logits"] == pytest.approx(expected, abs=1e-5)
    assert report["text"].startswith(PROMPT) and report["eos"] == "<|endoftext|>"


def test_refuses_to_overwrite_a_non_empty_output_dir(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="is not empty"):
        load_script().main(tiny_argv(tmp_path, output_dir))
    assert (output_dir / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"block_size": 0}, "--block_size must be a positive integer, got 0"),
        ({"validation_split_percentage": 80}, "must be in \\[1, 50\\], got 80"),
        ({"train_file": "/nonexistent/corpus.txt"}, "'/nonexistent/corpus.txt' does not exist"),
        ({"resume_from_checkpoint": "/nonexistent/checkpoint-7"}, "is not a Trainer checkpoint"),
        ({"use_lora": True}, "--use_lora adapts pretrained weights"),
        ({"text_column": "body"}, "--text_column 'body' is not in the data; its columns are \\['text'\\]"),
        ({"block_size": 4096}, "exceeds the model's max_position_embeddings 128"),
    ],
)
def test_bad_arguments_raise_value_errors(tmp_path, overrides, match):
    output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        load_script().main(tiny_argv(tmp_path, output_dir, **overrides))
    assert not output_dir.exists()


def test_fsdp_flag_on_cpu_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="FSDP needs GPUs here"):
        load_script().main(tiny_argv(tmp_path, tmp_path / "out", fsdp="full_shard"))
    assert not (tmp_path / "out").exists()


def test_hub_dataset_offline_fails_clearly_and_writes_nothing(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    output_dir = tmp_path / "out"
    argv = tiny_argv(tmp_path, output_dir, train_file=None, validation_file=None, dataset_name="hf-gru-tests/nothing")
    with pytest.raises(SystemExit, match="(?s)could not load dataset 'hf-gru-tests/nothing'.*--train_file"):
        load_script().main(argv)
    assert not output_dir.exists()


def test_csv_with_a_text_column_and_a_held_out_tail(tmp_path):
    """A .csv file with the text in another column; without a validation file the last 20% of rows are held out."""
    import csv

    from tests.examples.lm_testing import CORPUS

    paragraphs = [p for p in CORPUS.read_text().split("\n\n") if p.strip()][:400]
    with open(tmp_path / "novel.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "body"])
        writer.writerows(enumerate(paragraphs))
    output_dir = tmp_path / "out"
    argv = tiny_argv(tmp_path, output_dir, train_file=tmp_path / "novel.csv", validation_file=None, text_column="body",
                     validation_split_percentage=20, max_steps=2, eval_steps=2, save_steps=2)  # fmt: skip
    metrics = load_script().main(argv)
    assert math.isfinite(metrics["eval_loss"]) and metrics["perplexity"] == pytest.approx(
        math.exp(metrics["eval_loss"])
    )
    # The validation blocks come from the last 80 paragraphs only: tokenize them by hand and compare the first block.
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    tail_ids = [i for p in paragraphs[320:] for i in tokenizer(p)["input_ids"]]
    model = AutoModelForCausalLM.from_pretrained(output_dir).eval()
    blocks = torch.tensor(tail_ids[: 16 * 32]).view(16, 32)
    with torch.no_grad():
        assert model(input_ids=blocks, labels=blocks).loss.item() == pytest.approx(metrics["eval_loss"], abs=1e-4)
