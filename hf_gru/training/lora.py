"""LoRA target modules of HybridGRU for `peft`, GRU mixers included.

Module names inside each decoder layer (`model.layers.<i>.`):
- GRU mixer (`mixer.` on `G` layers): `input_proj` (gate pre-activations from x_t), `hidden_proj` (gates from
  h_{t-1}; classic `gru` variant only), `out_proj` (state -> hidden); bidirectional models add `input_proj_reverse`
  and `hidden_proj_reverse`. The short depthwise `conv` is a Conv1d; LoRA on it is rarely worth it.
- Attention (`mixer.` on `A`/`L` layers): `q_proj`, `k_proj`, `v_proj`, `o_proj`.
- MLP (`mlp.` on every layer): `gate_proj`, `up_proj`, `down_proj`.
`peft` matches a plain name against the end of each module path, so `"input_proj"` selects every GRU layer's input
projection and `"q_proj"` every attention layer's query projection.
"""

from transformers import PreTrainedModel

GRU_TARGETS = ("input_proj", "hidden_proj", "out_proj")
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS = GRU_TARGETS + ATTENTION_TARGETS


def lora_targets(model: PreTrainedModel, names: tuple[str, ...] | list[str] = DEFAULT_TARGETS) -> list[str]:
    """The names in `names` that match at least one `nn.Linear` of `model` (raises ValueError for unknown names).

    `hidden_proj` exists only with `gru_variant="gru"`, so asking for it on a minGRU model is not an error when
    another GRU name matches; a name that matches nothing at all is.
    """
    import torch

    linear_names = {
        path.rsplit(".", 1)[-1] for path, module in model.named_modules() if isinstance(module, torch.nn.Linear)
    }
    unknown = [name for name in names if name not in linear_names and name not in GRU_TARGETS]
    found = [name for name in names if name in linear_names]
    if unknown or not found:
        raise ValueError(
            f"LoRA target module(s) {unknown or list(names)} match no linear layer of this model; available: "
            f"{sorted(linear_names)}."
        )
    return found


__all__ = ["GRU_TARGETS", "ATTENTION_TARGETS", "MLP_TARGETS", "DEFAULT_TARGETS", "lora_targets"]
