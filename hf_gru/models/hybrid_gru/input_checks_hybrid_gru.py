"""Input checks of HybridGRU: a ValueError naming the argument and its bad value, never an IndexError or a CUDA
device assert from deep inside torch. Shared by every head (the time-series and CTC heads use the float/mask checks).

Remote code: `modeling_hybrid_gru.py` imports this module, so `save_pretrained` copies it next to every checkpoint.
It imports only torch and transformers and defines functions.
"""

import torch
from transformers.cache_utils import Cache, LinearAttentionCacheLayerMixin
from transformers.utils import TransformersKwargs, is_torchdynamo_compiling

from .configuration_hybrid_gru import HybridGRUConfig


def check_inputs(
    config: HybridGRUConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | dict | None,
    position_ids: torch.Tensor | None = None,
    cache: Cache | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Boundary checks: a ValueError naming the argument and its bad value, never an IndexError or a CUDA device
    assert from deep inside torch. `dtype` is the model's; `inputs_embeds` must match it outside autocast.

    Accepted on purpose: sequences longer than `max_position_embeddings` (attention uses RoPE, which has no position
    table to overflow and extrapolates past the trained length, with whatever quality the model has there; GRU layers
    have no length limit, which lets a stream run through the cache indefinitely), and `attention_mask` rows that are
    all padding (a chunked prefill of a left-padded batch feeds such chunks). Checks that read tensor values cost one
    host sync each and are skipped while torch.compile traces.
    """
    if (input_ids is None) == (inputs_embeds is None):
        both = "both" if input_ids is not None else "neither"
        raise ValueError(f"Pass exactly one of `input_ids` or `inputs_embeds`; got {both}.")
    if input_ids is not None:
        _check_input_ids(config, input_ids)
    else:
        _check_inputs_embeds(config, inputs_embeds, dtype)
    batch, seq_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
    if config.bidirectional:
        cache = None  # the model ignores it: an encoder sees the whole sequence at once
    if cache is not None:
        _check_cache(config, cache)
    if attention_mask is not None and not isinstance(attention_mask, dict):  # dict: per-layer masks from generate()
        past = None  # unknown for an all-GRU cache: it counts no tokens
        if cache is None:
            past = 0
        elif any(t != "linear_attention" for t in config.layer_types):
            past = cache.get_seq_length()
        _check_attention_mask(attention_mask, batch, seq_len, past)
    if position_ids is not None:
        _check_position_ids(position_ids, batch, seq_len)


def _check_tensor(name: str, value) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}.")


def _check_input_ids(config: HybridGRUConfig, input_ids: torch.Tensor) -> None:
    _check_tensor("input_ids", input_ids)
    if input_ids.dtype not in (torch.int64, torch.int32):  # what nn.Embedding accepts
        raise ValueError(f"`input_ids` must be an int64 or int32 tensor, got dtype {input_ids.dtype}.")
    if input_ids.ndim != 2:
        raise ValueError(f"`input_ids` must be 2-D (batch, seq_len), got shape {tuple(input_ids.shape)}.")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"`input_ids` is empty: shape {tuple(input_ids.shape)}; batch and seq_len must be >= 1.")
    if not is_torchdynamo_compiling():
        low, high = input_ids.min().item(), input_ids.max().item()
        if low < 0 or high >= config.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"`input_ids` contains token id {bad}, outside [0, vocab_size={config.vocab_size}).")


def _check_inputs_embeds(config: HybridGRUConfig, inputs_embeds: torch.Tensor, dtype: torch.dtype | None) -> None:
    check_float_input("inputs_embeds", inputs_embeds, dtype)
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != config.hidden_size:
        raise ValueError(
            f"`inputs_embeds` must have shape (batch, seq_len, hidden_size={config.hidden_size}), "
            f"got {tuple(inputs_embeds.shape)}."
        )
    if inputs_embeds.shape[0] == 0 or inputs_embeds.shape[1] == 0:
        shape = tuple(inputs_embeds.shape)
        raise ValueError(f"`inputs_embeds` is empty: shape {shape}; batch and seq_len must be >= 1.")
    check_finite("inputs_embeds", inputs_embeds)


def check_float_input(name: str, value, dtype: torch.dtype | None) -> None:
    """A floating-point tensor of the model's `dtype` (any float dtype under autocast). Shared by the heads that take
    continuous inputs, so a float64 array or an integer tensor is named instead of failing as a dtype clash in a matmul.
    """
    _check_tensor(name, value)
    if not value.dtype.is_floating_point:
        raise ValueError(f"`{name}` must be a floating-point tensor, got dtype {value.dtype}.")
    autocast = torch.is_autocast_enabled(value.device.type)
    if dtype is not None and value.dtype != dtype and not autocast:
        raise ValueError(
            f"`{name}` has dtype {value.dtype} but the model's weights are {dtype}; cast it with `.to({dtype})` or "
            "run under torch.autocast."
        )


def check_finite(name: str, value: torch.Tensor, axes: tuple[str, ...] = ("batch", "position", "channel")) -> None:
    """NaN/inf in a continuous input: the count and the first bad value with its index, one name per axis."""
    if is_torchdynamo_compiling():
        return
    bad = ~torch.isfinite(value)
    if bad.any():
        index = bad.nonzero()[0].tolist()
        where = ", ".join(f"{axis} {i}" for axis, i in zip(axes, index, strict=True))
        raise ValueError(
            f"`{name}` contains {int(bad.sum())} NaN/inf values (first: {value[tuple(index)].item()} at {where})."
        )


def check_binary_mask(name: str, mask, meaning: str = "1 (token) or 0 (padding)") -> None:
    """A mask tensor holding only 0s and 1s (a bool mask is fine)."""
    _check_tensor(name, mask)
    if not is_torchdynamo_compiling():
        bad = (mask != 0) & (mask != 1)
        if bad.any():
            raise ValueError(f"`{name}` contains value {mask[bad][0].item()}; expected {meaning}.")


def _check_attention_mask(attention_mask, batch: int, seq_len: int, past: int | None) -> None:
    _check_tensor("attention_mask", attention_mask)
    if attention_mask.ndim != 2:
        raise ValueError(
            f"`attention_mask` must be a 2-D padding mask (batch, past_length + seq_len) of 1s and 0s, got shape "
            f"{tuple(attention_mask.shape)}; GRU layers cannot follow a custom 3-D/4-D attention pattern."
        )
    expected = f"{past + seq_len}" if past is not None else f">= {seq_len}"
    length_ok = attention_mask.shape[1] == past + seq_len if past is not None else attention_mask.shape[1] >= seq_len
    if attention_mask.shape[0] != batch or not length_ok:
        raise ValueError(
            f"`attention_mask` has shape {tuple(attention_mask.shape)}, but the inputs have batch {batch} and "
            f"seq_len {seq_len} after {past if past is not None else 'an unknown number of'} cached tokens: "
            f"expected ({batch}, {expected}), covering the cached tokens and the new ones."
        )
    check_binary_mask("attention_mask", attention_mask)


def _check_position_ids(position_ids, batch: int, seq_len: int) -> None:
    _check_tensor("position_ids", position_ids)
    if position_ids.dtype.is_floating_point or position_ids.dtype == torch.bool:
        raise ValueError(f"`position_ids` must be an integer tensor, got dtype {position_ids.dtype}.")
    if position_ids.ndim != 2 or position_ids.shape[0] not in (1, batch) or position_ids.shape[1] != seq_len:
        raise ValueError(
            f"`position_ids` must have shape ({batch}, {seq_len}) or (1, {seq_len}), got {tuple(position_ids.shape)}."
        )
    if not is_torchdynamo_compiling():
        low = position_ids.min().item()
        if low < 0:
            raise ValueError(f"`position_ids` contains position {low}; positions must be >= 0.")


def _check_cache(config: HybridGRUConfig, cache) -> None:
    if not isinstance(cache, Cache):
        raise ValueError(
            f"`cache` must be a transformers Cache such as DynamicCache(config=model.config), got "
            f"{type(cache).__name__} (legacy tuples of tensors are not supported)."
        )
    layers = getattr(cache, "layers", [])
    for idx, layer_type in enumerate(config.layer_types):
        slot = layers[idx] if idx < len(layers) else None
        if layer_type == "linear_attention" and not isinstance(slot, LinearAttentionCacheLayerMixin):
            found = type(slot).__name__ if slot is not None else "no layer"
            raise ValueError(
                f"`cache` has {found} at index {idx}, but layer {idx} is a GRU layer and needs a recurrent-state "
                f"slot: build the cache with DynamicCache(config=model.config)."
            )


def check_class_labels(labels: torch.Tensor, num_classes: int, name: str = "labels") -> None:
    """Class-index labels must lie in [0, num_classes) or be -100 (ignored); otherwise cross-entropy fails with an
    IndexError on CPU or a device assert on CUDA that names nothing."""
    if labels.dtype.is_floating_point or is_torchdynamo_compiling():
        return  # float labels mean regression / multi-label; those losses check their own shapes
    counted = labels[labels != -100]
    if counted.numel() and (counted.min() < 0 or counted.max() >= num_classes):
        bad = counted.min().item() if counted.min() < 0 else counted.max().item()
        raise ValueError(f"`{name}` contains {bad}, outside [0, {num_classes}) (use -100 to ignore a position).")


# What transformers itself sends through a forward's **kwargs: its model-agnostic `TransformersKwargs` (output flags,
# Trainer's num_items_in_batch, packed-sequence lengths), `return_dict`, and `shift_labels`, which its causal-LM loss
# reads (its common tests pass it to the model). Anything else is a typo or an argument of another model
# (`past_key_values` is renamed to `cache` by the `deprecate_kwarg` decorators before this check).
FORWARD_KWARGS = frozenset(TransformersKwargs.__optional_keys__) | {"return_dict", "shift_labels"}


def check_forward_kwargs(owner: str, kwargs: dict) -> None:
    """A TypeError naming every keyword `owner.forward` does not know, instead of passing it on silently.

    `token_type_ids`, which BERT-style tokenizers return next to `input_ids` (`model(**tokenizer(texts))`), is taken
    out of `kwargs`: all zeros (one segment) means nothing to a model without segment embeddings; a second segment
    (sentence pairs) is a ValueError, since this model cannot tell the segments apart.
    """
    token_type_ids = kwargs.pop("token_type_ids", None)
    if isinstance(token_type_ids, torch.Tensor) and not is_torchdynamo_compiling() and token_type_ids.any():
        raise ValueError(
            f"{owner} has no token type (segment) embeddings, so it cannot honour `token_type_ids` with non-zero ids "
            f"(found ids {token_type_ids.unique().tolist()}); join the segments with a separator token instead."
        )
    unknown = sorted(set(kwargs) - FORWARD_KWARGS)
    if unknown:
        raise TypeError(
            f"{owner}.forward() got unexpected keyword argument(s) {unknown}; besides its own arguments it accepts "
            f"transformers' {sorted(FORWARD_KWARGS)}."
        )
