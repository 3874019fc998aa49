import json

import pytest
from transformers import AutoConfig

from hf_gru import HybridGRUConfig, HybridGRUForCausalLM
from tests.helpers import tiny_config


def test_pattern_is_tiled_over_layers():
    config = tiny_config(block_pattern="GGA", num_hidden_layers=5)
    letters = {"linear_attention": "G", "full_attention": "A"}
    assert "".join(letters[t] for t in config.layer_types) == "GGAGG"


def test_explicit_layer_types_win_and_pattern_follows():
    config = tiny_config(layer_types=["full_attention", "linear_attention", "linear_attention"])
    assert config.block_pattern == "AGG"
    assert config.layer_types == ["full_attention", "linear_attention", "linear_attention"]


def test_a_pattern_shorter_than_the_layers_survives_a_json_round_trip():
    config = tiny_config(block_pattern="GA", num_hidden_layers=4)
    reloaded = type(config).from_dict(config.to_dict())
    assert reloaded.block_pattern == "GA" and reloaded.layer_types == config.layer_types


def test_derived_defaults():
    config = tiny_config(num_key_value_heads=None, gru_hidden_size=None)
    assert config.num_key_value_heads == config.num_attention_heads
    assert config.head_dim == config.hidden_size // config.num_attention_heads
    assert config.gru_hidden_size == config.hidden_size


def test_json_round_trip_keeps_every_field(tmp_path):
    config = tiny_config(
        block_pattern="GLA",
        sliding_window=16,
        gru_variant="mingru",
        gru_hidden_size=24,
        gru_conv_kernel=3,
        bidirectional=True,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0},
        context_length=48,
        scaling="mean",
    )
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, HybridGRUConfig)
    original, loaded = config.to_dict(), reloaded.to_dict()
    for key in ("transformers_version", "_name_or_path"):  # bookkeeping, not configuration
        loaded.pop(key, None)
        original.pop(key, None)
    assert loaded == original
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hybrid_gru"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (dict(hidden_size=30, num_attention_heads=4), "30"),
        (dict(num_attention_heads=4, num_key_value_heads=3), "3"),
        (dict(block_pattern="GXA"), "X"),
        (dict(block_pattern=""), "''"),
        (dict(hidden_size=-8), "-8"),
        (dict(num_hidden_layers=0), "num_hidden_layers=0"),
        (dict(vocab_size=0), "vocab_size=0"),
        (dict(intermediate_size=-1), "intermediate_size=-1"),
        (dict(gru_variant="lstm"), "lstm"),
        (dict(block_pattern="GL"), "sliding_window=None"),
        (dict(layer_types=["full_attention", "gru", "full_attention"]), "gru"),
        (dict(layer_types=["full_attention"]), "num_hidden_layers"),
        (dict(scaling="minmax"), "minmax"),
        (dict(attention_dropout=1.5), "1.5"),
    ],
)
def test_invalid_config_raises_value_error_naming_value(overrides, needle):
    with pytest.raises(ValueError) as error:
        tiny_config(**overrides)
    assert needle in str(error.value)


def test_causal_lm_refuses_bidirectional():
    with pytest.raises(ValueError, match="bidirectional=True"):
        HybridGRUForCausalLM(tiny_config(bidirectional=True))
