"""HybridGRU: pre-norm residual blocks whose token mixer is a GRU (constant-size state) or self-attention.

Read top to bottom: norm, rotary, MLP, GRU mixer, attention, mixer registry, decoder layer, pretrained base, model,
heads. Three sibling modules hold what a reader of the model need not meet first: `recurrence_hybrid_gru.py` (the
GRU time loops: references, fused scans, cuDNN), `input_checks_hybrid_gru.py` (every `check_*`) and
`serialization_hybrid_gru.py` (crash-safe save, strict load, the `auto_map`). `save_pretrained` copies all of them
next to a checkpoint, so they import only torch, transformers and each other.
"""

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_causal_mask,
    create_recurrent_attention_mask,
    create_sliding_window_causal_mask,
)
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_hybrid_gru import HybridGRUConfig
from .input_checks_hybrid_gru import check_class_labels, check_forward_kwargs, check_inputs
from .recurrence_hybrid_gru import (
    cudnn_gru,
    gru_recurrence,
    gru_scan,
    linear_recurrence,
    linear_scan,
    mingru_gates,
    packed_sequence_starts,
    upcast,
)
from .serialization_hybrid_gru import HybridGRUSerializationMixin


class HybridGRURMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class HybridGRURotaryEmbedding(nn.Module):
    inv_freq: torch.Tensor

    def __init__(self, config: HybridGRUConfig):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        rope_init_fn = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: HybridGRUConfig, **kwargs) -> tuple[torch.Tensor, float]:
        base, dim = config.rope_parameters["rope_theta"], config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        return inv_freq, 1.0

    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, head_dim)
        cos, sin = emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


class HybridGRUMLP(nn.Module):
    """SwiGLU feed-forward (Shazeer, 2020)."""

    def __init__(self, config: HybridGRUConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def reads_plain_weight(module: nn.Module) -> bool:
    """True for an `nn.Linear` whose weight is a plain tensor, which a fused kernel may read without calling it."""
    return type(module) is nn.Linear and type(module.weight) in (torch.Tensor, nn.Parameter)


class HybridGRUMixer(nn.Module):
    """GRU token mixer: short causal depthwise conv -> input projection -> recurrence -> output projection.

    The recurrent state and the last conv inputs live in the cache (transformers' linear-attention slot), never on the
    module, so beam search reorders them and a cached continuation resumes from them. Packed rows (position_ids
    restarting, no attention_mask, no cache) restart both the state and the conv at every sequence start.
    """

    use_fast_path = True  # False: the reference recurrences (`gru_recurrence`, `linear_recurrence`), for tests

    def __init__(self, config: HybridGRUConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.variant = config.gru_variant
        self.state_size = config.gru_hidden_size
        self.conv_kernel = config.gru_conv_kernel
        self.bidirectional = config.bidirectional
        num_gates = 3 if self.variant == "gru" else 2
        num_directions = 2 if self.bidirectional else 1

        self.conv = nn.Conv1d(config.hidden_size, config.hidden_size, self.conv_kernel, groups=config.hidden_size)
        self.input_proj = nn.Linear(config.hidden_size, num_gates * self.state_size)
        if self.variant == "gru":
            self.hidden_proj = nn.Linear(self.state_size, 3 * self.state_size)
        if self.bidirectional:
            self.input_proj_reverse = nn.Linear(config.hidden_size, num_gates * self.state_size)
            if self.variant == "gru":
                self.hidden_proj_reverse = nn.Linear(self.state_size, 3 * self.state_size)
        self.out_proj = nn.Linear(num_directions * self.state_size, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        # attention_mask here is the 2-D padding mask of this chunk (or None): 1 for real tokens, 0 for padding.
        keep = None
        if attention_mask is not None:
            keep = attention_mask == 0
            hidden_states = hidden_states.masked_fill(keep.unsqueeze(-1), 0.0)
        if self.bidirectional:
            cache = None  # an encoder sees the whole sequence at once; there is nothing to carry over
        reset = None
        if attention_mask is None and cache is None and not self.bidirectional:  # as transformers' packed masks
            reset = packed_sequence_starts(position_ids, hidden_states.shape[0])

        conv_state = cache.get_conv_state(self.layer_idx) if cache is not None else None
        x = self._short_conv(hidden_states.transpose(1, 2), conv_state, reset)  # (B, D, T) -> (B, T, D)
        if cache is not None:
            cache.update_conv_state(hidden_states.transpose(1, 2), self.layer_idx, conv_kernel_size=self.conv_kernel)

        h0 = cache.get_recurrent_state(self.layer_idx) if conv_state is not None else None
        if h0 is None:
            h0 = x.new_zeros(x.shape[0], self.state_size)
        states, last = self._recur(x, h0, keep, reset, self.input_proj, getattr(self, "hidden_proj", None))
        if cache is not None:
            cache.update_recurrent_state(last, self.layer_idx)

        if self.bidirectional:
            flipped_keep = keep.flip(1) if keep is not None else None
            reverse_proj = getattr(self, "hidden_proj_reverse", None)
            reverse, _ = self._recur(
                x.flip(1), torch.zeros_like(h0), flipped_keep, None, self.input_proj_reverse, reverse_proj
            )
            states = torch.cat([states, reverse.flip(1)], dim=-1)
        return self.out_proj(states), None

    def _short_conv(
        self, x: torch.Tensor, conv_state: torch.Tensor | None, starts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Causal depthwise conv over (B, D, T); `conv_state` holds the previous inputs (B, D, kernel) when resuming.

        With `starts` (B, T) (packed rows), a tap never reaches back past the start of its token's sequence.
        """
        if conv_state is not None:
            x = torch.cat([conv_state[..., 1:].to(x.dtype), x], dim=-1)
        else:
            x = F.pad(x, (self.conv_kernel - 1, 0))
        if x.shape[-1] == self.conv_kernel and self.use_fast_path:  # one decoding step: a dot product per channel
            out = torch.linalg.vecdot(x, self.conv.weight[:, 0]) + self.conv.bias  # oneDNN's conv: ~1 ms on CPU here
            return out.unsqueeze(1)
        if starts is None:
            return F.conv1d(x, self.conv.weight, self.conv.bias, groups=x.shape[1]).transpose(1, 2)
        kernel, steps = self.conv_kernel, starts.shape[1]
        weight = self.conv.weight[:, 0]  # (D, kernel); tap k reads the input `kernel - 1 - k` steps back
        out = torch.addcmul(self.conv.bias[:, None], x[..., kernel - 1 :], weight[:, -1:])
        visible = torch.ones_like(starts)  # the tap `lag` steps back is in the same sequence
        for lag in range(1, kernel):
            visible = visible & ~F.pad(starts[:, : steps - lag + 1], (lag - 1, 0))
            tap = x[..., kernel - 1 - lag : kernel - 1 - lag + steps] * visible.unsqueeze(1)
            out = torch.addcmul(out, tap, weight[:, kernel - 1 - lag, None])
        return out.transpose(1, 2)

    def _recur(
        self,
        x: torch.Tensor,
        h0: torch.Tensor,
        keep: torch.Tensor | None,
        reset: torch.Tensor | None,
        input_proj: nn.Module,
        hidden_proj: nn.Module | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, H) -> all states (B, T, H) and the last state (B, H)."""
        # The fused paths read projection weights directly; an adapter-wrapped projection (e.g. LoRA from peft) or a
        # quantized weight (e.g. torchao's Int8Tensor) must go through its module call, so it takes the reference loop.
        plain_hidden = hidden_proj is None or reads_plain_weight(hidden_proj)
        if not self.use_fast_path or x.shape[1] == 1 or torch.compiler.is_exporting() or not plain_hidden:
            gates_x = input_proj(x)  # hoisted out of the time loop: one matmul for the whole chunk
            if self.variant == "gru":
                return gru_recurrence(gates_x, h0.to(gates_x.dtype), hidden_proj, keep, reset)
            decay, values = mingru_gates(gates_x, keep, reset)
            return linear_recurrence(decay, values, h0.to(values.dtype))
        if self.variant == "gru" and x.is_cuda and keep is None and reset is None and reads_plain_weight(input_proj):
            return cudnn_gru(x, h0, input_proj, hidden_proj)
        gates_x = upcast(input_proj(x.transpose(0, 1)))  # (T, B, G): each step reads one contiguous slice
        keep = keep.t().contiguous() if keep is not None else None
        reset = reset.t().contiguous() if reset is not None else None
        h0 = h0.to(gates_x.dtype)
        if self.variant == "gru":
            weight, bias = upcast(hidden_proj.weight), upcast(hidden_proj.bias)
            save = torch.is_grad_enabled() and any(t.requires_grad for t in (gates_x, h0, weight, bias))
            states = gru_scan(gates_x, h0, weight, bias, keep, reset, save)[0]
        else:
            decay, values = mingru_gates(gates_x, keep, reset)
            states = linear_scan(decay, values, h0, False)
        states = states.transpose(0, 1).to(x.dtype)
        return states, states[:, -1]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads: (B, 1, T, head_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, kv_heads, T, hd) -> (B, kv_heads * n_rep, T, hd) for grouped-query attention."""
    if n_rep == 1:
        return hidden_states
    batch, kv_heads, seq_len, head_dim = hidden_states.shape
    hidden_states = hidden_states[:, :, None].expand(batch, kv_heads, n_rep, seq_len, head_dim)
    return hidden_states.reshape(batch, kv_heads * n_rep, seq_len, head_dim)


def attention_implementation(config: HybridGRUConfig, output_attentions: bool | None) -> str:
    """The attention function of one call. Only eager attention materialises the weights, so a call that asks for
    them runs eager attention, and the model builds that call's masks for it too (eager adds a float mask to the
    scores, where SDPA takes a boolean one, or none at all for a plain causal mask)."""
    return "eager" if output_attentions else config._attn_implementation


def config_for_masks(config: HybridGRUConfig, implementation: str) -> HybridGRUConfig:
    """`config` as transformers' mask builders should read it for a call that runs `implementation` (a shallow copy
    when that differs from the configured one), so the masks and the attention function of the call agree."""
    if implementation == config._attn_implementation:
        return config
    config = copy.copy(config)
    config._attn_implementation_internal = implementation
    return config


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Tq, Tk)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, Tq, H, hd)
    return attn_output, attn_weights


class HybridGRUAttention(nn.Module):
    """Multi-head self-attention with RoPE and grouped-query heads, through transformers' attention interface."""

    def __init__(self, config: HybridGRUConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = not config.bidirectional
        is_sliding = config.layer_types[layer_idx] == "sliding_attention"
        self.sliding_window = config.sliding_window if is_sliding else None
        q_size, kv_size = config.num_attention_heads * self.head_dim, config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=config.attention_bias)
        # Per-head RMSNorm of queries and keys before RoPE (Qwen3's attention), so such checkpoints convert exactly.
        self.q_norm = HybridGRURMSNorm(self.head_dim, eps=config.rms_norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = HybridGRURMSNorm(self.head_dim, eps=config.rms_norm_eps) if config.qk_norm else nn.Identity()

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_norm(self.q_proj(hidden_states).view(hidden_shape)).transpose(1, 2)  # (B, H, T, hd)
        key = self.k_norm(self.k_proj(hidden_states).view(hidden_shape)).transpose(1, 2)  # (B, kvH, T, hd)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        query, key = apply_rotary_pos_emb(query, key, *position_embeddings)
        if cache is not None and self.is_causal:
            key, value = cache.update(key, value, self.layer_idx)

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
            sliding_window=self.sliding_window,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


# Layer type (transformers' vocabulary, see configuration_hybrid_gru.PATTERN_TO_LAYER_TYPE) -> token mixer.
MIXERS: dict[str, type[nn.Module]] = {
    "linear_attention": HybridGRUMixer,
    "full_attention": HybridGRUAttention,
    "sliding_attention": HybridGRUAttention,
}


class HybridGRUDecoderLayer(GradientCheckpointingLayer):
    """h = h + Mixer(RMSNorm(h)); h = h + MLP(RMSNorm(h)). The block never branches on the mixer type."""

    def __init__(self, config: HybridGRUConfig, layer_idx: int):
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        self.mixer = MIXERS[self.layer_type](config, layer_idx)
        self.mlp = HybridGRUMLP(config)
        self.input_layernorm = HybridGRURMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = HybridGRURMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        mixed, _ = self.mixer(
            self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + mixed
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class HybridGRUPreTrainedModel(HybridGRUSerializationMixin, PreTrainedModel):
    config: HybridGRUConfig
    config_class = HybridGRUConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HybridGRUDecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True  # the time loops are custom ops (`gru_scan`, `linear_scan`): no graph breaks
    _is_stateful = True  # the GRU state cannot be rolled back, so assisted decoding is off
    _can_record_outputs = {
        "hidden_states": HybridGRUDecoderLayer,
        "attentions": OutputRecorder(HybridGRUAttention, index=1),
    }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, HybridGRUMixer):
            self._init_gru_mixer(module)

    def _init_gru_mixer(self, module: HybridGRUMixer) -> None:
        # The conv starts as the identity (last tap 1) so the recurrence first sees its input unchanged.
        identity = torch.zeros_like(module.conv.weight)
        identity[..., -1] = 1.0
        init.copy_(module.conv.weight, identity)
        init.zeros_(module.conv.bias)
        size = module.state_size
        for suffix in ("", "_reverse"):
            input_proj = getattr(module, f"input_proj{suffix}", None)
            if input_proj is None:
                continue
            init.xavier_uniform_(input_proj.weight)
            # Bias the update gate towards keeping the state, so gradients reach far back at the start of training.
            bias = torch.zeros_like(input_proj.bias)
            if module.variant == "gru":
                bias[size : 2 * size] = 1.0
            else:
                bias[:size] = -1.0
            init.copy_(input_proj.bias, bias)
            hidden_proj = getattr(module, f"hidden_proj{suffix}", None)
            if hidden_proj is not None:
                for gate in hidden_proj.weight.split(size, dim=0):  # one orthogonal matrix per gate
                    init.orthogonal_(gate)
                init.zeros_(hidden_proj.bias)


class HybridGRUModel(HybridGRUPreTrainedModel):
    def __init__(self, config: HybridGRUConfig, token_embeddings: bool = True):
        """`token_embeddings=False`: no token table, for heads that feed `inputs_embeds` only (time series, speech)."""
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = None
        if token_embeddings:
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([HybridGRUDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
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
        attention_mask: torch.Tensor | dict | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        check_forward_kwargs(type(self).__name__, kwargs)
        check_inputs(self.config, input_ids, inputs_embeds, attention_mask, position_ids, cache, self.dtype)
        if input_ids is not None and self.embed_tokens is None:
            raise ValueError(
                "This backbone was built without token embeddings: pass `inputs_embeds`, not `input_ids`."
            )
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if self.config.bidirectional:
            use_cache, cache = False, None
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        has_attention = any(t != "linear_attention" for t in self.config.layer_types)
        if position_ids is None:
            position_ids = self._positions(inputs_embeds, attention_mask, cache if has_attention else None)
        masks = attention_mask
        if not isinstance(masks, dict):
            implementation = attention_implementation(self.config, kwargs.get("output_attentions"))
            masks = self._build_masks(inputs_embeds, attention_mask, cache, position_ids, implementation)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = layer(
                hidden_states,
                attention_mask=masks[layer.layer_type],
                position_embeddings=position_embeddings,
                position_ids=position_ids,  # GRU layers restart at packed-sequence starts, as Llama's layers get it
                cache=cache,
                **kwargs,
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache if use_cache else None)

    @staticmethod
    def _positions(inputs_embeds: torch.Tensor, attention_mask, cache: Cache | None) -> torch.LongTensor:
        """Positions count real tokens only, so a left-padded row gets the same positions as when run alone."""
        seq_len = inputs_embeds.shape[1]
        if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
            positions = attention_mask.long().cumsum(-1) - 1
            return positions.clamp(min=0)[:, -seq_len:]
        past = cache.get_seq_length() if cache is not None else 0
        return (torch.arange(seq_len, device=inputs_embeds.device) + past).unsqueeze(0)

    def _build_masks(self, inputs_embeds, attention_mask, cache, position_ids, implementation: str) -> dict:
        """One mask per layer type, each built for the attention function the layers run in this call."""
        config = config_for_masks(self.config, implementation)
        mask_kwargs = {
            "config": config,
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "cache": cache,
            "position_ids": position_ids,
        }
        masks = {"linear_attention": create_recurrent_attention_mask(**mask_kwargs)}
        if self.config.bidirectional:
            full = create_bidirectional_mask(config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask)
            return {**masks, "full_attention": full, "sliding_attention": full}
        layer_types = set(config.layer_types)
        if "full_attention" in layer_types:
            masks["full_attention"] = create_causal_mask(**mask_kwargs)
        if "sliding_attention" in layer_types:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
        return masks


class HybridGRUForCausalLM(HybridGRUPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: HybridGRUConfig):
        if config.bidirectional:
            raise ValueError(
                "HybridGRUForCausalLM needs a causal model, but the config has bidirectional=True; set "
                "bidirectional=False (bidirectional mode is for classification, tagging and CTC)."
            )
        super().__init__(config)
        self.model = HybridGRUModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            check_class_labels(labels, self.config.vocab_size)
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def pool_sequence(hidden_states: torch.Tensor, attention_mask, input_ids, config: HybridGRUConfig) -> torch.Tensor:
    """(B, T, D) -> (B, D): the last real token for a causal model, the mean over real tokens for a bidirectional one.

    "Real" comes from `attention_mask`, else from `pad_token_id` in `input_ids`, else every token is real. Works for
    left and right padding alike.
    """
    batch, seq_len = hidden_states.shape[:2]
    if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
        real = attention_mask[:, -seq_len:].bool()
    elif input_ids is not None and config.pad_token_id is not None:
        real = input_ids != config.pad_token_id
    else:
        real = torch.ones(batch, seq_len, dtype=torch.bool, device=hidden_states.device)
    if config.bidirectional:
        weights = real.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    # index of the last real token: the largest position holding a real token
    positions = torch.arange(seq_len, device=hidden_states.device)
    last = (positions * real).argmax(-1)
    return hidden_states[torch.arange(batch, device=hidden_states.device), last]


class HybridGRUForSequenceClassification(HybridGRUPreTrainedModel):
    def __init__(self, config: HybridGRUConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HybridGRUModel(config)  # built directly: remote code cannot call AutoModel without trust
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutputWithPast:
        kwargs.pop("use_cache", None)
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        pooled = pool_sequence(outputs.last_hidden_state, attention_mask, input_ids, self.config)
        logits = self.score(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.num_labels > 1:
                check_class_labels(labels, self.config.num_labels)
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config, **kwargs)
        return SequenceClassifierOutputWithPast(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class HybridGRUForTokenClassification(HybridGRUPreTrainedModel):
    def __init__(self, config: HybridGRUConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HybridGRUModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput:
        kwargs.pop("use_cache", None)
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        logits = self.score(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            check_class_labels(labels, self.config.num_labels)
            loss = self.loss_function(logits, labels, self.config, **kwargs)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class HybridGRUForQuestionAnswering(HybridGRUPreTrainedModel):
    def __init__(self, config: HybridGRUConfig):
        super().__init__(config)
        self.model = HybridGRUModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> QuestionAnsweringModelOutput:
        kwargs.pop("use_cache", None)
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions, **kwargs)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "HybridGRUPreTrainedModel",
    "HybridGRUModel",
    "HybridGRUForCausalLM",
    "HybridGRUForSequenceClassification",
    "HybridGRUForTokenClassification",
    "HybridGRUForQuestionAnswering",
]
