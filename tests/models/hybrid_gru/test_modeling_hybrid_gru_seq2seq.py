"""HybridGRUForConditionalGeneration: cached == uncached decoding, greedy/sampling/beam generate on the
EncoderDecoderCache, left-padded sources, labels -> decoder inputs, save/reload (in process and as remote code),
Seq2SeqTrainer with predict_with_generate, and the encoder-decoder config rules."""

import json
import warnings

import pytest
import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, DynamicCache, EncoderDecoderCache
from transformers.cache_utils import LinearAttentionCacheLayerMixin

from hf_gru import HybridGRUConfig, HybridGRUForConditionalGeneration
from hf_gru.models.hybrid_gru.modeling_hybrid_gru_seq2seq import new_encoder_decoder_cache, shift_tokens_right
from tests.helpers import assert_close, run_without_hf_gru, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ATOL = 1e-5


def seq2seq_config(**overrides) -> HybridGRUConfig:
    values = dict(is_encoder_decoder=True, bidirectional=True, num_decoder_layers=4, decoder_block_pattern="GA")
    values.update(overrides)
    return tiny_config(**values)


def seq2seq_model(**overrides) -> HybridGRUForConditionalGeneration:
    """Weights spread wider than the init, so a random model's greedy, beam and sampled outputs differ and vary."""
    model = HybridGRUForConditionalGeneration(seq2seq_config(**overrides)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model


def source(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(3, 99, (batch, length))


def test_decoder_cache_follows_the_decoder_pattern():
    config = seq2seq_config()
    assert config.layer_types == ["linear_attention", "linear_attention", "full_attention"]
    decoder = config.get_text_config(decoder=True)
    assert decoder.layer_types == ["linear_attention", "full_attention"] * 2 and decoder.num_hidden_layers == 4
    assert not decoder.bidirectional and config.get_text_config() is config
    cache = new_encoder_decoder_cache(config)
    slots = cache.self_attention_cache.layers
    assert [isinstance(s, LinearAttentionCacheLayerMixin) for s in slots] == [True, False, True, False]
    assert config.decoder_start_token_id == config.bos_token_id == 1


def test_defaults_copy_the_encoder():
    config = tiny_config(is_encoder_decoder=True, bidirectional=True, block_pattern="GA", num_hidden_layers=2)
    assert (config.num_decoder_layers, config.decoder_block_pattern) == (2, "GA")


def test_an_encoder_decoder_config_defaults_to_a_bidirectional_encoder():
    """`bidirectional` not given: True with is_encoder_decoder (the Auto path too), False otherwise; saved as a bool."""
    config = AutoConfig.for_model("hybrid_gru", is_encoder_decoder=True, vocab_size=99, hidden_size=32)
    assert config.bidirectional is True
    assert HybridGRUForConditionalGeneration(config).model.encoder.config.bidirectional
    assert AutoConfig.for_model("hybrid_gru").bidirectional is False and tiny_config().bidirectional is False
    assert HybridGRUConfig.from_dict(config.to_dict()).bidirectional is True
    with pytest.raises(ValueError, match="got bidirectional=False"):
        AutoConfig.for_model("hybrid_gru", is_encoder_decoder=True, bidirectional=False)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(decoder_block_pattern="GXA"), "decoder_block_pattern='GXA'"),
        (dict(decoder_block_pattern=""), "decoder_block_pattern=''"),
        (dict(decoder_block_pattern="GL"), "decoder_block_pattern='GL'.*sliding_window"),
        (dict(bidirectional=False), "bidirectional=False"),
        (dict(num_decoder_layers=0), "num_decoder_layers"),
        (
            dict(is_encoder_decoder=False, bidirectional=False),
            r"\{'num_decoder_layers': 4, 'decoder_block_pattern': 'GA'\}",
        ),
    ],
)
def test_config_errors_are_value_errors_naming_the_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        seq2seq_config(**overrides)


def test_model_refuses_a_decoder_only_config():
    with pytest.raises(ValueError, match="is_encoder_decoder=False"):
        HybridGRUForConditionalGeneration(tiny_config())


def test_labels_shift_right_into_decoder_inputs_and_give_the_loss():
    model = seq2seq_model()
    labels = torch.tensor([[5, 6, 7, 2], [8, 9, 2, -100]])
    assert shift_tokens_right(labels, 0, 1).tolist() == [[1, 5, 6, 7], [1, 8, 9, 2]]
    src = source()
    out = model(input_ids=src, labels=labels)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    logits = model(input_ids=src, decoder_input_ids=decoder_input_ids).logits
    assert_close(out.logits, logits, 0.0)
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 99), labels.view(-1), ignore_index=-100)
    assert_close(out.loss, expected, 1e-6)


def test_cached_decoding_equals_one_uncached_pass():
    """Prefill two decoder tokens, then one at a time: logits equal the full pass (GRU states, self-attention KV and
    the cross-attention KV computed once all come from the cache)."""
    model = seq2seq_model()
    src, mask = source(), torch.ones(2, 7, dtype=torch.long)
    decoder_ids = torch.randint(3, 99, (2, 6))
    with torch.no_grad():
        full = model(input_ids=src, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        encoder_outputs = model.get_encoder()(input_ids=src, attention_mask=mask)
        out = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=decoder_ids[:, :2],
                    use_cache=True)  # fmt: skip
        cache, steps = out.cache, [out.logits]
        assert isinstance(cache, EncoderDecoderCache) and cache.is_updated == {i: True for i in range(4)}
        cross_keys = cache.cross_attention_cache.layers[0].keys
        for t in range(2, 6):
            out = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=decoder_ids[:, t : t + 1],
                        cache=cache, use_cache=True)  # fmt: skip
            steps.append(out.logits)
        assert cache.cross_attention_cache.layers[0].keys is cross_keys  # computed once, never recomputed
    assert_close(torch.cat(steps, dim=1), full, ATOL)


def test_past_key_values_is_the_deprecated_name_of_cache():
    """BART/Marian's name for the cache: it must feed the cache (with a deprecation warning), not vanish in **kwargs."""
    model = seq2seq_model()
    src, decoder_ids = source(), source(2, 4)
    with torch.no_grad():
        full = model(input_ids=src, decoder_input_ids=decoder_ids).logits
        encoder_outputs = model.get_encoder()(input_ids=src)
        out = model(encoder_outputs=encoder_outputs, decoder_input_ids=decoder_ids[:, :3], use_cache=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step = model(encoder_outputs=encoder_outputs, decoder_input_ids=decoder_ids[:, 3:],
                         past_key_values=out.cache, use_cache=True)  # fmt: skip
    assert any("past_key_values" in str(w.message) for w in caught)
    assert_close(step.logits[:, -1], full[:, -1], ATOL)
    assert out.cache.get_seq_length() == 4  # the step went into the cache it was given


@pytest.mark.parametrize("part", ["model", "model.model", "model.model.decoder"])
def test_an_unknown_keyword_is_a_type_error_naming_it(part):
    model = seq2seq_model()
    module = eval(part, {"model": model})  # noqa: S307 - a fixed attribute path
    inputs = dict(input_ids=source(), decoder_input_ids=source(2, 3))
    if part.endswith("decoder"):
        inputs = dict(input_ids=source(2, 3), encoder_hidden_states=torch.randn(2, 7, 32))
    with pytest.raises(TypeError, match=r"\['decoder_past_key_value'\]"):
        module(**inputs, decoder_past_key_value=None)
    module(**inputs, output_hidden_states=True, return_dict=True)  # transformers' own keywords still pass


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_with_cache_equals_generate_without(num_beams):
    model = seq2seq_model()
    src, mask = source(3), torch.ones(3, 7, dtype=torch.long)
    kwargs = dict(attention_mask=mask, max_new_tokens=8, num_beams=num_beams, do_sample=False)
    cached = model.generate(src, **kwargs)
    assert cached.shape[1] > 3 and cached[:, 1:].unique().numel() > 3  # the test would be vacuous otherwise
    assert torch.equal(cached, model.generate(src, use_cache=False, **kwargs))


def test_greedy_generation_is_the_argmax_of_a_full_pass():
    model = seq2seq_model()
    src = source()
    generated = model.generate(src, max_new_tokens=6, do_sample=False, eos_token_id=None)
    assert torch.equal(generated[:, 0], torch.full((2,), model.config.decoder_start_token_id))
    with torch.no_grad():
        logits = model(input_ids=src, decoder_input_ids=generated).logits
    assert torch.equal(logits[:, :-1].argmax(-1), generated[:, 1:])


def test_sampling_runs_and_is_seeded():
    model = seq2seq_model()
    src = source()
    kwargs = dict(max_new_tokens=6, do_sample=True, top_k=0, temperature=1.5, num_return_sequences=2)
    torch.manual_seed(1)
    first = model.generate(src, **kwargs)
    torch.manual_seed(1)
    assert first.shape[0] == 4 and torch.equal(first, model.generate(src, **kwargs))


def test_beam_search_scores_no_worse_than_greedy():
    model = seq2seq_model()
    src = source(1)
    kwargs = dict(
        max_new_tokens=6, do_sample=False, eos_token_id=None, output_scores=True, return_dict_in_generate=True
    )
    greedy = model.generate(src, **kwargs)
    beam = model.generate(src, num_beams=4, length_penalty=0.0, **kwargs)

    def log_prob(sequence):
        with torch.no_grad():
            logits = model(input_ids=src, decoder_input_ids=sequence[:, :-1]).logits
        return logits.log_softmax(-1).gather(-1, sequence[:, 1:, None]).sum().item()

    assert log_prob(beam.sequences) >= log_prob(greedy.sequences) - 1e-4


def test_left_padded_sources_equal_rows_alone():
    model = seq2seq_model()
    rows = [source(1, 7), source(1, 4)]
    batch = torch.zeros(2, 7, dtype=torch.long)
    mask = torch.zeros(2, 7, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, -row.shape[1] :], mask[i, -row.shape[1] :] = row, 1
    kwargs = dict(max_new_tokens=6, do_sample=False, eos_token_id=None)
    together = model.generate(batch, attention_mask=mask, **kwargs)
    decoder_ids = together[:, :4]
    with torch.no_grad():
        logits = model(input_ids=batch, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        for i, row in enumerate(rows):
            assert torch.equal(together[i], model.generate(row, **kwargs)[0])
            alone = model(input_ids=row, decoder_input_ids=decoder_ids[i : i + 1]).logits
            assert_close(logits[i : i + 1], alone, ATOL, f"row {i}")


def test_a_config_built_cross_attention_cache_is_refused():
    model = seq2seq_model(num_decoder_layers=2)  # with more GRU layers, transformers itself fails to build it
    config = model.config
    cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
    with pytest.raises(ValueError, match="recurrent-state slot at index 0"):
        model(input_ids=source(), decoder_input_ids=source(2, 1), cache=cache, use_cache=True)


def test_save_and_reload_give_the_same_outputs(tmp_path):
    model = seq2seq_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (
        config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_hybrid_gru_seq2seq.HybridGRUForConditionalGeneration"
    )
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is HybridGRUForConditionalGeneration
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.shared.weight.data_ptr()
    assert reloaded.model.decoder.embed_tokens is reloaded.model.shared
    src = source()
    kwargs = dict(max_new_tokens=6, do_sample=False, num_beams=2)
    assert torch.equal(reloaded.generate(src, **kwargs), model.generate(src, **kwargs))


@pytest.mark.slow  # ~20 s: a fresh interpreter imports torch and transformers
def test_remote_code_loads_and_generates_in_a_process_without_hf_gru(tmp_path):
    model = seq2seq_model()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    src = source()
    code = f"""
import json, torch
from transformers import AutoModelForSeq2SeqLM
model = AutoModelForSeq2SeqLM.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
out = model.generate(torch.tensor({src.tolist()}), max_new_tokens=6, do_sample=False, num_beams=2)
print(json.dumps({{"class": type(model).__module__ + "." + type(model).__name__, "ids": out.tolist()}}))
"""
    result = run_without_hf_gru(code, cwd=tmp_path)
    assert result["class"].endswith("modeling_hybrid_gru_seq2seq.HybridGRUForConditionalGeneration")
    assert not result["class"].startswith("hf_gru")
    assert result["ids"] == model.generate(src, max_new_tokens=6, do_sample=False, num_beams=2).tolist()


def test_seq2seq_trainer_step_and_predict_with_generate(tmp_path):
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    model = seq2seq_model()
    rows = [
        {"input_ids": source(1, n)[0].tolist(), "labels": source(1, n - 1)[0].tolist() + [2]} for n in (5, 7, 6, 4)
    ]
    data = Dataset.from_list(rows)

    class Pad:  # the tokenizer's part of DataCollatorForSeq2Seq, which pads labels and adds decoder_input_ids itself
        pad_token_id, padding_side, model_input_names = 0, "right", ["input_ids", "attention_mask"]

        def pad(self, features, **kwargs):
            length = max(len(f["input_ids"]) for f in features)
            ids = [f["input_ids"] + [0] * (length - len(f["input_ids"])) for f in features]
            mask = [[1] * len(f["input_ids"]) + [0] * (length - len(f["input_ids"])) for f in features]
            return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}

    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=2, max_steps=1,
        learning_rate=1e-3, report_to=[], predict_with_generate=True, generation_max_length=6, use_cpu=True,
        save_strategy="no",
    )  # fmt: skip
    collator = DataCollatorForSeq2Seq(Pad(), model=model, label_pad_token_id=-100)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, data_collator=collator)
    before = model.lm_head.weight.detach().clone()
    trainer.train()
    assert not torch.equal(model.lm_head.weight, before)
    prediction = trainer.predict(data)
    predictions = torch.as_tensor(prediction.predictions)  # padded to the model's generation max_length
    assert predictions.shape[0] == 4 and (predictions[:, 0] == model.config.decoder_start_token_id).all()
    assert (predictions[:, 6:] == model.config.pad_token_id).all()  # generation_max_length=6 reached generate()
    assert "test_loss" in prediction.metrics


def test_output_attentions_returns_cross_attentions_and_the_same_logits():
    """output_attentions switches to eager attention; its masks must match (padded source positions get weight 0)."""
    model = seq2seq_model()
    src, decoder_ids = source(), source(2, 5)
    mask = torch.ones_like(src)
    mask[0, :3] = 0
    with torch.no_grad():
        out = model(input_ids=src, attention_mask=mask, decoder_input_ids=decoder_ids, output_attentions=True)
        plain = model(input_ids=src, attention_mask=mask, decoder_input_ids=decoder_ids)
    assert_close(out.logits, plain.logits, ATOL)
    assert len(out.cross_attentions) == 4 and out.cross_attentions[0].shape == (2, 4, 5, 7)
    assert out.cross_attentions[0][0, :, :, :3].abs().max() == 0.0
    assert len(out.decoder_attentions) == 2 and len(out.encoder_attentions) == 1  # attention layers only
