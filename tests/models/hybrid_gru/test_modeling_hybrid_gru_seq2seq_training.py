"""HybridGRUForConditionalGeneration beyond the dynamic cache: static-cache generation equals dynamic, gradient
checkpointing gives the same loss and gradients, LoRA (peft) trains only the adapters and saves/reloads."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import EncoderDecoderCache, StaticCache

from hf_gru import HybridGRUForConditionalGeneration
from hf_gru.training.lora import lora_targets
from tests.helpers import assert_close
from tests.models.hybrid_gru.test_modeling_hybrid_gru_seq2seq import seq2seq_model, source

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def training_batch() -> dict[str, torch.Tensor]:
    """Two sources (one left-padded) and labels of uneven length (-100 past the end)."""
    generator = torch.Generator().manual_seed(3)
    src = torch.randint(3, 99, (2, 7), generator=generator)
    mask = torch.ones_like(src)
    mask[1, :2] = 0
    labels = torch.randint(3, 99, (2, 6), generator=generator)
    labels[1, 4:] = -100
    return dict(input_ids=src, attention_mask=mask, labels=labels)


@pytest.mark.parametrize("num_beams", [1, 2])
@pytest.mark.parametrize("decoder_pattern", ["GA", "GGA"])
def test_static_cache_generation_equals_dynamic(num_beams, decoder_pattern):
    model = seq2seq_model(decoder_block_pattern=decoder_pattern)
    src, mask = source(3), torch.ones(3, 7, dtype=torch.long)
    mask[0, :3] = 0
    kwargs = dict(attention_mask=mask, max_new_tokens=8, num_beams=num_beams, do_sample=False, eos_token_id=None,
                  output_scores=True, return_dict_in_generate=True)  # fmt: skip
    dynamic = model.generate(src, **kwargs)
    static = model.generate(src, cache_implementation="static", **kwargs)
    assert dynamic.sequences[:, 1:].unique().numel() > 3  # the comparison would be vacuous otherwise
    assert torch.equal(static.sequences, dynamic.sequences)
    for step, (a, b) in enumerate(zip(static.scores, dynamic.scores, strict=True)):
        assert_close(a, b, 1e-4, f"step {step}")
    cache = static.cache
    assert isinstance(cache, EncoderDecoderCache) and isinstance(cache.self_attention_cache, StaticCache)
    assert isinstance(cache.cross_attention_cache, StaticCache)
    assert cache.cross_attention_cache.layers[0].keys.shape[-2] == 7  # sized to the source


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    model = seq2seq_model().train()
    batch = training_batch()
    calls = []
    model.model.decoder.layers[0].mlp.register_forward_pre_hook(lambda *args: calls.append(1))  # inside the layer

    def loss_and_gradients() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        calls.clear()
        loss = model(**batch).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain = loss_and_gradients()
    assert len(calls) == 1
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.model.encoder.gradient_checkpointing and model.model.decoder.gradient_checkpointing
    checkpointed_loss, checkpointed = loss_and_gradients()
    assert len(calls) == 2  # the layer's body ran again in backward: checkpointing really happened
    assert_close(checkpointed_loss, plain_loss, 0.0)
    assert plain.keys() == checkpointed.keys() == {n for n, _ in model.named_parameters()}
    for name in plain:
        assert_close(checkpointed[name], plain[name], 1e-6, name)


def test_lora_trains_only_adapters_and_reloads_identically(tmp_path):
    base = seq2seq_model()
    base.save_pretrained(tmp_path / "base")
    frozen = {n: p.detach().clone() for n, p in base.named_parameters()}
    config = LoraConfig(r=4, lora_alpha=8, target_modules=lora_targets(base), task_type="SEQ_2_SEQ_LM")
    model = get_peft_model(base, config)
    adapted = {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert (
        "model.decoder.layers.0.cross_attn.q_proj" in adapted and "model.encoder.layers.0.mixer.input_proj" in adapted
    )
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())

    batch = training_batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    assert losses[-1] < losses[0]
    for name, param in model.named_parameters():
        if "lora_" not in name:
            base_name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(param, frozen[base_name]), name
    untrained = [n for n in sorted(adapted) if model.get_submodule(f"base_model.model.{n}").lora_B["default"].weight.abs().max() == 0]  # fmt: skip
    assert not untrained, f"LoRA adapters that got no gradient: {untrained}"

    src, decoder_ids = source(), source(2, 4)
    generate = dict(max_new_tokens=6, do_sample=False, eos_token_id=None)
    with torch.no_grad():
        expected = model(input_ids=src, decoder_input_ids=decoder_ids).logits
    expected_ids = model.generate(input_ids=src, **generate)
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    fresh = HybridGRUForConditionalGeneration.from_pretrained(tmp_path / "base").eval()
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert_close(reloaded(input_ids=src, decoder_input_ids=decoder_ids).logits, expected, 1e-5)
    assert torch.equal(reloaded.generate(input_ids=src, **generate), expected_ids)
