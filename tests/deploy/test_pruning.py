"""Pruning (hf_gru.deploy.pruning): structured pruning removes whole GRU units and MLP channels and keeps the function where
the removed ones were dead; magnitude pruning zeroes exactly the asked fraction and a recovery fine-tune keeps it."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, TrainingArguments

from hf_gru import HybridGRUForCausalLM, HybridGRUForSequenceClassification
from hf_gru.deploy.pruning import linear_sparsity, magnitude_prune, prune_structured, recovery_finetune
from hf_gru.models.hybrid_gru.modeling_hybrid_gru import HybridGRUMixer, HybridGRUMLP
from tests.helpers import assert_close, tiny_config

DEAD_UNITS = [0, 3, 7, 20, 31]  # of gru_hidden_size 32
DEAD_CHANNELS = list(range(0, 64, 4))  # of intermediate_size 64


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


@torch.no_grad()
def kill_units(model: torch.nn.Module) -> None:
    """Zeroes every weight that reads DEAD_UNITS (out_proj columns, hidden_proj columns) and DEAD_CHANNELS (down_proj
    columns): those units still run but contribute nothing, so removing them must not change the output."""
    for module in model.modules():
        if isinstance(module, HybridGRUMixer):
            size = module.state_size
            directions = 2 if module.bidirectional else 1
            module.out_proj.weight[:, [d * size + u for d in range(directions) for u in DEAD_UNITS]] = 0
            for name in ("hidden_proj", "hidden_proj_reverse"):
                if hasattr(module, name):
                    getattr(module, name).weight[:, DEAD_UNITS] = 0
        elif isinstance(module, HybridGRUMLP):
            module.down_proj.weight[:, DEAD_CHANNELS] = 0


@pytest.mark.parametrize(
    "model_class, overrides",
    [
        (HybridGRUForCausalLM, {"gru_variant": "mingru"}),
        (HybridGRUForCausalLM, {"gru_variant": "gru"}),
        (HybridGRUForSequenceClassification, {"gru_variant": "gru", "bidirectional": True, "num_labels": 3}),
    ],
)
def test_structured_pruning_of_dead_units_keeps_the_outputs(model_class, overrides):
    # float64: removing zero terms only changes the summation order of the matmuls, ~1e-8 apart in float32
    model = model_class(tiny_config(**overrides)).double().eval()
    kill_units(model)
    pruned = prune_structured(model, gru_hidden_size=32 - len(DEAD_UNITS), intermediate_size=64 - len(DEAD_CHANNELS))
    ids = torch.randint(3, 99, (2, 11))
    with torch.no_grad():
        assert_close(pruned(ids).logits, model(ids).logits, atol=1e-12, msg="pruned dead units")
    assert (pruned.config.gru_hidden_size, pruned.config.intermediate_size) == (27, 48)


def test_structured_pruning_removes_the_least_important_units_not_others():
    model = HybridGRUForCausalLM(tiny_config(gru_variant="gru")).double().eval()
    kill_units(model)
    one_too_many = prune_structured(model, gru_hidden_size=32 - len(DEAD_UNITS) - 1)
    ids = torch.randint(3, 99, (2, 11))
    with torch.no_grad():  # one live unit removed as well: the outputs must change, or the test above proves nothing
        assert (one_too_many(ids).logits - model(ids).logits).abs().max() > 1e-6


def test_structured_pruning_shrinks_every_layer_and_saves_and_reloads(tmp_path):
    model = HybridGRUForCausalLM(tiny_config(gru_variant="gru"))
    pruned = prune_structured(model, gru_hidden_size=16, intermediate_size=32)
    for layer in pruned.model.layers:
        if isinstance(layer.mixer, HybridGRUMixer):
            assert layer.mixer.input_proj.weight.shape == (48, 32) and layer.mixer.hidden_proj.weight.shape == (48, 16)
            assert layer.mixer.out_proj.weight.shape == (32, 16)
        assert layer.mlp.gate_proj.weight.shape == (32, 32) and layer.mlp.down_proj.weight.shape == (32, 32)
    assert sum(p.numel() for p in pruned.parameters()) < 0.75 * sum(p.numel() for p in model.parameters())
    assert model.config.gru_hidden_size == 32 and model.model.layers[0].mixer.state_size == 32  # left unchanged
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(3, 99, (2, 9))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, pruned(ids).logits)
    generated = reloaded.generate(ids, max_new_tokens=4, do_sample=False)
    assert generated.shape == (2, 13)


@pytest.mark.parametrize("sizes", [{"gru_hidden_size": 0}, {"intermediate_size": 65}, {"gru_hidden_size": 8.5}])
def test_structured_pruning_rejects_sizes_outside_the_model(sizes):
    model = HybridGRUForCausalLM(tiny_config())
    name, value = next(iter(sizes.items()))
    with pytest.raises(ValueError, match=f"{name}={value}"):
        prune_structured(model, **sizes)


def test_magnitude_pruning_zeroes_the_smallest_weights_and_finetuning_keeps_them_zero(tmp_path):
    model = HybridGRUForCausalLM(tiny_config(gru_variant="gru"))
    weight = model.model.layers[0].mixer.hidden_proj.weight
    threshold = weight.detach().abs().flatten().sort().values[weight.numel() // 2]
    masks = magnitude_prune(model, 0.5)
    assert linear_sparsity(model) == pytest.approx(0.5, abs=1e-3)
    assert bool((weight.abs() >= threshold).eq(weight != 0).all())  # the larger half survives, unchanged
    before = weight.detach().clone()

    blocks = torch.randint(3, 99, (16, 16)).tolist()
    data = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2, report_to=[],
        save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    recovery_finetune(model, args, data, masks=masks)
    assert linear_sparsity(model) == pytest.approx(0.5, abs=1e-3)
    assert not torch.equal(weight.detach(), before), "the surviving weights did not train"
    with pytest.raises(ValueError, match="sparsity must be in"):
        magnitude_prune(model, 1.0)
