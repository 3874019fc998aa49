"""Turn a pretrained Llama-family causal LM into a HybridGRU: keep its embeddings, norms, MLPs, head and some attention
layers bit for bit, replace the other attention layers by GRU mixers initialised from the attention they replace.

The recipe follows the conversion-then-distillation line of work: Mamba-in-the-Llama (Wang et al., 2024), LoLCATs
(Zhang et al., 2024), RADLADS (Goldstein et al., 2025) and Liger (Lan et al., 2025) keep the teacher's MLPs and reuse
its attention projections in the new mixer, then distil (`hf_gru.DistillationTrainer`). The mapping used here is in
`init_gru_from_attention`.
"""

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel

from ..models.hybrid_gru.configuration_hybrid_gru import (
    PATTERN_TO_LAYER_TYPE,
    HybridGRUConfig,
    layer_types_from_pattern,
)
from ..models.hybrid_gru.modeling_hybrid_gru import HybridGRUForCausalLM, HybridGRUMixer
from ..training.hub import write_model_card

# Teacher classes whose decoder block is HybridGRU's attention block: pre-norm RMSNorm, RoPE, grouped-query attention,
# SwiGLU MLP, RMSNorm before the head. Qwen2 adds q/k/v biases (its o_proj has none), Qwen3 per-head q/k RMSNorm.
SUPPORTED_CLASSES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")

# What differs for architectures people try first, so the error says more than "unsupported".
KNOWN_DIFFERENCES = {
    "gpt2": "LayerNorm, learned absolute positions, a GELU MLP and fused c_attn projections",
    "bert": "an encoder with post-LayerNorm blocks and absolute positions; use DistillationTrainer(stage='hidden')",
    "gemma": "(1 + weight) RMSNorm, scaled embeddings and a GeGLU MLP",
    "gemma2": "(1 + weight) RMSNorm, extra post-norms, logit soft-capping and a GeGLU MLP",
    "phi": "LayerNorm, partial rotary embeddings and a parallel attention/MLP block",
    "mixtral": "a mixture-of-experts MLP (HybridGRU has one dense SwiGLU MLP per layer)",
    "qwen2_moe": "a mixture-of-experts MLP (HybridGRU has one dense SwiGLU MLP per layer)",
    "qwen3_moe": "a mixture-of-experts MLP and q/k RMSNorm",
}

# Fields the teacher fixes: overriding one would break the bit-exact copy of the kept weights.
TEACHER_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "rope_parameters", "tie_word_embeddings",
    "attention_bias", "qk_norm", "sliding_window", "layer_types", "bidirectional",
)  # fmt: skip


@dataclass
class ConversionInfo:
    """What `convert_to_hybrid` did; kept on the model as `model.conversion` and written into the model card."""

    teacher: str
    teacher_class: str
    block_pattern: str
    attention_layers: list[int]
    gru_layers: list[int]
    gru_variant: str
    gru_hidden_size: int
    recipe: str = field(default="")
    teacher_license: str | None = None  # e.g. "apache-2.0"; also the card's license when set
    teacher_quantization: str | None = None  # e.g. "Q4_1" for a teacher loaded from a GGUF file


def convert_to_hybrid(
    model: PreTrainedModel | str,
    block_pattern: str = "GGA",
    gru_variant: str = "gru",
    attention_layers: list[int] | None = None,
    **config_overrides,
) -> HybridGRUForCausalLM:
    """A `HybridGRUForCausalLM` made from a Llama/Mistral/Qwen2/Qwen3 causal LM (a loaded model, a folder or a Hub id).

    `block_pattern` (tiled over the layers) or an explicit `attention_layers` list says which layers keep attention;
    the rest become GRU layers initialised from the attention they replace (`init_gru_from_attention`). Kept weights
    are copied bit for bit, so `block_pattern="A"` reproduces the teacher. A sliding-window teacher layer stays a
    sliding-window (`L`) layer. `config_overrides` sets other HybridGRU fields (`gru_hidden_size`: the number of
    query heads or of key/value heads times `head_dim`; `gru_conv_kernel`, ...), never the teacher's shape.
    Raises ValueError for any architecture whose block differs, naming it and the difference.
    """
    if isinstance(model, str | Path):
        model = AutoModelForCausalLM.from_pretrained(str(model))
    check_teacher(model)
    config = hybrid_config_from(model, block_pattern, gru_variant, attention_layers, config_overrides)
    student = HybridGRUForCausalLM._from_config(
        config, dtype=model.dtype, attn_implementation=model.config._attn_implementation
    ).to(model.device)
    copy_weights(model, student)
    student.generation_config = copy.deepcopy(model.generation_config)
    gru_layers = [i for i, t in enumerate(config.layer_types) if t == "linear_attention"]
    student.conversion = ConversionInfo(
        teacher=str(model.config.name_or_path or type(model).__name__),
        teacher_class=type(model).__name__,
        block_pattern=config.block_pattern,
        attention_layers=[i for i in range(config.num_hidden_layers) if i not in gru_layers],
        gru_layers=gru_layers,
        gru_variant=gru_variant,
        gru_hidden_size=config.gru_hidden_size,
        recipe=RECIPE,
    )
    return student


def llama_config_from(config: HybridGRUConfig) -> LlamaConfig:
    """A LlamaConfig of the same sizes with attention in every layer: a teacher to convert, or a baseline."""
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters=copy.deepcopy(dict(config.rope_parameters)),
        rms_norm_eps=config.rms_norm_eps,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        attention_bias=config.attention_bias,
        attention_dropout=config.attention_dropout,
    )


def check_teacher(model: PreTrainedModel) -> None:
    """ValueError unless `model` is a causal LM whose every block HybridGRU can hold exactly."""
    name, config = type(model).__name__, model.config
    model_type = getattr(config, "model_type", "?")
    if name not in SUPPORTED_CLASSES:
        why = KNOWN_DIFFERENCES.get(model_type, "a decoder block other than Llama's (or not a causal LM head)")
        raise ValueError(
            f"convert_to_hybrid cannot convert {name} (model_type {model_type!r}): it has {why}. Supported: "
            f"{', '.join(SUPPORTED_CLASSES)} (pre-norm RMSNorm, RoPE, grouped-query attention, SwiGLU MLP)."
        )
    problems = []
    if getattr(config, "mlp_bias", False):
        problems.append("mlp_bias=True (HybridGRU's MLP has no biases)")
    if config.hidden_act != "silu":
        problems.append(f"hidden_act={config.hidden_act!r} (HybridGRU's MLP is SwiGLU with silu)")
    rope = config.rope_parameters or {}
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        problems.append(f"partial_rotary_factor={rope['partial_rotary_factor']} (HybridGRU rotates the whole head)")
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        problems.append(f"pretraining_tp={config.pretraining_tp}")
    if problems:
        raise ValueError(f"convert_to_hybrid cannot convert this {name} exactly: {'; '.join(problems)}.")


def teacher_layer_types(model: PreTrainedModel) -> list[str]:
    """Per layer "full_attention" or "sliding_attention", as the teacher's own forward applies them."""
    config = model.config
    if isinstance(getattr(config, "layer_types", None), list):  # Qwen2: sliding layers by layer_types
        return list(config.layer_types)
    if getattr(config, "sliding_window", None) is not None:  # Mistral: one window on every layer
        return ["sliding_attention"] * config.num_hidden_layers
    return ["full_attention"] * config.num_hidden_layers


def hybrid_config_from(
    model: PreTrainedModel,
    block_pattern: str,
    gru_variant: str,
    attention_layers: list[int] | None,
    overrides: dict,
) -> HybridGRUConfig:
    """The HybridGRUConfig holding the teacher's shape, RoPE, special tokens and the requested mixer per layer."""
    teacher, name = model.config, type(model).__name__
    fixed = sorted(set(overrides) & set(TEACHER_FIELDS))
    if fixed:
        raise ValueError(
            f"convert_to_hybrid takes {fixed} from the teacher ({name}); they cannot be overridden ({overrides})."
        )
    num_layers = teacher.num_hidden_layers
    attention_types = teacher_layer_types(model)
    if attention_layers is not None:
        bad = [i for i in attention_layers if not isinstance(i, int) or not 0 <= i < num_layers]
        if bad:
            raise ValueError(f"attention_layers contains {bad}; expected layer indices in [0, {num_layers}).")
        keep = set(attention_layers)
    else:
        keep = {
            i for i, t in enumerate(layer_types_from_pattern(block_pattern, num_layers)) if t != "linear_attention"
        }
        if "L" in block_pattern and not set(attention_types) & {"sliding_attention"}:
            raise ValueError(
                f"block_pattern {block_pattern!r} asks for sliding-window layers ('L'), but {name} has none; use 'A' "
                "for the attention layers to keep (they keep the teacher's own attention type)."
            )
    layer_types = [attention_types[i] if i in keep else PATTERN_TO_LAYER_TYPE["G"] for i in range(num_layers)]
    window = getattr(teacher, "sliding_window", None) if "sliding_attention" in layer_types else None
    head_dim = getattr(teacher, "head_dim", None) or teacher.hidden_size // teacher.num_attention_heads
    values = dict(
        vocab_size=teacher.vocab_size,
        hidden_size=teacher.hidden_size,
        intermediate_size=teacher.intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=teacher.num_attention_heads,
        num_key_value_heads=teacher.num_key_value_heads or teacher.num_attention_heads,
        head_dim=head_dim,
        hidden_act=teacher.hidden_act,
        max_position_embeddings=teacher.max_position_embeddings,
        rope_parameters=copy.deepcopy(dict(teacher.rope_parameters)),
        rms_norm_eps=teacher.rms_norm_eps,
        initializer_range=getattr(teacher, "initializer_range", 0.02),
        tie_word_embeddings=bool(teacher.tie_word_embeddings),
        pad_token_id=teacher.pad_token_id,
        bos_token_id=teacher.bos_token_id,
        eos_token_id=teacher.eos_token_id,
        attention_bias=bool(getattr(teacher, "attention_bias", False)) or name == "Qwen2ForCausalLM",
        attention_dropout=float(getattr(teacher, "attention_dropout", 0.0) or 0.0),
        sliding_window=window,
        layer_types=layer_types,
        qk_norm=name == "Qwen3ForCausalLM",
        gru_variant=gru_variant,
        gru_hidden_size=teacher.num_attention_heads * head_dim,
    )
    values.update(overrides)
    try:
        config = HybridGRUConfig(**values)
    except ValueError as error:
        raise ValueError(f"convert_to_hybrid cannot express {name}'s shape as a HybridGRUConfig: {error}") from error
    allowed = {teacher.num_attention_heads * head_dim, config.num_key_value_heads * head_dim}
    if "linear_attention" in layer_types and config.gru_hidden_size not in allowed:
        raise ValueError(
            f"gru_hidden_size={config.gru_hidden_size} cannot be initialised from the attention it replaces; use "
            f"num_attention_heads * head_dim = {teacher.num_attention_heads * head_dim} or num_key_value_heads * "
            f"head_dim = {config.num_key_value_heads * head_dim}."
        )
    return config


@torch.no_grad()
def copy_weights(teacher: PreTrainedModel, student: HybridGRUForCausalLM) -> None:
    """Copies every kept tensor bit for bit and initialises each GRU layer from the teacher's attention there."""
    source, target = teacher.model, student.model
    target.embed_tokens.weight.copy_(source.embed_tokens.weight)
    target.norm.weight.copy_(source.norm.weight)
    if not student.config.tie_word_embeddings:
        student.lm_head.weight.copy_(teacher.lm_head.weight)
    for old, new in zip(source.layers, target.layers, strict=True):
        new.input_layernorm.weight.copy_(old.input_layernorm.weight)
        new.post_attention_layernorm.weight.copy_(old.post_attention_layernorm.weight)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            getattr(new.mlp, proj).weight.copy_(getattr(old.mlp, proj).weight)
        if isinstance(new.mixer, HybridGRUMixer):
            init_gru_from_attention(new.mixer, old.self_attn, old.input_layernorm.weight, student.config)
        else:
            copy_attention(old.self_attn, new.mixer)


def copy_attention(old: torch.nn.Module, new: torch.nn.Module) -> None:
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        source, target = getattr(old, proj), getattr(new, proj)
        target.weight.copy_(source.weight)
        if target.bias is not None:  # Qwen2 has no o_proj bias: a zero bias adds exactly nothing
            target.bias.copy_(source.bias) if source.bias is not None else target.bias.zero_()
    for norm in ("q_norm", "k_norm"):  # Qwen3
        if hasattr(old, norm):
            getattr(new, norm).weight.copy_(getattr(old, norm).weight)


def decay_timescales(num_heads: int) -> torch.Tensor:
    """Per-head fraction of the state kept each step, 1 - 2^-s with s spread over [1, 8]: memories of about 2 to 256
    tokens, from previous-token-like heads to broad ones (RetNet's per-head decays, Mamba's spread of Delta)."""
    return 1.0 - 2.0 ** -torch.linspace(1.0, 8.0, num_heads)


@torch.no_grad()
def init_gru_from_attention(
    mixer: HybridGRUMixer, attention: torch.nn.Module, norm_weight: torch.Tensor, config: HybridGRUConfig
) -> None:
    """Initialises a GRU mixer so that it starts as attention with exponential recency weights.

    - Candidate path <- `v_proj` (rows repeated per query head when the state has one slot per query head, as
      grouped-query attention repeats each key/value head), its bias <- v's bias. `out_proj` <- `o_proj` verbatim
      (a state per query head) or summed over each head group (a state per key/value head).
    - The update gate has zero input weights and a per-head bias: each head's state is then an exponential moving
      average of its values, a convex combination like attention's, over a per-head timescale (`decay_timescales`).
      Mamba-in-the-Llama also starts its decays fresh; the queries and keys have no place in an elementwise state
      (in linear attention they form the d_k x d_v state, where Mamba-in-the-Llama and LoLCATs put them), so they are
      not used. Distillation then learns what the keys selected.
    - Classic `gru`: the candidate passes through tanh, so each value channel is scaled by s = max(1, 2 * estimated
      std) in, and back by s in `out_proj`, keeping tanh near its linear range; the hidden projection (h_{t-1} into
      the gates) starts at zero and the reset gate at 1/2. `mingru` has a linear candidate and no scaling.
    - The short conv stays the identity (HybridGRU's default), so the recurrence first sees the block's input.
    """
    size, head_dim = mixer.state_size, config.head_dim
    groups = config.num_attention_heads // config.num_key_value_heads
    value_weight, value_bias = attention.v_proj.weight, attention.v_proj.bias
    out_weight = attention.o_proj.weight  # (D, heads * head_dim)
    if size == config.num_attention_heads * head_dim:  # one state slot per query head
        value_weight = value_weight.view(config.num_key_value_heads, head_dim, -1).repeat_interleave(groups, 0)
        value_weight = value_weight.reshape(size, -1)
        if value_bias is not None:
            value_bias = value_bias.view(config.num_key_value_heads, head_dim).repeat_interleave(groups, 0).flatten()
    else:  # one slot per key/value head: the query heads of a group read the same value average
        out_weight = out_weight.view(out_weight.shape[0], config.num_key_value_heads, groups, head_dim).sum(2)
        out_weight = out_weight.reshape(out_weight.shape[0], size)
    if value_bias is None:
        value_bias = torch.zeros(size, dtype=value_weight.dtype, device=value_weight.device)
    keep = decay_timescales(size // head_dim).repeat_interleave(head_dim).to(value_weight.device)
    weight = torch.zeros_like(mixer.input_proj.weight)
    bias = torch.zeros_like(mixer.input_proj.bias)
    if mixer.variant == "gru":  # rows: reset | update | candidate; update = fraction kept
        # x after RMSNorm has unit RMS times the norm weight: a value channel's std is about ||W_c * norm_weight||.
        scale = (2 * (value_weight * norm_weight).norm(dim=1)).clamp(min=1.0)
        bias[size : 2 * size] = torch.logit(keep)
        weight[2 * size :] = value_weight / scale[:, None]
        bias[2 * size :] = value_bias / scale
        out_weight = out_weight * scale
        mixer.hidden_proj.weight.zero_()
        mixer.hidden_proj.bias.zero_()
    else:  # rows: update | candidate; update = fraction written
        bias[:size] = torch.logit(1.0 - keep)
        weight[size:] = value_weight
        bias[size:] = value_bias
    mixer.input_proj.weight.copy_(weight)
    mixer.input_proj.bias.copy_(bias)
    mixer.out_proj.weight.copy_(out_weight)
    identity = torch.zeros_like(mixer.conv.weight)
    identity[..., -1] = 1.0
    mixer.conv.weight.copy_(identity)
    mixer.conv.bias.zero_()


RECIPE = (
    "Embeddings, final norm, LM head, every RMSNorm and MLP, and the attention layers kept by the pattern are the "
    "teacher's, copied bit for bit. Each other attention layer became a GRU mixer initialised from it: candidate path "
    "from v_proj, output projection from o_proj, update gate as a per-head exponential moving average (timescales of "
    "about 2 to 256 tokens), short conv as the identity (ideas from Mamba-in-the-Llama, LoLCATs, RADLADS, Liger). "
    "Then distilled with hf_gru.DistillationTrainer: layer-wise hidden-state MSE against the frozen teacher (GRU "
    "layers only), then KL(teacher || student) on the logits."
)


def write_conversion_card(
    folder: str | Path,
    model: HybridGRUForCausalLM,
    *,
    metrics: dict | None = None,
    command: str = "",
    dataset: str | None = None,
    plot: str | None = None,
) -> Path:
    """The model card (README.md) of a converted model saved in `folder`: teacher, recipe, layer plan, metrics."""
    info: ConversionInfo | None = getattr(model, "conversion", None)
    if info is None:
        raise ValueError("This model has no `conversion` record; it was not made by hf_gru.convert_to_hybrid.")
    summary = (
        f"A HybridGRU causal language model converted from the transformer `{info.teacher}` ({info.teacher_class}) "
        f"with `hf_gru.convert_to_hybrid`. Layers: `{info.block_pattern}` (G = GRU, A = attention, L = sliding-window "
        f"attention); attention layers {info.attention_layers}, GRU layers {info.gru_layers} "
        f"({info.gru_variant}, state width {info.gru_hidden_size}).\n\n{info.recipe}"
    )
    if info.teacher_license or info.teacher_quantization:
        license_text = f"license {info.teacher_license}" if info.teacher_license else "license not stated"
        quantized = (
            f"; its weights went through {info.teacher_quantization} quantization (dequantized to float for "
            "conversion), so the kept weights are the quantized ones"
            if info.teacher_quantization
            else ""
        )
        summary += f"\n\nTeacher: {info.teacher}, {license_text}{quantized}."
    usage = f"""
from transformers import pipeline

# trust_remote_code: the HybridGRU modeling code ships in this folder (not needed after `import hf_gru`)
generator = pipeline("text-generation", model="{folder}", trust_remote_code=True)
print(generator("Hello", max_new_tokens=40)[0]["generated_text"])
"""
    return write_model_card(
        folder,
        title=f"HybridGRU from {info.teacher}",
        summary=summary,
        metrics=metrics or {},
        command=command or "hf_gru.convert_to_hybrid(...)",
        pipeline_tag="text-generation",
        usage=usage,
        dataset=dataset,
        hyperparameters={"conversion": {k: v for k, v in asdict(info).items() if k != "recipe"}},
        plot=plot,
        license=(info.teacher_license or "apache-2.0").lower(),
    )


def kv_cache_bytes(config, seq_len: int, batch: int = 1, bytes_per_value: int = 2) -> int:
    """Bytes of key/value cache at `seq_len` tokens (attention layers only; a window caps sliding layers)."""
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_key_value_heads * head_dim * bytes_per_value * batch
    total = 0
    for layer_type in layer_types:
        if layer_type == "full_attention":
            total += per_token * seq_len
        elif layer_type == "sliding_attention":
            total += per_token * min(seq_len, config.sliding_window)
    return total


def gru_state_bytes(config, batch: int = 1, bytes_per_value: int = 2) -> int:
    """Bytes of the constant-size GRU state (recurrent state + short-conv inputs), independent of context length."""
    count = sum(t == "linear_attention" for t in config.layer_types)
    per_layer = config.gru_hidden_size + config.hidden_size * config.gru_conv_kernel
    return count * per_layer * batch * bytes_per_value


__all__ = [
    "convert_to_hybrid",
    "llama_config_from",
    "write_conversion_card",
    "ConversionInfo",
    "kv_cache_bytes",
    "gru_state_bytes",
]
