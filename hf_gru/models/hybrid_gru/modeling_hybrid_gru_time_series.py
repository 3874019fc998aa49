"""HybridGRUForTimeSeriesPrediction: multi-horizon forecasting with the HybridGRU backbone.

Follows transformers' `PatchTSTForPrediction` conventions (`past_values`, `past_observed_mask`, `future_values`,
`prediction_outputs`, `loc`/`scale`, `generate()` returning sample paths). Each channel is forecast as its own
univariate series with shared weights (channel independence, as PatchTST). A series is scaled per window over its
observed points and cut into patches of `patch_length` steps (the embedding of a patch sees its values and its
observed mask). The backbone runs over these past patches followed by one learned placeholder token per future patch
(as the placeholders of Informer's decoder, Zhou et al., 2021); each placeholder's output is projected to the values
of its patch. The GRU layers carry the past into the placeholders and the attention layers let each placeholder look
up the same hour a day or a week back. The backbone is causal and the placeholders come last, so a series can also be
fed in chunks through the backbone's cache (the forecast then runs on a fork of the cache) and gives the same
forecast as one call over the whole context (see `forward`). `forecast_every_step` gives, from one parallel pass, the
forecast that `forward` would make after every patch of the context (a placeholder evaluated after each position),
which is what one-step-ahead residuals for anomaly scoring need.

This file is remote code (copied next to checkpoints by `save_pretrained`): it imports only torch, transformers and
its sibling modules.
"""

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import SampleTSPredictionOutput
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple

from .configuration_hybrid_gru import HybridGRUConfig
from .input_checks_hybrid_gru import check_binary_mask, check_finite, check_float_input
from .modeling_hybrid_gru import (
    HybridGRUAttention,
    HybridGRUMixer,
    HybridGRUModel,
    HybridGRUPreTrainedModel,
    reads_plain_weight,
    repeat_kv,
    rotate_half,
)
from .recurrence_hybrid_gru import cudnn_gru

MINIMUM_SCALE = 1e-5  # as PatchTST's std scaler: keeps constant series finite


@dataclass
class HybridGRUForTimeSeriesPredictionOutput(ModelOutput):
    r"""
    Output of [`HybridGRUForTimeSeriesPrediction`], named as `PatchTSTForPredictionOutput`.

    loss (`torch.Tensor` of shape `()`, *optional*, returned when `future_values` is given):
        MSE, MAE or Student-t negative log-likelihood, averaged over the observed future points, computed in scaled
        units (the target is scaled with the context's `loc`/`scale`) so series of different magnitudes weigh alike.
    prediction_outputs (`torch.Tensor` of shape `(batch_size, prediction_length, num_input_channels)`):
        Point forecast in the original units (for `loss="nll"`: the location of the Student-t, its median).
    distribution_params (`tuple[torch.Tensor]`, *optional*, with `loss="nll"`):
        Student-t `(df, loc, scale)` in scaled units, each of shape `(batch_size, prediction_length, channels)`.
    loc, scale (`torch.Tensor` of shape `(batch_size, 1, num_input_channels)`):
        Scaling statistics used: `original = scaled * scale + loc`. Pass them back with `cache` when streaming.
    cache (`Cache`, *optional*, returned when `use_cache=True`):
        The backbone state after the last patch; pass it to the next call to continue the series.
    forecast_hidden_states (`torch.Tensor` of shape `(batch_size, num_input_channels, num_placeholders, hidden_size)`):
        The final-norm hidden state of each forecasting placeholder (`forward`: one per future patch;
        `forecast_every_step`: one per patch of the context), which the head reads the forecast from: a summary of the
        context before it, e.g. to compare states by, as the anomaly detector does.
    """

    loss: torch.Tensor | None = None
    prediction_outputs: torch.Tensor | None = None
    distribution_params: tuple[torch.Tensor, ...] | None = None
    loc: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    forecast_hidden_states: torch.Tensor | None = None


def check_series(
    name: str,
    values: torch.Tensor | None,
    mask: torch.Tensor | None,
    length: int | None,
    channels: int,
    dtype: torch.dtype | None = None,
):
    """ValueErrors for a bad `past_values`/`future_values` and its observed mask, naming the tensor."""
    if values is None:
        return
    check_float_input(name, values, dtype)
    if values.ndim != 3 or values.shape[-1] != channels or 0 in values.shape[:2]:
        raise ValueError(
            f"`{name}` must have shape (batch, {length or 'seq_len'}, num_input_channels={channels}), with batch and "
            f"time steps >= 1, got {tuple(values.shape)}."
        )
    if length is not None and values.shape[1] != length:
        raise ValueError(f"`{name}` must have {length} time steps (prediction_length), got {values.shape[1]}.")
    mask_name = name.replace("values", "observed_mask")
    if mask is not None:
        check_binary_mask(mask_name, mask, "1 (observed) or 0 (missing)")
        if mask.shape != values.shape:
            raise ValueError(f"`{mask_name}` has shape {tuple(mask.shape)} but `{name}` has {tuple(values.shape)}.")
    finite = torch.isfinite(values)
    if mask is None and not finite.all():
        raise ValueError(
            f"`{name}` contains {(~finite).sum().item()} NaN or inf values; mark missing points with `{mask_name}` "
            "(1 = observed, 0 = missing)."
        )
    if mask is not None and not (finite | ~mask.bool()).all():
        raise ValueError(f"`{name}` contains NaN or inf values at points that `{mask_name}` marks as observed.")


def scaling_statistics(
    values: torch.Tensor, observed: torch.Tensor, scaling: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-series `loc`, `scale` (B, 1, C) over the observed points of `values` (B, T, C); missing points are ignored.

    "std": mean and standard deviation; "mean": zero loc and the mean absolute value (as GluonTS/PatchTST); None: 0, 1.
    A series with no observed point gets loc 0 and scale 1.
    """
    count = observed.sum(1, keepdim=True)
    if scaling is None:
        return torch.zeros_like(count), torch.ones_like(count)
    denominator = count.clamp(min=1.0)
    if scaling == "mean":
        scale = (values.abs() * observed).sum(1, keepdim=True) / denominator
        scale = torch.where(count > 0, scale, torch.ones_like(scale)).clamp(min=MINIMUM_SCALE)
        return torch.zeros_like(scale), scale
    loc = (values * observed).sum(1, keepdim=True) / denominator
    variance = (((values - loc) * observed) ** 2).sum(1, keepdim=True) / denominator
    scale = torch.where(count > 0, torch.sqrt(variance + MINIMUM_SCALE), torch.ones_like(variance))
    return loc, scale


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the points where `weights` is 1 (0 when none is)."""
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


class HybridGRUPatchEmbedding(nn.Module):
    """(B*C, T) values and observed mask -> (B*C, T / patch_length, hidden) tokens, one per patch.

    The series is left-padded to a whole number of patches with unobserved zeros, so the last patch always ends at
    the last time step (the one the forecast starts from).
    """

    def __init__(self, config: HybridGRUConfig):
        super().__init__()
        self.patch_length = config.patch_length
        self.proj = nn.Linear(2 * config.patch_length, config.hidden_size)

    def forward(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        pad = -values.shape[1] % self.patch_length
        values, observed = F.pad(values, (pad, 0)), F.pad(observed, (pad, 0))
        patches = torch.cat(
            [values.unflatten(1, (-1, self.patch_length)), observed.unflatten(1, (-1, self.patch_length))], dim=-1
        )  # (B*C, N, 2 * patch_length)
        return self.proj(patches)


class HybridGRUForTimeSeriesPrediction(HybridGRUPreTrainedModel):
    r"""
    Forecasts `prediction_length` steps of `num_input_channels` series from their past.

    Inputs follow `PatchTSTForPrediction`. Config: `context_length` (the context length to train with; the backbone
    is recurrent, so `forward` accepts any length), `prediction_length`, `num_input_channels`, `patch_length` (time
    steps per token), `scaling` (`"std"`, `"mean"` or None), `loss` (`"mse"`, `"mae"`, or `"nll"` for a Student-t
    head whose paths `generate()` samples), `num_parallel_samples`. The backbone has no token embedding table
    (`vocab_size` is unused; checkpoints that hold a table still load).

    ```python
    >>> import torch
    >>> from hf_gru import HybridGRUConfig, HybridGRUForTimeSeriesPrediction
    >>> config = HybridGRUConfig(vocab_size=1, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...     num_attention_heads=4, block_pattern="GA", context_length=48, prediction_length=12, patch_length=4)
    >>> model = HybridGRUForTimeSeriesPrediction(config)
    >>> model(past_values=torch.randn(2, 48, 1)).prediction_outputs.shape
    torch.Size([2, 12, 1])
    ```
    """

    # The loss is a mean over the batch's observed points, so the Trainer must average over gradient-accumulation
    # steps itself rather than pass `num_items_in_batch`.
    accepts_loss_kwargs = False
    # Checkpoints saved before the backbone dropped its unused token table for this head still hold it.
    _keys_to_ignore_on_load_unexpected = [r"^model\.embed_tokens\.weight$"]

    def __init__(self, config: HybridGRUConfig):
        super().__init__(config)
        # Built directly (remote code cannot call AutoModel without trust), and without the token table: this head
        # embeds time steps itself.
        self.model = HybridGRUModel(config, token_embeddings=False)
        self.patch_embedding = HybridGRUPatchEmbedding(config)
        self.num_future_patches = math.ceil(config.prediction_length / config.patch_length)
        # One learned token per future patch: the backbone runs on past patches followed by these placeholders, and
        # each placeholder's output becomes the forecast of its patch (as Informer's decoder placeholders).
        self.future_tokens = nn.Parameter(torch.zeros(self.num_future_patches, config.hidden_size))
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.num_outputs = 3 if config.loss == "nll" else 1  # Student-t: df, loc, scale per step
        self.head = nn.Linear(config.hidden_size, self.num_outputs * config.patch_length)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, HybridGRUForTimeSeriesPrediction):
            init.normal_(module.future_tokens, mean=0.0, std=self.config.initializer_range)

    @can_return_tuple
    def forward(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None = None,
        future_values: torch.Tensor | None = None,
        future_observed_mask: torch.Tensor | None = None,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> HybridGRUForTimeSeriesPredictionOutput:
        r"""
        past_values (`torch.Tensor` of shape `(batch_size, seq_len, num_input_channels)`):
            The context, in original units. Missing points may hold NaN if `past_observed_mask` marks them.
        past_observed_mask (`torch.Tensor` of the same shape, *optional*):
            1 for observed points, 0 for missing ones. Missing points are zeroed, flagged to the model, and left out
            of the scaling statistics.
        future_values (`torch.Tensor` of shape `(batch_size, prediction_length, num_input_channels)`, *optional*):
            Targets for the loss; `future_observed_mask` (same shape) leaves missing targets out of it.
        loc, scale (`torch.Tensor` of shape `(batch_size, 1, num_input_channels)`, *optional*):
            Scaling statistics to use instead of computing them from `past_values` (e.g. fit on training data).
        cache (`Cache`, *optional*), use_cache (`bool`, *optional*):
            Streaming. The first call passes `use_cache=True`; each later call passes the next chunk with the
            previous output's `cache`, `loc` and `scale` (the statistics are frozen at the first chunk, or supplied).
            Chunks after the first must hold a whole number of patches. The forecast after the last chunk equals one
            call over the concatenated context with the same `loc` and `scale`.
        """
        config = self.config
        channels, length = config.num_input_channels, config.prediction_length
        check_series("past_values", past_values, past_observed_mask, None, channels, self.dtype)
        check_series("future_values", future_values, future_observed_mask, length, channels, self.dtype)
        self._check_streaming(past_values, loc, scale, cache, use_cache)

        observed = torch.ones_like(past_values) if past_observed_mask is None else past_observed_mask.to(past_values)
        values = torch.where(observed.bool(), past_values, torch.zeros_like(past_values))  # NaN-free
        if loc is None or scale is None:
            loc, scale = scaling_statistics(values, observed, config.scaling)
        scaled = (values - loc) / scale * observed  # (B, T, C)

        batch, _, channels = past_values.shape
        tokens = self.patch_embedding(scaled.transpose(1, 2).flatten(0, 1), observed.transpose(1, 2).flatten(0, 1))
        future = self.future_tokens.expand(tokens.shape[0], -1, -1)  # (B*C, F, D)
        if cache is None and not use_cache:  # one shot: past and future patches in one pass
            outputs = self.model(inputs_embeds=torch.cat([tokens, future], dim=1), use_cache=False, **kwargs)
        else:  # streaming: the context moves the cache on; the forecast runs on a fork of it
            outputs = self.model(inputs_embeds=tokens, cache=cache, use_cache=True)
            cache = outputs.cache
            outputs = self.model(inputs_embeds=future, cache=fork_cache(cache), use_cache=True, **kwargs)
        hidden = outputs.last_hidden_state[:, -self.num_future_patches :]  # (B*C, F, D)
        head_out = self.head(self.dropout(hidden)).view(batch, channels, -1, self.num_outputs)  # (B, C, F*P, k)
        head_out = head_out[:, :, : config.prediction_length].permute(3, 0, 2, 1)  # (k, B, H, C)

        distribution_params = None
        if config.loss == "nll":
            distribution_params = student_t_domain(*head_out)
            point = distribution_params[1]
        else:
            point = head_out[0]

        loss = None
        if future_values is not None:
            loss = self._loss(point, distribution_params, future_values, future_observed_mask, loc, scale)
        return HybridGRUForTimeSeriesPredictionOutput(
            loss=loss,
            prediction_outputs=point * scale + loc,
            distribution_params=distribution_params,
            loc=loc,
            scale=scale,
            cache=cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            forecast_hidden_states=hidden.unflatten(0, (batch, channels)),
        )

    def forecast_every_step(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None = None,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
    ) -> HybridGRUForTimeSeriesPredictionOutput:
        r"""The forecast after every patch of `past_values`, from one parallel pass over them.

        `prediction_outputs` has shape `(batch_size, num_patches, prediction_length, num_input_channels)`:
        `prediction_outputs[:, i]` is what `forward` forecasts from the context up to the end of patch `i` (a fork of
        the backbone state after patch `i` runs the placeholder token). Needs `prediction_length <= patch_length` (one
        placeholder) and a causal backbone. `cache`, `use_cache`, `loc`, `scale` stream as in `forward`: the returned
        `cache` is the state after the last patch, so chunks of any whole number of patches give the forecasts of one
        call over their concatenation. `distribution_params` (with `loss="nll"`) have the same leading shape.
        """
        config = self.config
        if self.num_future_patches != 1 or config.bidirectional:
            raise ValueError(
                "`forecast_every_step` runs one placeholder after every patch of a causal backbone: it needs "
                f"prediction_length <= patch_length and bidirectional=False, got prediction_length="
                f"{config.prediction_length}, patch_length={config.patch_length}, bidirectional={config.bidirectional}."
            )
        channels = config.num_input_channels
        check_series("past_values", past_values, past_observed_mask, None, channels, self.dtype)
        self._check_streaming(past_values, loc, scale, cache, True)
        observed = torch.ones_like(past_values) if past_observed_mask is None else past_observed_mask.to(past_values)
        values = torch.where(observed.bool(), past_values, torch.zeros_like(past_values))
        if loc is None or scale is None:
            loc, scale = scaling_statistics(values, observed, config.scaling)
        scaled = (values - loc) / scale * observed  # (B, T, C)
        batch = past_values.shape[0]
        tokens = self.patch_embedding(scaled.transpose(1, 2).flatten(0, 1), observed.transpose(1, 2).flatten(0, 1))
        returned_cache = cache is not None or use_cache
        cache = DynamicCache(config=config) if cache is None else cache
        hidden = self._placeholder_after_every_token(tokens, cache)  # (B*C, N, D)
        head_out = self.head(self.dropout(hidden)).unflatten(0, (batch, channels))  # (B, C, N, P*k)
        head_out = head_out.unflatten(-1, (-1, self.num_outputs))[:, :, :, : config.prediction_length]
        head_out = head_out.permute(4, 0, 2, 3, 1)  # (k, B, N, H, C)
        distribution_params = student_t_domain(*head_out) if config.loss == "nll" else None
        point = distribution_params[1] if distribution_params is not None else head_out[0]
        return HybridGRUForTimeSeriesPredictionOutput(
            prediction_outputs=point * scale[:, None] + loc[:, None],
            distribution_params=distribution_params,
            loc=loc,
            scale=scale,
            cache=cache if returned_cache else None,
            forecast_hidden_states=hidden.unflatten(0, (batch, channels)),
        )

    def _placeholder_after_every_token(self, tokens: torch.Tensor, cache: Cache) -> torch.Tensor:
        """Runs the backbone over `tokens` (B, N, D), moving `cache` on, and beside it the placeholder token as if it
        followed each token: returns the final-norm outputs of the N placeholders (B, N, D)."""
        model, config = self.model, self.config
        has_attention = any(t != "linear_attention" for t in config.layer_types)
        positions = model._positions(tokens, None, cache if has_attention else None)  # (1, N)
        rope = model.rotary_emb(tokens, positions)
        placeholder_rope = model.rotary_emb(tokens, positions + 1)  # a placeholder sits one position after its token
        hidden = tokens
        placeholders = self.future_tokens[0].expand_as(tokens)
        for layer in model.layers[: config.num_hidden_layers]:
            normed, normed_placeholders = layer.input_layernorm(hidden), layer.input_layernorm(placeholders)
            if isinstance(layer.mixer, HybridGRUMixer):
                mixed, mixed_placeholders = gru_with_placeholders(layer.mixer, normed, normed_placeholders, cache)
            else:
                mixed, mixed_placeholders = attention_with_placeholders(
                    layer.mixer, normed, normed_placeholders, rope, placeholder_rope, positions[0], cache
                )
            hidden, placeholders = hidden + mixed, placeholders + mixed_placeholders
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            placeholders = placeholders + layer.mlp(layer.post_attention_layernorm(placeholders))
        return model.norm(placeholders)

    def _check_streaming(self, past_values, loc, scale, cache, use_cache) -> None:
        if (loc is None) != (scale is None):
            raise ValueError("Pass both `loc` and `scale` or neither.")
        for name, stat in (("loc", loc), ("scale", scale)):
            if stat is None:
                continue
            check_float_input(name, stat, self.dtype)
            expected = (past_values.shape[0], 1, self.config.num_input_channels)
            if stat.shape != expected:
                raise ValueError(f"`{name}` must have shape {expected}, got {tuple(stat.shape)}.")
            check_finite(name, stat, axes=("batch", "time", "channel"))
        if scale is not None and not (scale > 0).all():
            raise ValueError(f"`scale` must be > 0 everywhere, got {scale[scale <= 0][0].item()}.")
        if (use_cache or cache is not None) and self.config.bidirectional:
            raise ValueError("Streaming (`cache`/`use_cache`) needs a causal backbone; the config is bidirectional.")
        if cache is None:
            return
        if self.config.scaling is not None and loc is None:
            raise ValueError(
                "Continuing a stream (`cache` given) needs the scaling statistics of its first chunk: pass `loc` and "
                "`scale` from the previous output (or statistics fit on training data)."
            )
        if past_values.shape[1] % self.config.patch_length:
            raise ValueError(
                f"A chunk continuing a stream must hold whole patches: `past_values` has {past_values.shape[1]} "
                f"steps, not a multiple of patch_length={self.config.patch_length}."
            )

    def _loss(self, point, distribution_params, future_values, future_observed_mask, loc, scale) -> torch.Tensor:
        observed = torch.ones_like(future_values) if future_observed_mask is None else future_observed_mask.to(point)
        target = torch.where(observed.bool(), (future_values - loc) / scale, torch.zeros_like(future_values))
        if self.config.loss == "nll":
            df, mu, sigma = distribution_params
            per_point = -torch.distributions.StudentT(df, mu, sigma).log_prob(target)
        elif self.config.loss == "mae":
            per_point = (point - target).abs()
        else:
            per_point = (point - target) ** 2
        return masked_mean(per_point, observed)

    @torch.no_grad()
    def generate(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None = None,
        num_parallel_samples: int | None = None,
        **kwargs,
    ) -> SampleTSPredictionOutput:
        """Forecast paths `sequences` (batch, samples, prediction_length, channels) in original units.

        With `loss="nll"`, `num_parallel_samples` (default: the config's) draws from the Student-t head; with a point
        loss the single point forecast is returned as one sample, as `PatchTSTForPrediction.generate` does.
        """
        outputs = self(past_values=past_values, past_observed_mask=past_observed_mask, **kwargs)
        if outputs.distribution_params is None:
            return SampleTSPredictionOutput(sequences=outputs.prediction_outputs.unsqueeze(1))
        num_samples = num_parallel_samples or self.config.num_parallel_samples
        df, mu, sigma = outputs.distribution_params
        samples = torch.distributions.StudentT(df, mu, sigma).sample((num_samples,))  # (S, B, H, C), scaled
        samples = samples * outputs.scale + outputs.loc
        return SampleTSPredictionOutput(sequences=samples.transpose(0, 1))


def gru_with_placeholders(
    mixer: HybridGRUMixer, hidden: torch.Tensor, placeholders: torch.Tensor, cache: Cache
) -> tuple[torch.Tensor, torch.Tensor]:
    """The GRU mixer over `hidden` (B, N, D) through `cache` (as `HybridGRUMixer.forward` on a causal, unpadded chunk)
    and, for each position t, over a placeholder following token t: its short conv reads the last `kernel - 1` inputs
    up to t and its own, and its recurrence takes one step from the state after t. Returns both outputs (B, N, D)."""
    index, kernel = mixer.layer_idx, mixer.conv_kernel
    inputs = hidden.transpose(1, 2)  # (B, D, N)
    conv_state = cache.get_conv_state(index)
    if conv_state is None:
        history = F.pad(inputs[..., :0], (kernel - 1, 0))  # the zeros a first chunk's conv is padded with
    else:
        history = conv_state[..., 1:].to(inputs.dtype)
    extended = torch.cat([history, inputs], dim=-1)  # (B, D, kernel - 1 + N), read before the cache moves on
    x = mixer._short_conv(inputs, conv_state)  # (B, N, D)
    cache.update_conv_state(inputs, index, conv_kernel_size=kernel)
    h0 = cache.get_recurrent_state(index) if conv_state is not None else None
    if h0 is None:
        h0 = x.new_zeros(x.shape[0], mixer.state_size)
    hidden_proj = getattr(mixer, "hidden_proj", None)
    plain = mixer.variant == "gru" and reads_plain_weight(mixer.input_proj) and reads_plain_weight(hidden_proj)
    if plain and x.shape[1] > 1 and not torch.compiler.is_exporting():
        # torch's fused GRU: on CPU too its C++ time loop beats the mixer's scan of a few ops per step
        states, last = cudnn_gru(x, h0, mixer.input_proj, hidden_proj)
    else:
        states, last = mixer._recur(x, h0, None, None, mixer.input_proj, hidden_proj)  # (B, N, H)
    cache.update_recurrent_state(last, index)

    weight = mixer.conv.weight  # (D, 1, kernel); tap j reads the input kernel - 1 - j steps back
    x_placeholders = placeholders * weight[:, 0, -1] + mixer.conv.bias
    if kernel > 1:  # taps 0..kernel-2 of the placeholder after token t read tokens t-kernel+2..t
        taps = F.conv1d(extended[..., 1:], weight[..., :-1], groups=weight.shape[0])  # (B, D, N)
        x_placeholders = x_placeholders + taps.transpose(1, 2)
    batch, steps, width = x_placeholders.shape
    placeholder_states, _ = mixer._recur(
        x_placeholders.reshape(batch * steps, 1, width), states.reshape(batch * steps, -1), None, None,
        mixer.input_proj, hidden_proj,
    )  # fmt: skip
    return mixer.out_proj(states), mixer.out_proj(placeholder_states.view(batch, steps, -1))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE of (B, heads, N, head_dim) at the positions whose (B, N, head_dim) `cos`, `sin` are given."""
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def attention_with_placeholders(
    mixer: HybridGRUAttention,
    hidden: torch.Tensor,
    placeholders: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    placeholder_rope: tuple[torch.Tensor, torch.Tensor],
    positions: torch.Tensor,
    cache: Cache,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal (sliding-window) attention over `hidden` (B, N, D) at `positions` (N,) through `cache`, and for each
    position t a placeholder at position t + 1 that attends to the keys a query there sees (the cached and new tokens
    up to t, within the window) and to itself. Returns both outputs (B, N, D)."""
    shape = (*hidden.shape[:-1], -1, mixer.head_dim)

    def project(states: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        query = rotate(mixer.q_norm(mixer.q_proj(states).view(shape)).transpose(1, 2), *cos_sin)  # (B, H, N, hd)
        key = rotate(mixer.k_norm(mixer.k_proj(states).view(shape)).transpose(1, 2), *cos_sin)  # (B, kvH, N, hd)
        return query, key, mixer.v_proj(states).view(shape).transpose(1, 2)

    query, key, value = project(hidden, rope)
    keys, values = cache.update(key, value, mixer.layer_idx)  # cached then new: (B, kvH, K, hd)
    keys, values = repeat_kv(keys, mixer.num_key_value_groups), repeat_kv(values, mixer.num_key_value_groups)
    key_positions = torch.arange(keys.shape[2], device=keys.device) + (positions[-1] + 1 - keys.shape[2])
    window = mixer.sliding_window
    earliest = None if window is None else positions + 1 - window  # the first key a query at `positions` sees
    main = banded_attention(query, keys, values, key_positions, positions, earliest, mixer.scaling)
    query, own_key, own_value = project(placeholders, placeholder_rope)
    own = repeat_kv(own_key, mixer.num_key_value_groups), repeat_kv(own_value, mixer.num_key_value_groups)
    earliest = None if earliest is None else earliest + 1
    attended = banded_attention(query, keys, values, key_positions, positions, earliest, mixer.scaling, own)
    return mixer.o_proj(main), mixer.o_proj(attended)


def banded_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    key_positions: torch.Tensor,
    latest: torch.Tensor,
    earliest: torch.Tensor | None,
    scaling: float,
    own: tuple[torch.Tensor, torch.Tensor] | None = None,
    block: int = 256,
) -> torch.Tensor:
    """Eager attention of queries (B, H, N, hd) to the keys (B, H, K, hd) at `key_positions` (K,, increasing) from
    `earliest` (N,) (None: the first) to `latest` (N,), plus with `own` each query's own key and value (B, H, N, hd).
    Runs `block` queries at a time against the band of keys they see, so a sliding window costs O(N * window).
    Returns (B, N, H * hd)."""
    outputs = []
    for start in range(0, query.shape[2], block):
        stop = min(start + block, query.shape[2])
        low = 0 if earliest is None else int(torch.searchsorted(key_positions, earliest[start]))
        high = int(torch.searchsorted(key_positions, latest[stop - 1], right=True))
        band = key_positions[None, low:high]  # (1, k)
        visible = band <= latest[start:stop, None]  # (n, k)
        if earliest is not None:
            visible = visible & (band >= earliest[start:stop, None])
        q = query[:, :, start:stop]
        scores = torch.matmul(q, keys[:, :, low:high].transpose(2, 3)) * scaling  # (B, H, n, k)
        scores = scores.masked_fill(~visible, float("-inf"))
        if own is not None:
            scores = torch.cat([scores, (q * own[0][:, :, start:stop]).sum(-1, keepdim=True) * scaling], dim=-1)
        weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights[..., : high - low], values[:, :, low:high])
        if own is not None:
            out = out + weights[..., -1:] * own[1][:, :, start:stop]
        outputs.append(out)
    return torch.cat(outputs, dim=2).transpose(1, 2).flatten(2)


def fork_cache(cache: Cache) -> Cache:
    """A copy of `cache` whose updates leave the original untouched (cache layers update their states in place).

    Differentiable (tensors are cloned), unlike `copy.deepcopy`, which refuses tensors that carry a graph.
    """
    forked = copy.copy(cache)
    forked.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in forked.layers:
        for name, value in vars(layer).items():
            if torch.is_tensor(value):
                setattr(layer, name, value.clone())
            elif isinstance(value, dict):  # per-state tensors and flags of linear-attention (GRU) layers
                setattr(layer, name, {k: v.clone() if torch.is_tensor(v) else v for k, v in value.items()})
    return forked


def student_t_domain(df: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Maps raw head outputs to Student-t parameters: df > 2 (finite variance), scale > 0 (as GluonTS)."""
    return 2.0 + F.softplus(df), loc, F.softplus(scale).clamp(min=torch.finfo(scale.dtype).eps)


__all__ = ["HybridGRUForTimeSeriesPrediction", "HybridGRUForTimeSeriesPredictionOutput"]
