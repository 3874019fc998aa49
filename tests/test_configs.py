"""configs/: each config.json loads with AutoConfig, builds a model and matches what configs/make_configs.py writes."""

import importlib.util
import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hf_gru  # noqa: F401  (registers hybrid_gru with AutoConfig)
from tests.examples.lm_testing import REPO

spec = importlib.util.spec_from_file_location("make_configs", REPO / "configs" / "make_configs.py")
make_configs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_configs)

# name -> (parameters in millions, rounded; layer pattern as letters)
EXPECTED = {
    "hybrid-gru-tiny": (1.3, "GGAG"),
    "hybrid-gru-small": (19.2, "GGGAGGGA"),
    "hybrid-gru-base": (120.6, "GGA" * 4),
}


@pytest.mark.parametrize("name", sorted(make_configs.SPECS))
def test_config_loads_and_matches_the_generator(name):
    path = REPO / "configs" / name
    assert (path / "config.json").read_text() == make_configs.config_json(make_configs.SPECS[name])  # no drift
    config = AutoConfig.from_pretrained(path)
    assert type(config).__name__ == "HybridGRUConfig"
    expected = make_configs.HybridGRUConfig(**make_configs.SPECS[name], **make_configs.SPECIAL_IDS)
    assert config.to_diff_dict() == expected.to_diff_dict()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    millions, pattern = EXPECTED[name]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions
    assert "".join("G" if t == "linear_attention" else "A" for t in config.layer_types) == pattern


def test_derived_fields_follow_hand_edits(tmp_path):
    """config.json leaves out what HybridGRUConfig derives, so editing the width or the pattern stays consistent."""
    values = json.loads((REPO / "configs" / "hybrid-gru-tiny" / "config.json").read_text())
    assert not {"layer_types", "head_dim", "gru_hidden_size"} & set(values)
    values.update(hidden_size=256, num_hidden_layers=6, block_pattern="GA")
    (tmp_path / "config.json").write_text(json.dumps(values))
    config = AutoConfig.from_pretrained(tmp_path)
    assert (config.head_dim, config.gru_hidden_size) == (64, 256)
    assert config.layer_types == ["linear_attention", "full_attention"] * 3


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    from hf_gru import modeling_hybrid_gru

    config = load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml"))  # unknown keys raise
    assert config.distributed_type.value == {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(name, "DEEPSPEED")
    if name == "fsdp":
        assert hasattr(modeling_hybrid_gru, config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])
        assert config.fsdp_config["fsdp_version"] == 2
