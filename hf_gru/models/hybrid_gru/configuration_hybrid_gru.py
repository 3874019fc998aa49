"""Configuration of the HybridGRU model family: GRU blocks interleaved with self-attention layers."""

import copy

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

# One letter of `block_pattern` per mixer; the values are transformers' layer types, which its cache and mask
# builders read. A GRU layer holds a constant-size recurrent state, which transformers calls "linear_attention".
PATTERN_TO_LAYER_TYPE = {"G": "linear_attention", "A": "full_attention", "L": "sliding_attention"}
LAYER_TYPE_TO_PATTERN = {layer_type: letter for letter, layer_type in PATTERN_TO_LAYER_TYPE.items()}
GRU_VARIANTS = ("gru", "mingru")
TIME_SERIES_SCALINGS = ("mean", "std")
TIME_SERIES_LOSSES = ("mse", "mae", "nll")


@strict
class HybridGRUConfig(PreTrainedConfig):
    r"""
    Configuration of a [`HybridGRUModel`]: pre-norm residual blocks whose token mixer is a GRU or self-attention.

    Args:
        block_pattern (`str`, defaults to `"GGA"`):
            Mixer of each layer, tiled over `num_hidden_layers`: `G` GRU, `A` full attention, `L` sliding-window
            attention (needs `sliding_window`). Ignored when `layer_types` is given; kept in sync with it.
        layer_types (`list[str]`, *optional*):
            transformers' per-layer vocabulary (`"linear_attention"` for GRU layers, `"full_attention"`,
            `"sliding_attention"`), derived from `block_pattern` when not given.
        gru_variant (`str`, defaults to `"gru"`):
            `"gru"`: the classic cell whose gates read h_{t-1} (Cho et al., 2014). `"mingru"`: gates read x_t only,
            so a whole sequence runs as a parallel scan (Feng et al., 2024, "Were RNNs All We Needed?").
        gru_hidden_size (`int`, *optional*):
            Width of the GRU state; defaults to `hidden_size`.
        gru_conv_kernel (`int`, defaults to 4):
            Kernel of the short causal depthwise convolution in front of the recurrence (as in Griffin and LFM2).
        bidirectional (`bool`, *optional*):
            Encoder mode for classification, tagging and CTC: a backward GRU beside the forward one and non-causal
            attention. Causal language models refuse it. In an encoder-decoder model it describes the encoder and must
            be True (the decoder is always causal). Not given: `is_encoder_decoder` (False for every other model).
        num_decoder_layers (`int`, *optional*):
            Encoder-decoder models (`is_encoder_decoder=True`, `HybridGRUForConditionalGeneration`) only: layers of the
            decoder; defaults to `num_hidden_layers`. `num_hidden_layers` and `block_pattern` then describe the encoder.
        decoder_block_pattern (`str`, *optional*):
            Encoder-decoder models only: mixer letters of the decoder layers, as `block_pattern`; defaults to
            `block_pattern`. `config.get_text_config(decoder=True)` is the decoder's view of the config, whose
            `layer_types` are the decoder's: transformers builds generation caches from it.
        decoder_start_token_id (`int`, *optional*):
            Encoder-decoder models only: the first decoder input, to which `labels` are shifted right (as in BART);
            defaults to `bos_token_id`, else `pad_token_id`.
        qk_norm (`bool`, defaults to `False`):
            Per-head RMSNorm of queries and keys before RoPE, as in Qwen3.

    Time-series fields (used by `HybridGRUForTimeSeriesPrediction`): `context_length`, `prediction_length`,
    `num_input_channels`, `patch_length` (1 = one token per time step), `scaling` (`"mean"`, `"std"` or `None`),
    `loss` (`"mse"`, `"mae"`, or `"nll"` for a Student-t head), `num_parallel_samples`.
    Speech fields (used by `HybridGRUForCTC`): `num_mel_bins`, `conv_subsampling_channels`, `ctc_loss_reduction`,
    `ctc_zero_infinity`.

    ```python
    >>> from hf_gru import HybridGRUConfig, HybridGRUForCausalLM
    >>> config = HybridGRUConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=3, block_pattern="GGA")
    >>> model = HybridGRUForCausalLM(config)
    >>> config.layer_types
    ['linear_attention', 'linear_attention', 'full_attention']
    ```
    """

    model_type = "hybrid_gru"
    keys_to_ignore_at_inference = ["cache"]
    base_model_tp_plan = {
        "layers.*.mixer.q_proj": "colwise",
        "layers.*.mixer.k_proj": "colwise",
        "layers.*.mixer.v_proj": "colwise",
        "layers.*.mixer.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    vocab_size: int = 32000
    hidden_size: int = 512
    intermediate_size: int = 1408  # SwiGLU width, ~2.75x hidden as in Llama
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_key_value_heads: int | None = None  # None: as many as query heads (no grouping)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rope_parameters: RopeParameters | dict | None = None
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_cache: bool = True
    attention_bias: bool = False
    qk_norm: bool = False  # per-head RMSNorm of queries and keys (Qwen3); lets hf_gru.convert_to_hybrid copy Qwen3
    attention_dropout: float | int = 0.0
    sliding_window: int | None = None
    block_pattern: str = "GGA"
    layer_types: list[str] | None = None
    gru_variant: str = "gru"
    gru_hidden_size: int | None = None
    gru_conv_kernel: int = 4
    bidirectional: bool | None = None  # None: True for an encoder-decoder, whose encoder reads the whole source
    classifier_dropout: float | int = 0.0
    # encoder-decoder (translation); `is_encoder_decoder` itself is a PreTrainedConfig field
    num_decoder_layers: int | None = None
    decoder_block_pattern: str | None = None
    decoder_start_token_id: int | None = None
    # time series
    context_length: int = 96
    prediction_length: int = 24
    num_input_channels: int = 1
    patch_length: int = 1
    scaling: str | None = "std"
    loss: str = "mse"
    num_parallel_samples: int = 100
    # speech
    num_mel_bins: int = 80
    conv_subsampling_channels: int = 256
    ctc_loss_reduction: str = "mean"
    ctc_zero_infinity: bool = True

    def __post_init__(self, **kwargs):
        # Errors are raised here, not in a `validate_*` method: those reach users re-wrapped as huggingface_hub's
        # StrictDataclassClassValidationError, and our contract is a plain ValueError naming the bad value.
        if self.layer_types is None:
            self.layer_types = layer_types_from_pattern(self.block_pattern, self.num_hidden_layers)
        else:
            self.layer_types = list(self.layer_types)
            if not self._pattern_tiles_to(self.layer_types):  # keep a saved "GGA" as written, re-derive otherwise
                self.block_pattern = pattern_from_layer_types(self.layer_types)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and self.num_attention_heads > 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.gru_hidden_size is None:
            self.gru_hidden_size = self.hidden_size
        if self.bidirectional is None:
            self.bidirectional = bool(self.is_encoder_decoder)
        if self.is_encoder_decoder:
            self._set_decoder_defaults()
        self._check_values()
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """Builds the config of a saved checkpoint (every `from_pretrained`, the Auto classes included). A field of the
        wrong type in config.json is a ValueError naming the field and its value, like every other bad value."""
        try:
            return super().from_dict(config_dict, **kwargs)
        except StrictDataclassError as error:
            raise ValueError(f"HybridGRUConfig fails validation: {error}") from error

    def _set_decoder_defaults(self) -> None:
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_hidden_layers
        if self.decoder_block_pattern is None:
            self.decoder_block_pattern = self.block_pattern
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.bos_token_id if self.bos_token_id is not None else self.pad_token_id

    @property
    def decoder_layer_types(self) -> list[str] | None:
        """The decoder's layer types (from `decoder_block_pattern`), None unless `is_encoder_decoder`."""
        if not self.is_encoder_decoder:
            return None
        return layer_types_from_pattern(self.decoder_block_pattern, self.num_decoder_layers)

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> "HybridGRUConfig":
        """With `decoder=True` on an encoder-decoder config: the decoder's view (its layers, pattern and layer types,
        causal). transformers builds `DynamicCache(config=...)` from this view, in `generate()` too, so the decoder's
        cache gets a recurrent slot per decoder GRU layer. Otherwise the config itself."""
        if not (decoder and not encoder and self.is_encoder_decoder):
            return self
        view = copy.deepcopy(self)
        view.is_encoder_decoder = False
        view.num_hidden_layers, view.block_pattern = self.num_decoder_layers, self.decoder_block_pattern
        view.layer_types, view.bidirectional = self.decoder_layer_types, False
        view.num_decoder_layers = view.decoder_block_pattern = None
        return view

    def _pattern_tiles_to(self, layer_types: list[str]) -> bool:
        try:
            return layer_types_from_pattern(self.block_pattern, len(layer_types)) == layer_types
        except ValueError:  # an invalid pattern next to explicit layer types: those win
            return False

    def _check_values(self):
        for name in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings", "gru_hidden_size", "gru_conv_kernel",
            "context_length", "prediction_length", "num_input_channels", "patch_length", "num_mel_bins",
        ):  # fmt: skip
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {name}={value}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must be divisible by `num_key_value_heads` "
                f"({self.num_key_value_heads})."
            )
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"`layer_types` has {len(self.layer_types)} entries but `num_hidden_layers` is "
                f"{self.num_hidden_layers}: {self.layer_types}."
            )
        if self.gru_variant not in GRU_VARIANTS:
            raise ValueError(f"`gru_variant` must be one of {GRU_VARIANTS}, got gru_variant={self.gru_variant!r}.")
        if "sliding_attention" in self.layer_types and (self.sliding_window is None or self.sliding_window <= 0):
            raise ValueError(
                f"Pattern {self.block_pattern!r} has sliding-window layers ('L'), which need a positive "
                f"`sliding_window`, got sliding_window={self.sliding_window}."
            )
        if self.scaling not in (*TIME_SERIES_SCALINGS, None):
            raise ValueError(f"`scaling` must be one of {TIME_SERIES_SCALINGS} or None, got {self.scaling!r}.")
        if self.loss not in TIME_SERIES_LOSSES:
            raise ValueError(f"`loss` must be one of {TIME_SERIES_LOSSES}, got loss={self.loss!r}.")
        if self.ctc_loss_reduction not in ("mean", "sum"):
            raise ValueError(f"`ctc_loss_reduction` must be 'mean' or 'sum', got {self.ctc_loss_reduction!r}.")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"`attention_dropout` must be in [0, 1), got {self.attention_dropout}.")
        self._check_encoder_decoder()

    def _check_encoder_decoder(self) -> None:
        """The rule: the decoder fields mean something only with `is_encoder_decoder=True`, whose encoder is
        bidirectional (a causal encoder would throw away the right context of a source it always has in full)."""
        decoder_fields = {
            "num_decoder_layers": self.num_decoder_layers,
            "decoder_block_pattern": self.decoder_block_pattern,
        }
        if not self.is_encoder_decoder:
            given = {k: v for k, v in decoder_fields.items() if v is not None}
            if given:
                raise ValueError(
                    f"{given} describe the decoder of an encoder-decoder model, but is_encoder_decoder=False; set "
                    "is_encoder_decoder=True (HybridGRUForConditionalGeneration) or leave them unset."
                )
            return
        if not self.bidirectional:
            raise ValueError(
                "is_encoder_decoder=True needs bidirectional=True: `bidirectional` describes the encoder, which reads "
                "the whole source at once (the decoder is always causal); got bidirectional=False."
            )
        if not isinstance(self.num_decoder_layers, int) or self.num_decoder_layers <= 0:
            raise ValueError(f"`num_decoder_layers` must be a positive integer, got {self.num_decoder_layers!r}.")
        try:
            layer_types = self.decoder_layer_types
        except ValueError as error:
            raise ValueError(f"Invalid decoder_block_pattern={self.decoder_block_pattern!r}: {error}") from error
        if "sliding_attention" in layer_types and (self.sliding_window is None or self.sliding_window <= 0):
            raise ValueError(
                f"decoder_block_pattern={self.decoder_block_pattern!r} has sliding-window layers ('L'), which need a "
                f"positive `sliding_window`, got sliding_window={self.sliding_window}."
            )


def layer_types_from_pattern(block_pattern: str, num_hidden_layers: int) -> list[str]:
    """Tiles `block_pattern` over the layers: `("GGA", 4)` -> G, G, A, G as transformers layer types."""
    if not isinstance(block_pattern, str) or not block_pattern:
        raise ValueError(
            f"`block_pattern` must be a non-empty string of {sorted(PATTERN_TO_LAYER_TYPE)}, got {block_pattern!r}."
        )
    unknown = sorted(set(block_pattern) - set(PATTERN_TO_LAYER_TYPE))
    if unknown:
        raise ValueError(
            f"`block_pattern` {block_pattern!r} contains unknown letter(s) {unknown}; expected letters from "
            f"{sorted(PATTERN_TO_LAYER_TYPE)} (G = GRU, A = attention, L = sliding-window attention)."
        )
    return [PATTERN_TO_LAYER_TYPE[block_pattern[i % len(block_pattern)]] for i in range(num_hidden_layers)]


def pattern_from_layer_types(layer_types: list[str]) -> str:
    """The inverse of `layer_types_from_pattern`: one letter per layer, so the two fields never disagree."""
    if not layer_types:
        raise ValueError(f"`layer_types` must name at least one layer, got {layer_types!r}.")
    unknown = [t for t in layer_types if t not in LAYER_TYPE_TO_PATTERN]
    if unknown:
        raise ValueError(
            f"`layer_types` contains unsupported type(s) {unknown}; HybridGRU layers are one of "
            f"{list(LAYER_TYPE_TO_PATTERN)}."
        )
    return "".join(LAYER_TYPE_TO_PATTERN[t] for t in layer_types)


__all__ = ["HybridGRUConfig"]
