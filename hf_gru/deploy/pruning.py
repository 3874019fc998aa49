"""Pruning of HybridGRU models: unstructured magnitude pruning (sparser) and structured pruning (smaller).

- `magnitude_prune(model, sparsity)`: zeroes the smallest-magnitude weights of every `nn.Linear` in the decoder
  layers, the same fraction in each matrix, in place (no re-parametrisation: the zeros are permanent). It returns
  the keep-masks, which `KeepPrunedCallback` re-applies after every optimizer step of a recovery fine-tune. The
  stored dense size does not change; only the number of non-zero weights does.
- `prune_structured(model, gru_hidden_size=..., intermediate_size=...)`: removes whole GRU state units and whole MLP
  channels by an importance score and returns a new, smaller model of the same class whose config carries the new
  sizes, so it saves and loads like any other. The sizes are per-model config fields, so every layer keeps the same
  number of units (each layer picks its own units by its own scores).
- `recovery_finetune(...)`: a short fine-tune through `Trainer` after either kind of pruning.

Importance of a unit = norm of the weights that write it x norm of the weights that read it (Molchanov et al.,
2017 and the LLM-Pruner line of work use gradients; plain weight norms need no data). A unit with either norm zero
contributes exactly nothing to the output, so removing it leaves the model's function unchanged (tested).
"""

import copy

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments, default_data_collator

from ..models.hybrid_gru.modeling_hybrid_gru import HybridGRUDecoderLayer, HybridGRUMixer, HybridGRUMLP


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every `nn.Linear` inside a decoder layer (GRU, attention and MLP projections), by name. The embedding and a
    tied LM head are left out: they are one matrix shared by input and output."""
    found = {}
    for layer_name, layer in model.named_modules():
        if isinstance(layer, HybridGRUDecoderLayer):
            for name, module in layer.named_modules():
                if isinstance(module, nn.Linear):
                    found[f"{layer_name}.{name}"] = module
    if not found:
        raise ValueError(f"{type(model).__name__} has no HybridGRU decoder layer to prune.")
    return found


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Zeroes the `sparsity` fraction of smallest-|w| weights of each prunable linear, in place.

    Returns {module name: boolean keep-mask}, for `apply_masks` / `KeepPrunedCallback` during fine-tuning.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")
    masks = {}
    for name, module in prunable_linears(model).items():
        weight = module.weight
        count = round(sparsity * weight.numel())
        mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
        mask[weight.abs().flatten().argsort()[:count]] = False
        masks[name] = mask.view_as(weight)
        weight.mul_(masks[name])
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zeroes again the weights that `magnitude_prune` removed (after an optimizer step moved them)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        modules[name].weight.mul_(mask)


def linear_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all prunable linears."""
    weights = [module.weight for module in prunable_linears(model).values()]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


class KeepPrunedCallback(TrainerCallback):
    """Keeps magnitude-pruned weights at zero through training: re-applies the masks after every optimizer step."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks

    def on_step_end(self, args, state, control, model=None, **kwargs):
        apply_masks(model, self.masks)


def _norms(weight: torch.Tensor, dim: int) -> torch.Tensor:
    return weight.float().pow(2).sum(dim)


def gru_unit_importance(mixer: HybridGRUMixer) -> torch.Tensor:
    """(directions, H) scores: |weights writing unit j| x |weights reading it| per direction."""
    size, scores = mixer.state_size, []
    for direction, suffix in enumerate(("", "_reverse")[: 2 if mixer.bidirectional else 1]):
        input_proj, hidden_proj = getattr(mixer, f"input_proj{suffix}"), getattr(mixer, f"hidden_proj{suffix}", None)
        incoming = _norms(input_proj.weight, 1) + input_proj.bias.float().pow(2)  # (gates * H,)
        outgoing = _norms(mixer.out_proj.weight[:, direction * size : (direction + 1) * size], 0)  # (H,)
        if hidden_proj is not None:  # the classic cell: h_{t-1} feeds every unit's gates
            incoming = incoming + _norms(hidden_proj.weight, 1) + hidden_proj.bias.float().pow(2)
            outgoing = outgoing + _norms(hidden_proj.weight, 0)
        scores.append((incoming.view(-1, size).sum(0) * outgoing).sqrt())
    return torch.stack(scores)


def mlp_channel_importance(mlp: HybridGRUMLP) -> torch.Tensor:
    """(I,) scores: |gate row| x |up row| x |down column|; zero when any of them is zero (the channel is dead)."""
    return (_norms(mlp.gate_proj.weight, 1) * _norms(mlp.up_proj.weight, 1) * _norms(mlp.down_proj.weight, 0)).sqrt()


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` highest scores, in their original order (so surviving units keep their order)."""
    return scores.topk(keep).indices.sort().values


def _mixer_slices(mixer: HybridGRUMixer, keep: int) -> dict[str, torch.Tensor]:
    """The mixer's weights restricted to its `keep` most important units per direction."""
    size, sliced, out_columns = mixer.state_size, {}, []
    for direction, units in enumerate(_top(s, keep) for s in gru_unit_importance(mixer)):
        suffix = "_reverse" if direction else ""
        num_gates = getattr(mixer, f"input_proj{suffix}").out_features // size
        rows = torch.cat([gate * size + units for gate in range(num_gates)])  # gate-major layout, as the recurrence
        for name in (f"input_proj{suffix}", f"hidden_proj{suffix}"):
            proj = getattr(mixer, name, None)
            if proj is None:
                continue
            weight = proj.weight[rows]
            sliced[f"{name}.weight"] = weight[:, units] if name.startswith("hidden") else weight
            sliced[f"{name}.bias"] = proj.bias[rows]
        out_columns.append(direction * size + units)
    sliced["out_proj.weight"] = mixer.out_proj.weight[:, torch.cat(out_columns)]
    return sliced


def _mlp_slices(mlp: HybridGRUMLP, keep: int) -> dict[str, torch.Tensor]:
    channels = _top(mlp_channel_importance(mlp), keep)
    return {
        "gate_proj.weight": mlp.gate_proj.weight[channels],
        "up_proj.weight": mlp.up_proj.weight[channels],
        "down_proj.weight": mlp.down_proj.weight[:, channels],
    }


def _check_size(name: str, value: int | None, current: int) -> int:
    if value is None:
        return current
    if not isinstance(value, int) or not 0 < value <= current:
        raise ValueError(f"{name} must be an integer in [1, {current}] (the current size), got {name}={value!r}.")
    return value


@torch.no_grad()
def prune_structured(
    model: PreTrainedModel, gru_hidden_size: int | None = None, intermediate_size: int | None = None
) -> PreTrainedModel:
    """A new model of the same class with `gru_hidden_size` GRU state units and `intermediate_size` MLP channels per
    layer, keeping each layer's most important ones (see the module docstring); `model` is left unchanged.

    The new config carries the new sizes, so the result saves and loads with `save_pretrained`/`from_pretrained`.
    """
    config = model.config
    gru_keep = _check_size("gru_hidden_size", gru_hidden_size, config.gru_hidden_size)
    mlp_keep = _check_size("intermediate_size", intermediate_size, config.intermediate_size)
    state = model.state_dict()
    for prefix, module in model.named_modules():
        if isinstance(module, HybridGRUMixer) and gru_keep < config.gru_hidden_size:
            state.update({f"{prefix}.{key}": value for key, value in _mixer_slices(module, gru_keep).items()})
        elif isinstance(module, HybridGRUMLP) and mlp_keep < config.intermediate_size:
            state.update({f"{prefix}.{key}": value for key, value in _mlp_slices(module, mlp_keep).items()})
    new_config = copy.deepcopy(config)
    new_config.gru_hidden_size, new_config.intermediate_size = gru_keep, mlp_keep
    parameter = next(model.parameters())
    pruned = type(model)(new_config).to(device=parameter.device, dtype=parameter.dtype)
    pruned.load_state_dict({key: value.clone() for key, value in state.items()})
    if getattr(model, "generation_config", None) is not None:
        pruned.generation_config = copy.deepcopy(model.generation_config)
    return pruned.train(model.training)


def recovery_finetune(
    model: PreTrainedModel,
    args: TrainingArguments,
    train_dataset,
    eval_dataset=None,
    masks: dict[str, torch.Tensor] | None = None,
    **trainer_kwargs,
) -> Trainer:
    """A short fine-tune of a pruned model with `Trainer` (datasets of fixed-length `input_ids`/`labels` blocks, as
    `hf_gru.tasks.text.group_texts` makes); with `masks` from `magnitude_prune`, pruned weights stay zero. Returns the
    trainer after `train()`."""
    callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
    if masks is not None:
        callbacks.append(KeepPrunedCallback(masks))
    trainer_kwargs.setdefault("data_collator", default_data_collator)
    trainer = Trainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, callbacks=callbacks,
        **trainer_kwargs,
    )  # fmt: skip
    trainer.train()
    if masks is not None:
        apply_masks(model, masks)
    return trainer


__all__ = [
    "prunable_linears",
    "magnitude_prune",
    "apply_masks",
    "linear_sparsity",
    "KeepPrunedCallback",
    "gru_unit_importance",
    "mlp_channel_importance",
    "prune_structured",
    "recovery_finetune",
]
