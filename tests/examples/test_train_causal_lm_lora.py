"""examples/train_causal_lm.py --use_lora: a LoRA adapter on the GRU and attention projections of a trained model."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.examples.lm_testing import load_script, tiny_argv


@pytest.mark.slow  # two training runs
def test_lora_adapter_trains_saves_and_reloads(tmp_path):
    main = load_script().main
    main(tiny_argv(tmp_path, tmp_path / "base", max_steps=4))
    metrics = main(tiny_argv(
        tmp_path, tmp_path / "lora", config_name=None, model_name_or_path=tmp_path / "base", use_lora=True,
        lora_r=4, max_steps=6, save_steps=3, eval_steps=3,
    ))  # fmt: skip
    adapter = tmp_path / "lora"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(
        ["input_proj", "out_proj", "q_proj", "k_proj", "v_proj", "o_proj"]
    )
    weights = load_file(adapter / "adapter_model.safetensors")
    gru_b = [k for k in weights if ".mixer.input_proj.lora_B" in k]
    assert gru_b and all(weights[k].abs().max() > 0 for k in gru_b)  # the GRU adapters trained
    assert not any("base_layer" in k for k in weights)  # an adapter, not a copy of the model
    assert "LoRA adapter" in (adapter / "README.md").read_text()

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    model = PeftModel.from_pretrained(base, adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    lines = (tmp_path / "valid.txt").read_text().splitlines(keepends=True)
    ids = [i for line in lines for i in tokenizer(line)["input_ids"]]
    blocks = torch.tensor(ids[: 16 * 32]).view(16, 32)
    with torch.no_grad():
        loss = model(input_ids=blocks, labels=blocks).loss.item()
        with model.disable_adapter():
            base_loss = model(input_ids=blocks, labels=blocks).loss.item()
    assert loss == pytest.approx(metrics["eval_loss"], abs=1e-4)
    base_metrics = json.loads((tmp_path / "base" / "all_results.json").read_text())
    assert base_loss == pytest.approx(base_metrics["eval_loss"], abs=1e-4)  # the base weights were not changed
