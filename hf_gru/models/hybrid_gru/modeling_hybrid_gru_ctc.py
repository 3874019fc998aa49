"""HybridGRUForCTC: log-mel frames -> causal conv subsampler (x4 in time) -> HybridGRU encoder -> CTC head.

Causal mode (`bidirectional=False`) recognises speech as it arrives: feed feature chunks with `use_cache=True` and the
`cache` and `subsampler_state` of the previous call, and the logits equal one pass over the whole input. Bidirectional
mode reads the whole utterance for the best offline accuracy. This file is copied next to a checkpoint by
`save_pretrained`, so it imports only torch, transformers and its sibling modules.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, is_torchdynamo_compiling

from .configuration_hybrid_gru import HybridGRUConfig
from .input_checks_hybrid_gru import check_binary_mask, check_finite, check_float_input
from .modeling_hybrid_gru import HybridGRUModel, HybridGRUPreTrainedModel


@dataclass
class HybridGRUCTCOutput(CausalLMOutput):
    """CausalLMOutput (loss, logits, hidden_states, attentions) plus the streaming state, returned with `use_cache`.

    Args:
        cache (`Cache`, *optional*): the backbone's recurrent states and attention keys/values.
        subsampler_state (`list[torch.Tensor]`, *optional*): per conv layer, the input frames it has not consumed yet.
    """

    cache: Cache | None = None
    subsampler_state: list[torch.Tensor] | None = None


class HybridGRUConvSubsampler(nn.Module):
    """Per-frame LayerNorm, then two causal strided Conv1d layers (x4 fewer frames) and a projection to hidden_size.

    Causal: output frame j of a layer reads its input frames 2j-2..2j, so padding on the right never leaks into real
    frames and the layer can run on chunks. The state of a layer is the tail of its input that the next output still
    needs (its left context plus any frames not yet making up a full stride); it starts as `kernel_size - 1` zeros,
    exactly the zero padding of the offline pass.
    """

    kernel_size = 3
    stride = 2
    num_layers = 2

    def __init__(self, config: HybridGRUConfig):
        super().__init__()
        channels = config.conv_subsampling_channels
        # Frame-local normalisation: makes raw log-mel levels usable and keeps chunked input exact (no utterance stats).
        self.feature_norm = nn.LayerNorm(config.num_mel_bins)
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(config.num_mel_bins, channels, self.kernel_size, stride=self.stride),
                nn.Conv1d(channels, channels, self.kernel_size, stride=self.stride),
            ]
        )
        self.act = nn.GELU()
        self.proj = nn.Linear(channels, config.hidden_size)

    def forward(
        self, input_features: torch.Tensor, state: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T, num_mel_bins) -> (B, T', hidden_size) and the new state. Offline, T' = ceil(ceil(T / 2) / 2)."""
        x = self.feature_norm(input_features).transpose(1, 2)  # (B, F, T)
        new_state = []
        for i, conv in enumerate(self.convs):
            x, rest = self._causal_conv(conv, x, state[i] if state is not None else None)
            x = self.act(x)
            new_state.append(rest)
        return self.proj(x.transpose(1, 2)), new_state  # (B, T', D)

    def _causal_conv(
        self, conv: nn.Conv1d, x: torch.Tensor, pending: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if pending is None:
            pending = x.new_zeros(x.shape[0], x.shape[1], self.kernel_size - 1)
        x = torch.cat([pending.to(x.dtype), x], dim=-1)
        num_out = max((x.shape[-1] - self.kernel_size) // self.stride + 1, 0)
        # The next output window starts at num_out * stride: everything from there on is still needed.
        rest = x[..., num_out * self.stride :]
        if num_out == 0:
            return x.new_zeros(x.shape[0], conv.out_channels, 0), rest
        used = x[..., : (num_out - 1) * self.stride + self.kernel_size]
        return conv(used), rest

    @classmethod
    def output_lengths(cls, input_lengths: torch.Tensor) -> torch.Tensor:
        """Number of output frames of an offline pass over `input_lengths` frames (ceil(T / 2) per layer)."""
        for _ in range(cls.num_layers):
            input_lengths = torch.div(input_lengths + cls.stride - 1, cls.stride, rounding_mode="floor")
        return input_lengths


class HybridGRUForCTC(HybridGRUPreTrainedModel):
    """Log-mel frames in, per-frame token logits out (CTC; blank = `pad_token_id`). Works with the ASR pipeline."""

    main_input_name = "input_features"
    # Checkpoints saved before the backbone dropped its unused token table for this head still hold it.
    _keys_to_ignore_on_load_unexpected = [r"^model\.embed_tokens\.weight$"]

    def __init__(self, config: HybridGRUConfig):
        super().__init__(config)
        if config.pad_token_id is None or not 0 <= config.pad_token_id < config.vocab_size:
            raise ValueError(
                f"HybridGRUForCTC uses `pad_token_id` as the CTC blank, so it must be in [0, vocab_size="
                f"{config.vocab_size}), got pad_token_id={config.pad_token_id}."
            )
        self.subsampler = HybridGRUConvSubsampler(config)
        # Built directly (remote code cannot call AutoModel without trust), and without the token table: this head
        # embeds frames itself.
        self.model = HybridGRUModel(config, token_embeddings=False)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, HybridGRUConvSubsampler):  # children are initialised first, so this has the last word
            for conv in module.convs:
                init.kaiming_normal_(conv.weight, nonlinearity="relu")  # (close to GELU)
                init.zeros_(conv.bias)

    def get_output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Number of logits for `input_lengths` feature frames (the frame rate drops 4x)."""
        return HybridGRUConvSubsampler.output_lengths(input_lengths)

    @can_return_tuple
    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        subsampler_state: list[torch.Tensor] | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> HybridGRUCTCOutput:
        r"""
        input_features (`torch.Tensor` of shape `(batch, frames, num_mel_bins)`):
            Log-mel frames, right-padded, e.g. from the checkpoint's feature extractor.
        attention_mask (`torch.Tensor` of shape `(batch, frames)`, *optional*):
            1 for real frames, 0 for padding (frame level, as the feature extractor returns it).
        labels (`torch.LongTensor` of shape `(batch, label_length)`, *optional*):
            Token ids of the transcripts, padded with -100 (or `pad_token_id`).
        cache, subsampler_state, use_cache:
            Streaming (causal mode only): pass `use_cache=True` and, after the first chunk, the `cache` and
            `subsampler_state` of the previous output. Chunks need no padding and may have any length.
        """
        streaming = bool(use_cache) or cache is not None or subsampler_state is not None
        self._check_inputs(input_features, attention_mask, labels, streaming)
        hidden_states, subsampler_state = self.subsampler(input_features, subsampler_state)
        if streaming and cache is None:
            cache = DynamicCache(config=self.config)

        frame_mask = None
        if attention_mask is not None and not streaming:  # a streamed chunk is checked unpadded: its mask adds nothing
            lengths = self.get_output_lengths(attention_mask.sum(-1))
            frame_mask = torch.arange(hidden_states.shape[1], device=hidden_states.device) < lengths[:, None]
            frame_mask = frame_mask.long()

        if hidden_states.shape[1] == 0:  # a chunk too short to complete an output frame: nothing to run yet
            logits = hidden_states.new_zeros(hidden_states.shape[0], 0, self.config.vocab_size)
            return HybridGRUCTCOutput(logits=logits, cache=cache, subsampler_state=subsampler_state)

        kwargs.pop("num_items_in_batch", None)  # CTC mean reduction is per sequence; Trainer's count does not apply
        outputs: BaseModelOutputWithPast = self.model(
            inputs_embeds=hidden_states, attention_mask=frame_mask, cache=cache, use_cache=streaming, **kwargs
        )
        logits = self.lm_head(self.dropout(outputs.last_hidden_state))  # (B, T', vocab)

        loss = None
        if labels is not None:
            logit_lengths = torch.full(logits.shape[:1], logits.shape[1], dtype=torch.long, device=logits.device)
            if frame_mask is not None:
                logit_lengths = frame_mask.sum(-1)
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                logit_lengths=logit_lengths,
                blank_token_id=self.config.pad_token_id,
                reduction=self.config.ctc_loss_reduction,
                zero_infinity=self.config.ctc_zero_infinity,
            )
        return HybridGRUCTCOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cache=cache if streaming else None,
            subsampler_state=subsampler_state if streaming else None,
        )

    def _check_inputs(self, input_features, attention_mask, labels, streaming: bool) -> None:
        """ValueErrors naming the bad value, instead of shape errors deep inside torch."""
        num_mel_bins = self.config.num_mel_bins
        check_float_input("input_features", input_features, self.dtype)
        if input_features.ndim != 3 or input_features.shape[-1] != num_mel_bins:
            raise ValueError(
                f"`input_features` must have shape (batch, frames, num_mel_bins={num_mel_bins}), "
                f"got {tuple(input_features.shape)}."
            )
        if not streaming and input_features.shape[1] == 0:
            raise ValueError(f"`input_features` has no frames: shape {tuple(input_features.shape)}.")
        if input_features.shape[0] == 0:
            raise ValueError(f"`input_features` is an empty batch: shape {tuple(input_features.shape)}.")
        check_finite("input_features", input_features, axes=("batch", "frame", "mel bin"))
        if streaming and self.config.bidirectional:
            raise ValueError(
                "Streaming (use_cache / cache / subsampler_state) needs a causal model, but the config has "
                "bidirectional=True; a bidirectional model reads the whole utterance at once."
            )
        if attention_mask is not None:
            check_binary_mask("attention_mask", attention_mask, "1 (frame) or 0 (padding)")
            if tuple(attention_mask.shape) != tuple(input_features.shape[:2]):
                raise ValueError(
                    f"`attention_mask` must be frame level with shape {tuple(input_features.shape[:2])}, got "
                    f"{tuple(attention_mask.shape)}; pass the mask the feature extractor returns."
                )
            if streaming and not is_torchdynamo_compiling() and not bool(attention_mask.all()):
                raise ValueError("Streaming takes unpadded chunks, but `attention_mask` marks padded frames.")
        if labels is not None and (not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point):
            found = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"`labels` must be an integer tensor of token ids (-100 for padding), got {found}.")
        if labels is not None and not is_torchdynamo_compiling():
            real = labels[labels >= 0]
            if real.numel() and int(real.max()) >= self.config.vocab_size:
                raise ValueError(
                    f"`labels` contains token id {int(real.max())}, outside [0, vocab_size={self.config.vocab_size})."
                )


__all__ = ["HybridGRUForCTC"]
