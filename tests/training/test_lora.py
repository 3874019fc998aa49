"""LoRA (peft) on HybridGRU: adapters on the GRU projections and on attention, trained, saved and reloaded."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import DynamicCache

from hf_gru import HybridGRUConfig, HybridGRUForCausalLM
from hf_gru.training.lora import ATTENTION_TARGETS, DEFAULT_TARGETS, MLP_TARGETS, lora_targets

# The fused GRU paths read `hidden_proj.weight` directly, so HybridGRUMixer._recur sends adapter-wrapped projections
# through the reference loop; both variants must train every adapter.
VARIANTS = ["mingru", "gru"]


def tiny_model(variant: str = "gru") -> HybridGRUForCausalLM:
    torch.manual_seed(0)
    config = HybridGRUConfig(
        vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, block_pattern="GGA", gru_variant=variant,
    )  # fmt: skip
    return HybridGRUForCausalLM(config).eval()


def lora_model(variant: str, save_base_to=None) -> tuple[torch.nn.Module, set[str]]:
    """The tiny model with LoRA on every GRU and attention projection (peft wraps the base model in place)."""
    base = tiny_model(variant)
    if save_base_to is not None:
        base.save_pretrained(save_base_to)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=lora_targets(base)))
    adapted = {name.removeprefix("base_model.model.") for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    return model, adapted


def test_target_names_match_the_model():
    assert lora_targets(tiny_model("gru")) == list(DEFAULT_TARGETS)
    # minGRU has no hidden_proj (its gates read x_t only): the name is skipped, the others stay
    assert lora_targets(tiny_model("mingru")) == ["input_proj", "out_proj", *ATTENTION_TARGETS]
    assert lora_targets(tiny_model(), MLP_TARGETS) == list(MLP_TARGETS)
    with pytest.raises(ValueError, match="\\['qkv'\\] match no linear layer"):
        lora_targets(tiny_model(), ["q_proj", "qkv"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_lora_trains_gru_and_attention_adapters_and_reloads_identically(tmp_path, variant):
    model, adapted = lora_model(variant, save_base_to=tmp_path / "base")
    gru_names = ["input_proj", "hidden_proj", "out_proj"] if variant == "gru" else ["input_proj", "out_proj"]
    expected_adapted = {f"model.layers.{i}.mixer.{n}" for i in (0, 1) for n in gru_names}
    assert adapted == expected_adapted | {f"model.layers.2.mixer.{n}" for n in ATTENTION_TARGETS}
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())

    generator = torch.Generator().manual_seed(1)
    batch = torch.randint(0, 99, (4, 24), generator=generator)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(input_ids=batch, labels=batch).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    assert losses[-1] < losses[0]
    untrained = [
        n
        for n in sorted(adapted)
        if model.get_submodule(f"base_model.model.{n}").lora_B["default"].weight.abs().max() == 0
    ]
    assert not untrained, f"LoRA adapters that got no gradient: {untrained}"  # lora_B starts at zero

    probe = torch.randint(0, 99, (2, 16), generator=generator)
    with torch.no_grad():
        expected = model(input_ids=probe).logits
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    fresh_base = HybridGRUForCausalLM.from_pretrained(tmp_path / "base").eval()
    with torch.no_grad():
        base_logits = fresh_base(input_ids=probe).logits
    reloaded = PeftModel.from_pretrained(fresh_base, tmp_path / "adapter").eval()
    with torch.no_grad():
        # Same tensors bit for bit; outputs to float32 rounding (CPU matmul kernels vary with memory alignment).
        trained_state, reloaded_state = model.state_dict(), reloaded.state_dict()
        assert trained_state.keys() == reloaded_state.keys()
        assert all(torch.equal(trained_state[k], reloaded_state[k]) for k in trained_state)
        torch.testing.assert_close(reloaded(input_ids=probe).logits, expected, rtol=1e-6, atol=1e-6)
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=probe).logits, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(base_logits, expected, atol=1e-3)  # the adapter changes the model


@pytest.mark.parametrize("variant", VARIANTS)
def test_lora_model_prefill_equals_token_by_token_decoding(variant):
    """With non-zero adapters, one forward over the prompt and a cached token-by-token pass give the same logits."""
    model, adapted = lora_model(variant)
    torch.manual_seed(2)
    for name in adapted:
        torch.nn.init.normal_(model.get_submodule(f"base_model.model.{name}").lora_B["default"].weight, std=0.5)
    ids = torch.randint(0, 99, (1, 10))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        cache = DynamicCache(config=model.config)
        steps = [model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)
