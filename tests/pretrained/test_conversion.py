"""hf_gru.convert_to_hybrid: exact copies of what is kept, GRU layers started from attention, clear refusals."""

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    BertLMHeadModel,
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from hf_gru import HybridGRUForCausalLM, convert_to_hybrid
from hf_gru.pretrained.conversion import decay_timescales, gru_state_bytes, kv_cache_bytes, write_conversion_card
from tests.helpers import assert_close, run_without_hf_gru

SIZES = dict(
    vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)  # fmt: skip

# (name, class, config): one tiny teacher per supported family and per setting that changes what is copied.
FAMILIES = {
    "llama": (LlamaForCausalLM, LlamaConfig(**SIZES)),
    "llama_tied_bias": (LlamaForCausalLM, LlamaConfig(**SIZES, tie_word_embeddings=True, attention_bias=True)),
    "llama3_rope": (
        LlamaForCausalLM,
        LlamaConfig(
            **SIZES,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 5e5,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),  # fmt: skip
    ),
    "llama_yarn_head_dim": (
        LlamaForCausalLM,
        LlamaConfig(
            **SIZES,
            head_dim=16,
            rope_parameters={
                "rope_type": "yarn",
                "rope_theta": 1e4,
                "factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        ),  # fmt: skip
    ),
    "mistral_window": (MistralForCausalLM, MistralConfig(**SIZES, sliding_window=4)),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**SIZES)),
    "qwen2_mixed_window": (  # layer 0 full attention, layers 1-2 sliding: both kinds kept side by side
        Qwen2ForCausalLM,
        Qwen2Config(**SIZES, use_sliding_window=True, sliding_window=4, max_window_layers=1),
    ),
    "qwen3": (Qwen3ForCausalLM, Qwen3Config(**SIZES, head_dim=16)),
}


def teacher_of(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cls, config = FAMILIES[family]
    model = cls(config).eval()
    with torch.no_grad():  # norms start at 1 and biases at 0: randomise them so a missed copy cannot pass
        for name, parameter in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def padded_batch() -> dict[str, torch.Tensor]:
    """Two rows, the first left-padded by 3; positions count real tokens, as generate() and HybridGRU give them."""
    ids = torch.randint(3, 99, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    ids[0, :3] = 0
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


@pytest.mark.parametrize("family", FAMILIES)
def test_all_attention_conversion_reproduces_the_teacher(family):
    teacher = teacher_of(family)
    student = convert_to_hybrid(teacher, block_pattern="A").eval()
    batch = padded_batch()
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = teacher(**batch).logits
        assert_close(student(**batch).logits[real], expected[real], 1e-5, f"{family} full forward")
        # prefill 6 tokens, then decode the last 3 one at a time through the cache
        caches = [DynamicCache(config=teacher.config), DynamicCache(config=student.config)]
        for start, stop in ((0, 6), (6, 7), (7, 8), (8, 9)):
            step = {k: v[:, start:stop] for k, v in batch.items() if k != "attention_mask"}
            step["attention_mask"] = batch["attention_mask"][:, :stop]
            out_t = teacher(**step, cache=caches[0], use_cache=True).logits
            out_s = student(**step, cache=caches[1], use_cache=True).logits
            rows = real[:, start:stop]
            assert_close(out_s[rows], out_t[rows], 1e-5, f"{family} cached step {start}")
        prompt = {k: v for k, v in batch.items() if k != "position_ids"}
        greedy = dict(max_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True)
        generated_t, generated_s = teacher.generate(**prompt, **greedy), student.generate(**prompt, **greedy)
    assert torch.equal(generated_s.sequences, generated_t.sequences)
    for score_s, score_t in zip(generated_s.scores, generated_t.scores, strict=True):
        assert_close(score_s, score_t, 1e-5, f"{family} generate")


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral_window"])
def test_kept_tensors_are_copied_bit_for_bit(family):
    teacher = teacher_of(family)
    student = convert_to_hybrid(teacher, block_pattern="GGA", gru_variant="mingru")
    assert student.config.layer_types[:2] == ["linear_attention"] * 2
    kept_type = "sliding_attention" if family == "mistral_window" else "full_attention"
    assert student.config.layer_types[2] == kept_type
    source = teacher.state_dict()
    target = student.state_dict()
    copied = 0
    for name, tensor in target.items():
        teacher_name = name.replace(".mixer.", ".self_attn.")
        if ".mixer." in name and student.config.layer_types[int(name.split(".")[2])] == "linear_attention":
            continue
        if name.endswith("o_proj.bias") and family == "qwen2":  # Qwen2 has no o_proj bias: zero adds nothing
            assert not tensor.any()
            continue
        assert torch.equal(tensor, source[teacher_name]), name
        copied += 1
    assert copied == len(target) - sum(".mixer." in n and n.split(".")[2] in "01" for n in target) - (
        family == "qwen2"
    )
    assert student.config.rope_parameters == teacher.config.rope_parameters
    assert student.config.rms_norm_eps == teacher.config.rms_norm_eps
    assert (student.config.pad_token_id, student.config.eos_token_id) == (0, 2)
    assert student.generation_config.to_dict() == teacher.generation_config.to_dict()


def test_untied_head_stays_untied_and_tied_stays_tied():
    untied = convert_to_hybrid(teacher_of("llama"), block_pattern="GA")
    assert not untied.config.tie_word_embeddings
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    tied = convert_to_hybrid(teacher_of("llama_tied_bias"), block_pattern="GA")
    assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("state", ["heads", "kv_heads"])
def test_mingru_layer_starts_as_attention_with_recency_weights(state):
    """A constant input makes attention output o(v) at every position; the converted minGRU mixer then outputs
    o((1 - keep^t) v) per head: the same map with each head's exponential-moving-average weights."""
    teacher = teacher_of("llama")
    overrides = {"gru_hidden_size": 16} if state == "kv_heads" else {}
    student = convert_to_hybrid(teacher, block_pattern="GA", gru_variant="mingru", **overrides)
    attention, mixer = teacher.model.layers[0].self_attn, student.model.layers[0].mixer
    x = torch.randn(1, 1, 32).expand(1, 12, 32)
    with torch.no_grad():
        value = attention.v_proj(x[0, :1])[0]  # (kv_heads * head_dim,) = (16,)
        per_query_head = value.view(2, 8)[[0, 0, 1, 1]].reshape(32)  # grouped-query attention repeats kv heads
        keep = decay_timescales(mixer.state_size // 8).repeat_interleave(8)
        mass = 1 - keep ** torch.arange(1, 13, dtype=torch.float32)[:, None]  # (T, state)
        if state == "kv_heads":  # one slot per kv head, read by every query head of its group
            expected = attention.o_proj((mass * value).view(12, 2, 8)[:, [0, 0, 1, 1]].reshape(12, 32))
        else:
            expected = attention.o_proj(mass * per_query_head)
        actual = mixer(x)[0][0]
    assert_close(actual, expected, 1e-5)


def test_gru_layer_starts_close_to_its_attention_on_a_constant_input():
    teacher = teacher_of("llama")
    student = convert_to_hybrid(teacher, block_pattern="GA", gru_variant="gru")
    attention, mixer = teacher.model.layers[0].self_attn, student.model.layers[0].mixer
    x = torch.randn(1, 1, 32).expand(1, 2048, 32)
    with torch.no_grad():
        attended = attention(x[:, :3], position_embeddings=teacher.model.rotary_emb(x[:, :3], torch.arange(3)[None]),
                             attention_mask=None)[0][0, -1]  # fmt: skip
        mixed = mixer(x)[0][0, -1]
    # After 2048 steps every head's average has converged (keep^2048 < 4e-4); only the tanh, kept near its linear
    # range by the scaling, separates the two.
    assert (mixed - attended).norm() < 0.1 * attended.norm(), ((mixed - attended).norm(), attended.norm())


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        (lambda: GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99)), "GPT2LMHeadModel.*gpt2"),
        (lambda: MixtralForCausalLM(MixtralConfig(**SIZES, num_local_experts=2)), "MixtralForCausalLM.*mixture"),
        (lambda: LlamaForCausalLM(LlamaConfig(**SIZES, mlp_bias=True)), "mlp_bias=True"),
        (
            lambda: BertLMHeadModel(
                BertConfig(
                    hidden_size=32,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    intermediate_size=64,
                    vocab_size=99,
                    is_decoder=True,
                )
            ),
            "BertLMHeadModel",
        ),
        (lambda: LlamaForCausalLM(LlamaConfig(**SIZES, hidden_act="gelu")), "hidden_act='gelu'"),
    ],
)
def test_unsupported_teachers_are_refused_by_name(teacher, message):
    with pytest.raises(ValueError, match=message):
        convert_to_hybrid(teacher())


def test_bad_layer_choices_are_refused():
    teacher = teacher_of("llama")
    with pytest.raises(ValueError, match=r"attention_layers contains \[5\]"):
        convert_to_hybrid(teacher, attention_layers=[0, 5])
    with pytest.raises(ValueError, match="cannot be overridden"):
        convert_to_hybrid(teacher, hidden_size=64)
    with pytest.raises(ValueError, match="gru_hidden_size=24"):
        convert_to_hybrid(teacher, gru_hidden_size=24)
    with pytest.raises(ValueError, match="has none"):
        convert_to_hybrid(teacher, block_pattern="GL")
    assert convert_to_hybrid(teacher, attention_layers=[1]).config.block_pattern == "GAG"


def test_kv_cache_bytes_count_only_attention_layers():
    teacher = teacher_of("llama")
    student = convert_to_hybrid(teacher, block_pattern="GGA")
    per_token = 2 * 2 * 8 * 2  # keys and values, 2 kv heads of 8, bf16
    assert kv_cache_bytes(teacher.config, 100) == 3 * per_token * 100
    assert kv_cache_bytes(student.config, 100) == per_token * 100
    assert gru_state_bytes(student.config) == 2 * (32 + 32 * 4) * 2  # state + conv inputs, two GRU layers


def test_converted_model_saves_hub_ready_with_a_card_naming_the_teacher(tmp_path):
    teacher = teacher_of("qwen3")
    student = convert_to_hybrid(teacher, block_pattern="GGA", gru_variant="mingru").eval()
    folder = tmp_path / "hybrid"
    student.save_pretrained(folder)
    card = write_conversion_card(folder, student, metrics={"perplexity": 1.5}, command="python x.py")
    text = card.read_text()
    assert "Qwen3ForCausalLM" in text and "v_proj" in text and "| perplexity | 1.5 |" in text
    ids = torch.randint(3, 99, (1, 7))
    with torch.no_grad():
        expected = student(ids).logits
        reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
        assert isinstance(reloaded, HybridGRUForCausalLM)
        assert_close(reloaded(ids).logits, expected, 1e-6)
    assert json.loads((folder / "config.json").read_text())["qk_norm"] is True


def test_the_card_states_the_teachers_license_and_quantization(tmp_path):
    student = convert_to_hybrid(teacher_of("llama"), block_pattern="GA")
    student.save_pretrained(tmp_path)
    plain = write_conversion_card(tmp_path, student).read_text()
    assert "license: apache-2.0" in plain and "Teacher:" not in plain  # nothing claimed when nothing is known
    student.conversion.teacher = "Tiny-Teacher (Q4_1)"
    student.conversion.teacher_license, student.conversion.teacher_quantization = "MIT", "Q4_1"
    text = write_conversion_card(tmp_path, student).read_text()
    assert "license: mit" in text and "# HybridGRU from Tiny-Teacher (Q4_1)" in text
    assert "Teacher: Tiny-Teacher (Q4_1), license MIT; its weights went through Q4_1 quantization" in text


@pytest.mark.slow  # a clean Python process imports transformers again (~10-30 s)
def test_converted_model_loads_as_remote_code_without_hf_gru(tmp_path):
    student = convert_to_hybrid(teacher_of("qwen3"), block_pattern="GGA", gru_variant="mingru").eval()
    folder = tmp_path / "hybrid"
    student.save_pretrained(folder)
    ids = torch.randint(3, 99, (1, 7))
    with torch.no_grad():
        expected = student(ids).logits
    code = (
        "import json, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()\n"
        f"ids = torch.tensor({ids.tolist()})\n"
        "with torch.no_grad():\n"
        "    print(json.dumps(model(ids).logits.tolist()))\n"
    )
    remote = torch.tensor(run_without_hf_gru(code, tmp_path))
    assert_close(remote, expected, 1e-6)
