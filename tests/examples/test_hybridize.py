"""examples/hybridize.py end to end: a tiny Llama teacher trained by examples/train_causal_lm.py, converted, distilled."""

import json
import math

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, TrainingArguments

import hf_gru  # noqa: F401
from hf_gru import HybridGRUForCausalLM
from tests.examples.conftest import load_example
from tests.examples.lm_testing import load_script, tiny_argv
from tests.helpers import tiny_config


def test_the_curves_held_out_perplexity_is_the_trainers(tmp_path):
    """The in-training curve (--perplexity_every) measures what the stage-end Trainer.evaluate measures."""
    hybridize = load_example("hybridize")
    tiny_causal_lm = HybridGRUForCausalLM(tiny_config()).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, tiny_causal_lm.config.vocab_size, (11, 16), generator=generator).tolist()
    eval_set = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids, "attention_mask": [[1] * 16] * 11})
    args = TrainingArguments(tmp_path, per_device_eval_batch_size=4, report_to="none", use_cpu=True)
    expected = hybridize.perplexity(tiny_causal_lm, eval_set, args)
    tiny_causal_lm.train()
    assert hybridize.held_out_perplexity(tiny_causal_lm, eval_set, 4) == pytest.approx(expected, rel=1e-5)
    assert tiny_causal_lm.training  # left in the mode it was in, as the training loop expects


@pytest.mark.slow  # two short training jobs (~1 min on a busy 2-core machine)
def test_hybridize_converts_and_distils_a_trained_llama(tmp_path):
    teacher_dir, output_dir = tmp_path / "teacher", tmp_path / "hybrid"
    load_script().main(tiny_argv(tmp_path, teacher_dir, model_type="llama", max_steps=6, save_steps=100))
    assert json.loads((teacher_dir / "config.json").read_text())["model_type"] == "llama"

    argv = [
        "--teacher", str(teacher_dir), "--block_pattern", "GA", "--gru_variant", "mingru",
        "--layer_steps", "2", "--logit_steps", "3", "--perplexity_every", "2", "--output_dir", str(output_dir),
        "--train_file", str(tmp_path / "train.txt"), "--validation_file", str(tmp_path / "valid.txt"),
        "--block_size", "32", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
        "--max_eval_samples", "16", "--logging_steps", "1", "--disable_tqdm", "True", "--cache_dir",
        str(tmp_path / "cache"), "--dataloader_pin_memory", "False",
    ]  # fmt: skip
    metrics = load_example("hybridize").main(argv)

    for name in ("teacher", "converted", "after_layers", "after_logits"):
        assert math.isfinite(metrics[f"{name}_perplexity"]), name
    assert metrics["distillation_steps"] == 5
    assert "layers_perplexity_curve" not in metrics  # 2 layer steps: no point before the stage's end
    curve = metrics["logits_perplexity_curve"]  # step 2 from the callback, step 3 the stage-end evaluation
    assert [step for step, _ in curve] == [2, 3] and curve[-1][1] == metrics["after_logits_perplexity"]
    assert all(math.isfinite(value) for _, value in curve)
    assert metrics["student_cache_bytes"] < metrics["teacher_kv_cache_bytes"]
    saved = json.loads((output_dir / "hybridize_results.json").read_text())
    assert saved == json.loads(json.dumps(metrics))  # the curves as lists of [step, perplexity]
    card = (output_dir / "README.md").read_text()
    assert "LlamaForCausalLM" in card and str(teacher_dir) in card and "examples/hybridize.py" in card
    for name in ("loss_curve_layers.png", "loss_curve_logits.png", "modeling_hybrid_gru.py", "tokenizer.json"):
        assert (output_dir / name).is_file(), name

    model = AutoModelForCausalLM.from_pretrained(output_dir).eval()
    assert model.config.layer_types == ["linear_attention", "full_attention", "linear_attention"]
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    assert model.config.vocab_size == teacher.config.vocab_size and model.config.head_dim == teacher.config.head_dim
    out = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)

    # evaluate_hybrids.py, limited to the run's 16 held-out blocks, measures what the run reported
    evaluated = load_example("evaluate_hybrids").main(
        ["--teacher", str(teacher_dir), "--hybrids", str(output_dir), "--block_size", "32", "--max_eval_samples", "16",
         "--validation_file", str(tmp_path / "valid.txt"), "--train_file", str(tmp_path / "train.txt")]
    )  # fmt: skip
    assert evaluated["blocks"] == 16
    assert evaluated["teacher"] == pytest.approx(metrics["teacher_perplexity"], rel=1e-4)
    assert evaluated["hybrid"] == pytest.approx(metrics["after_logits_perplexity"], rel=1e-4)
