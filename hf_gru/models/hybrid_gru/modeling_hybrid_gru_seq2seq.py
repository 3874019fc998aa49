"""HybridGRUForConditionalGeneration: a bidirectional HybridGRU encoder and a causal HybridGRU decoder with
cross-attention, for translation and other sequence-to-sequence tasks (`AutoModelForSeq2SeqLM`).

The config is one `HybridGRUConfig(is_encoder_decoder=True, ...)`: `num_hidden_layers`/`block_pattern` describe the
encoder, `num_decoder_layers`/`decoder_block_pattern` the decoder, and `config.get_text_config(decoder=True)` is the
decoder's view, from which transformers (and this file) build the decoder's `DynamicCache`. Generation runs on
transformers' `EncoderDecoderCache`: the decoder's self-attention keys/values and GRU states in its
`self_attention_cache`, the cross-attention keys/values (computed once from the encoder output) in its
`cross_attention_cache`. This file is copied next to a checkpoint by `save_pretrained`, so it imports only torch,
transformers and its sibling modules.
"""

import copy
import inspect
from collections.abc import Callable

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache, LinearAttentionCacheLayerMixin, StaticCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPast, Seq2SeqLMOutput, Seq2SeqModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_hybrid_gru import HybridGRUConfig
from .input_checks_hybrid_gru import FORWARD_KWARGS, check_class_labels, check_forward_kwargs, check_inputs
from .modeling_hybrid_gru import (
    HybridGRUAttention,
    HybridGRUDecoderLayer,
    HybridGRUModel,
    HybridGRUPreTrainedModel,
    HybridGRURMSNorm,
    HybridGRURotaryEmbedding,
    attention_implementation,
    config_for_masks,
    eager_attention_forward,
)


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int | None, decoder_start_token_id: int | None):
    """Decoder inputs from labels, as BART and T5 make them: start token first, labels shifted right, -100 -> pad."""
    if decoder_start_token_id is None or pad_token_id is None:
        raise ValueError(
            "Shifting `labels` into `decoder_input_ids` needs `decoder_start_token_id` and `pad_token_id` in the config, "
            f"got decoder_start_token_id={decoder_start_token_id}, pad_token_id={pad_token_id}."
        )
    shifted = labels.new_empty(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class HybridGRUCrossAttention(nn.Module):
    """Decoder-to-encoder attention with grouped-query heads, no rotary embedding (source and target positions are
    unrelated; the encoder output already carries its own positions). Keys and values of the encoder output are
    computed once per generation and kept in the cross-attention half of an `EncoderDecoderCache`."""

    def __init__(self, config: HybridGRUConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = False
        q_size, kv_size = config.num_attention_heads * self.head_dim, config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=config.attention_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        query = self.q_proj(hidden_states).view(*input_shape, -1, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        if cache is not None and cache.is_updated.get(self.layer_idx):
            slot = cache.cross_attention_cache.layers[self.layer_idx]
            key, value = slot.keys, slot.values
        else:
            kv_shape = (*encoder_hidden_states.shape[:-1], -1, self.head_dim)
            key = self.k_proj(encoder_hidden_states).view(kv_shape).transpose(1, 2)  # (B, kvH, S, hd)
            value = self.v_proj(encoder_hidden_states).view(kv_shape).transpose(1, 2)
            if cache is not None:
                key, value = cache.cross_attention_cache.update(key, value, self.layer_idx)
                cache.is_updated[self.layer_idx] = True

        implementation = attention_implementation(self.config, kwargs.get("output_attentions"))
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return self.o_proj(attn_output.reshape(*input_shape, -1).contiguous()), attn_weights


class HybridGRUSeq2SeqDecoderLayer(HybridGRUDecoderLayer):
    """h = h + Mixer(RMSNorm(h)); h = h + CrossAttention(RMSNorm(h), encoder); h = h + MLP(RMSNorm(h)).

    Cross-attention sits in every decoder layer, GRU layers included. Attention-based RNN translation (Bahdanau et al.,
    2015) reads the source at every decoder step, and with the default pattern "GGA" two decoder layers in three are
    GRU layers: cross-attention only in attention layers would leave most of the decoder blind to the source. Its cost
    at generation is one attention over the (short) source per layer and step; its keys and values are computed once.
    """

    def __init__(self, config: HybridGRUConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.cross_attn = HybridGRUCrossAttention(config, layer_idx)
        self.cross_attn_layernorm = HybridGRURMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: EncoderDecoderCache | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        mixed, _ = self.mixer(
            self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache.self_attention_cache if cache is not None else None,
            **kwargs,
        )
        hidden_states = hidden_states + mixed
        crossed, _ = self.cross_attn(
            self.cross_attn_layernorm(hidden_states), encoder_hidden_states, encoder_attention_mask, cache, **kwargs
        )
        hidden_states = hidden_states + crossed
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


def new_encoder_decoder_cache(config: HybridGRUConfig) -> EncoderDecoderCache:
    """The cache of a `HybridGRUForConditionalGeneration`: the decoder's hybrid `DynamicCache` (a recurrent slot per
    decoder GRU layer, keys/values per attention layer) and a plain `DynamicCache` for cross-attention keys/values,
    which every decoder layer holds (a config-built cache would put recurrent slots there)."""
    return EncoderDecoderCache(DynamicCache(config=config.get_text_config(decoder=True)), DynamicCache())


def static_cross_attention_cache(config: HybridGRUConfig, source_length: int, offloading: bool = False) -> StaticCache:
    """The cross-attention half of a static `EncoderDecoderCache`: one fixed-size key/value slot per decoder layer
    (GRU layers included, which have cross-attention too), sized to the source."""
    view = copy.deepcopy(config.get_text_config(decoder=True))
    view.layer_types = ["full_attention"] * view.num_hidden_layers
    return StaticCache(config=view, max_cache_len=source_length, offloading=offloading)


def check_encoder_decoder_cache(cache) -> None:
    if not isinstance(cache, EncoderDecoderCache):
        raise ValueError(
            f"`cache` must be an EncoderDecoderCache (see new_encoder_decoder_cache(config)), got {type(cache).__name__}."
        )
    for idx, slot in enumerate(cache.cross_attention_cache.layers):
        if isinstance(slot, LinearAttentionCacheLayerMixin):
            raise ValueError(
                f"`cache.cross_attention_cache` has a recurrent-state slot at index {idx}; cross-attention stores keys "
                "and values in every decoder layer: build it as DynamicCache() (see new_encoder_decoder_cache(config))."
            )


class HybridGRUSeq2SeqPreTrainedModel(HybridGRUPreTrainedModel):
    _no_split_modules = ["HybridGRUDecoderLayer", "HybridGRUSeq2SeqDecoderLayer"]
    _can_record_outputs = {
        "hidden_states": HybridGRUDecoderLayer,
        "attentions": OutputRecorder(HybridGRUAttention, index=1),
        "cross_attentions": OutputRecorder(HybridGRUCrossAttention, index=1),
    }


class HybridGRUSeq2SeqDecoder(HybridGRUSeq2SeqPreTrainedModel, HybridGRUModel):
    """The causal decoder stack; `config` is the decoder's view (`config.get_text_config(decoder=True)`). Positions and
    masks are built as in `HybridGRUModel`, whose `_positions` and `_build_masks` it inherits."""

    def __init__(self, config: HybridGRUConfig, embed_tokens: nn.Embedding):
        HybridGRUSeq2SeqPreTrainedModel.__init__(self, config)
        self.embed_tokens = embed_tokens
        self.layers = nn.ModuleList([HybridGRUSeq2SeqDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = HybridGRURMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = HybridGRURotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: EncoderDecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        check_forward_kwargs(type(self).__name__, kwargs)
        if use_cache and cache is None:
            cache = new_encoder_decoder_cache(self.config)
        if cache is not None:
            check_encoder_decoder_cache(cache)
        self_cache = cache.self_attention_cache if cache is not None else None
        check_inputs(self.config, input_ids, inputs_embeds, attention_mask, position_ids, self_cache, self.dtype)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        has_attention = any(t != "linear_attention" for t in self.config.layer_types)
        if position_ids is None:
            position_ids = self._positions(inputs_embeds, attention_mask, self_cache if has_attention else None)
        implementation = attention_implementation(self.config, kwargs.get("output_attentions"))
        masks = self._build_masks(inputs_embeds, attention_mask, self_cache, position_ids, implementation)
        cross_mask = create_bidirectional_mask(
            config=config_for_masks(self.config, implementation),
            inputs_embeds=inputs_embeds,
            attention_mask=encoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
        )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                attention_mask=masks[layer.layer_type],
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=cross_mask,
                **kwargs,
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache if use_cache else None)


class HybridGRUEncoderDecoderModel(HybridGRUSeq2SeqPreTrainedModel):
    """Shared token embeddings, a bidirectional `HybridGRUModel` encoder and a causal `HybridGRUSeq2SeqDecoder`."""

    _tied_weights_keys = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: HybridGRUConfig):
        if not config.is_encoder_decoder:
            raise ValueError(
                f"{type(self).__name__} needs HybridGRUConfig(is_encoder_decoder=True, ...), got is_encoder_decoder=False."
            )
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.encoder = HybridGRUModel(config)  # built directly: remote code cannot call AutoModel without trust
        self.encoder.embed_tokens = self.shared
        self.decoder = HybridGRUSeq2SeqDecoder(config.get_text_config(decoder=True), self.shared)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = self.encoder.embed_tokens = self.decoder.embed_tokens = value

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: EncoderDecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        decoder_position_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqModelOutput:
        check_forward_kwargs(type(self).__name__, kwargs)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
            )
        elif not isinstance(encoder_outputs, ModelOutput):  # a tuple, as transformers' seq2seq models accept
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            position_ids=decoder_position_ids,
            cache=cache,
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            cache=decoder_outputs.cache,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=getattr(decoder_outputs, "cross_attentions", None),
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )


class HybridGRUForConditionalGeneration(HybridGRUSeq2SeqPreTrainedModel, GenerationMixin):
    """`HybridGRUEncoderDecoderModel` with an LM head tied to the shared embeddings. `labels` alone train it: they are
    shifted right into `decoder_input_ids` (`decoder_start_token_id` first), as in BART and T5."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: HybridGRUConfig):
        super().__init__(config)
        self.model = HybridGRUEncoderDecoderModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_encoder(self, modality: str | None = None) -> HybridGRUModel:
        return self.model.encoder

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: EncoderDecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        decoder_position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqLMOutput:
        check_forward_kwargs(type(self).__name__, kwargs)
        if labels is not None:
            check_class_labels(labels, self.config.vocab_size)
            use_cache = False  # training: nothing to continue from
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id
                )
        outputs: Seq2SeqModelOutput = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            decoder_position_ids=decoder_position_ids,
            use_cache=use_cache,
            **kwargs,
        )
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(outputs.last_hidden_state[:, keep, :])
        loss = None
        if labels is not None:  # labels are already aligned with the logits: no shift inside the loss
            loss = self.loss_function(
                logits=logits, labels=None, shift_labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """What `DataCollatorForSeq2Seq` calls to build `decoder_input_ids` next to the labels."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def _prepare_text_encoder_decoder_kwargs_for_generation(self, inputs_tensor, model_kwargs: dict, *args, **kwargs):
        """generate() calls the encoder with every model keyword it was given (`labels` from Seq2SeqTrainer's
        predict_with_generate too), trusting a `**kwargs` encoder to drop what it does not read. Ours refuses unknown
        keywords, so the ones meant for this model and not the encoder skip the encoder call and stay for the rest."""
        encoder_keys = set(inspect.signature(self.get_encoder().forward).parameters) | FORWARD_KWARGS
        held = {key: model_kwargs.pop(key) for key in list(model_kwargs) if key not in encoder_keys}
        model_kwargs = super()._prepare_text_encoder_decoder_kwargs_for_generation(
            inputs_tensor, model_kwargs, *args, **kwargs
        )
        return {**model_kwargs, **held}

    @staticmethod
    def create_masks_for_generate(config, inputs_embeds, attention_mask, *args, **kwargs):
        """With a static cache generate() would build the decoder's 4D masks here, from the encoder-decoder config (the
        encoder's layer types); the decoder builds them itself from the 2D mask and its cache, as in a dynamic run."""
        return attention_mask

    def _prepare_static_cache(self, cache_implementation: str, batch_size: int, max_cache_len: int, *args, **kwargs):
        """`cache_implementation="static"`: transformers' static self-attention cache of the decoder view (fixed-size
        GRU state slots and key/value buffers), and a cross-attention cache with a key/value slot in every decoder
        layer; transformers would build that one from the decoder's layer types, with recurrent slots."""
        cache = super()._prepare_static_cache(cache_implementation, batch_size, max_cache_len, *args, **kwargs)
        model_kwargs = kwargs.get("model_kwargs", args[-1] if args else None)
        source_length = model_kwargs["encoder_outputs"][0].shape[1]
        cross = static_cross_attention_cache(
            self.config, source_length, offloading="offloaded" in cache_implementation
        )
        return EncoderDecoderCache(cache.self_attention_cache, cross)

    def _prepare_cache_for_generation(self, generation_config, model_kwargs: dict, *args, **kwargs) -> None:
        """transformers builds both halves of the default `EncoderDecoderCache` from the decoder config, which puts
        recurrent slots where cross-attention keys/values go (and fails on them); build the default one here."""
        default = generation_config.cache_implementation in (None, "dynamic")
        if model_kwargs.get("cache") is None and generation_config.use_cache is not False and default:
            model_kwargs["cache"] = new_encoder_decoder_cache(self.config)
            return
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)


__all__ = ["HybridGRUEncoderDecoderModel", "HybridGRUForConditionalGeneration"]
