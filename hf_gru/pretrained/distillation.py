"""Knowledge distillation from a frozen teacher into a HybridGRU student, as a `transformers.Trainer`.

Stages (Mamba-in-the-Llama, LoLCATs and RADLADS distil in this order: first each new mixer alone, then end to end):
- `"layers"`: each converted layer is fed the teacher's input to that layer and trained to reproduce the teacher
  layer's output (MSE). Only those layers' mixers train. For students made by `hf_gru.convert_to_hybrid`.
- `"hidden"`: the student runs on its own; MSE between its layer outputs and the teacher's at mapped layers. For a
  teacher of another architecture with the same hidden size (e.g. a BERT encoder into a bidirectional HybridGRU).
- `"logits"`: KL(teacher || student) at a temperature (Hinton et al., 2015), optionally mixed with the label loss.
"""

import inspect
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, Trainer

STAGES = ("layers", "hidden", "logits")
TEACHER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def core_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft and/or DDP wrapper."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    return model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of the model's blocks (`model.layers`, `encoder.layer`, ...): one entry per hidden layer."""
    model = core_model(model)
    count = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"{type(model).__name__} has no ModuleList of its {count} layers; distil its logits instead.")


def _first(output):
    return output[0] if isinstance(output, tuple | list) else output


class DistillationTrainer(Trainer):
    """A `Trainer` whose loss is distillation from `teacher_model` (frozen, eval mode, no_grad, never saved).

    Args:
        teacher_model: any `PreTrainedModel` taking the same tokens (equal vocabulary for `"logits"`).
        stage: `"layers"`, `"hidden"` or `"logits"` (see the module docstring).
        layer_map: `{student_layer: teacher_layer}`. Default for `"layers"`: each GRU layer of the student to the
            same index; for `"hidden"`: student layer i to teacher layer ceil((i + 1) * Lt / Ls) - 1 (the last to the last).
        temperature, alpha: `"logits"` loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * the
            student's label loss (needs `labels`).
        teacher_dtype: cast the teacher once (e.g. `torch.bfloat16`); the losses are computed in float32.
        teacher_input_names: batch keys the teacher gets, when its forward names them.
    Everything else is passed to `Trainer`. Stages "layers" and "hidden" set `ddp_find_unused_parameters=False`
    unless it was set. Tokens counted: the positions the label loss counts when the batch has
    token labels (so Trainer's `num_items_in_batch` keeps gradient accumulation exact), else real tokens.
    In stage `"layers"`, a parameter trains only if it was trainable and lies in a mapped layer's mixer.
    """

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        teacher_model: PreTrainedModel | None = None,
        args=None,
        *,
        stage: str = "logits",
        layer_map: Mapping[int, int] | None = None,
        temperature: float = 2.0,
        alpha: float = 1.0,
        teacher_dtype: torch.dtype | None = None,
        teacher_input_names: tuple[str, ...] = TEACHER_INPUTS,
        **kwargs,
    ):
        if model is None or teacher_model is None:
            raise ValueError("DistillationTrainer needs both `model` (the student) and `teacher_model`.")
        if stage not in STAGES:
            raise ValueError(f"`stage` must be one of {STAGES}, got stage={stage!r}.")
        if not temperature > 0:
            raise ValueError(f"`temperature` must be positive, got temperature={temperature}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1], got alpha={alpha}.")
        self.stage, self.temperature, self.alpha = stage, float(temperature), float(alpha)
        teacher_model.requires_grad_(False).eval()
        if teacher_dtype is not None:
            teacher_model.to(teacher_dtype)
        self.teacher = teacher_model
        accepted = inspect.signature(teacher_model.forward).parameters
        self.teacher_input_names = tuple(name for name in teacher_input_names if name in accepted)
        self.layer_map = self._resolve_layer_map(model, teacher_model, layer_map)
        if stage == "layers":
            self._train_only_mapped_mixers(model)
        self._captured: dict | None = None
        self._hooks = self._add_hooks(model, teacher_model) if stage != "logits" else []
        if args is not None and stage != "logits" and args.ddp_find_unused_parameters is None:
            # DDP would look for unused parameters from the forward's output, which the hooked loss bypasses: with
            # teacher forcing, a GRU layer's output never reaches the logits, and DDP would count its gradient twice.
            args.ddp_find_unused_parameters = False
        super().__init__(model=model, args=args, **kwargs)
        self.teacher.to(self.args.device)
        self.model_accepts_loss_kwargs = True  # Trainer then counts num_items_in_batch, which compute_loss uses

    # --- set-up -------------------------------------------------------------------------------------------------

    def _resolve_layer_map(self, student, teacher, layer_map) -> dict[int, int]:
        student_config, teacher_config = core_model(student).config, teacher.config
        if self.stage == "logits":
            if student_config.vocab_size != teacher_config.vocab_size:
                raise ValueError(
                    f"Logit distillation needs one vocabulary: student vocab_size={student_config.vocab_size}, "
                    f"teacher ({type(teacher).__name__}) vocab_size={teacher_config.vocab_size}."
                )
            return {}
        if student_config.hidden_size != teacher_config.hidden_size:
            raise ValueError(
                f"Stage {self.stage!r} compares hidden states, so the widths must match: student hidden_size="
                f"{student_config.hidden_size}, teacher ({type(teacher).__name__}) hidden_size="
                f"{teacher_config.hidden_size}."
            )
        num_student, num_teacher = student_config.num_hidden_layers, teacher_config.num_hidden_layers
        if layer_map is None:
            if self.stage == "layers":
                layer_types = getattr(student_config, "layer_types", None) or []
                layer_map = {i: i for i, t in enumerate(layer_types) if t == "linear_attention" and i < num_teacher}
            else:
                layer_map = {i: -(-(i + 1) * num_teacher // num_student) - 1 for i in range(num_student)}  # ceil
        layer_map = {int(s): int(t) for s, t in dict(layer_map).items()}
        bad = {s: t for s, t in layer_map.items() if not (0 <= s < num_student and 0 <= t < num_teacher)}
        if bad or not layer_map:
            raise ValueError(
                f"`layer_map` {bad or layer_map} is invalid: it needs at least one pair with student layers in "
                f"[0, {num_student}) and teacher layers in [0, {num_teacher})."
            )
        return layer_map

    def _train_only_mapped_mixers(self, model: nn.Module) -> None:
        layers = decoder_layers(model)
        mixers = {id(p) for i in self.layer_map for p in getattr(layers[i], "mixer", layers[i]).parameters()}
        for parameter in model.parameters():
            if id(parameter) not in mixers:
                parameter.requires_grad_(False)
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"Stage 'layers' found no trainable parameter in the mixers of layers {self.layer_map}.")

    def _add_hooks(self, student: nn.Module, teacher: nn.Module) -> list:
        """Forward hooks that record layer inputs/outputs, and (stage "layers") feed the teacher's input to each mapped
        student layer. They stay registered so that gradient checkpointing's recomputation sees the same inputs;
        outside `compute_loss` they do nothing. `remove_hooks()` takes them off."""
        handles = []
        student_layers, teacher_layers = decoder_layers(student), decoder_layers(teacher)
        for s, t in self.layer_map.items():
            handles.append(teacher_layers[t].register_forward_pre_hook(self._record_input(t), with_kwargs=True))
            handles.append(teacher_layers[t].register_forward_hook(self._record_output("teacher", t)))
            if self.stage == "layers":
                handles.append(student_layers[s].register_forward_pre_hook(self._teacher_force(t), with_kwargs=True))
            handles.append(student_layers[s].register_forward_hook(self._record_output("student", s)))
        return handles

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks, self._captured = [], None

    def _record_input(self, index: int):
        def hook(module, args, kwargs):
            if self._captured is not None:
                self._captured["teacher_in"][index] = args[0] if args else kwargs["hidden_states"]

        return hook

    def _record_output(self, side: str, index: int):
        def hook(module, args, output):
            if self._captured is not None:
                self._captured[side][index] = _first(output)

        return hook

    def _teacher_force(self, teacher_index: int):
        def hook(module, args, kwargs):
            if self._captured is None:
                return None
            forced = self._captured["teacher_in"][teacher_index]
            reference = args[0] if args else kwargs["hidden_states"]
            forced = forced.to(reference.dtype)
            if args:
                return (forced, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": forced}

        return hook

    # --- loss ---------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        mask, counted_by_labels = self._token_mask(model, inputs)
        use_count = counted_by_labels and num_items_in_batch is not None
        self._captured = {"teacher_in": {}, "teacher": {}, "student": {}}
        teacher_inputs = {k: inputs[k] for k in self.teacher_input_names if k in inputs}
        with torch.no_grad():
            teacher_outputs = self.teacher(**teacher_inputs)
        student_inputs = dict(inputs)
        wants_label_loss = self.stage == "logits" and self.alpha < 1.0
        if not wants_label_loss:
            student_inputs.pop("labels", None)
        elif use_count:
            student_inputs["num_items_in_batch"] = num_items_in_batch
        outputs = model(**student_inputs)
        denominator = num_items_in_batch if use_count else mask.sum().clamp(min=1)
        if self.stage == "logits":
            loss = self._logit_loss(outputs.logits, teacher_outputs.logits, mask) / denominator
            if wants_label_loss:
                if outputs.loss is None:
                    raise ValueError("alpha < 1 mixes in the label loss, but the batch has no `labels`.")
                loss = self.alpha * loss + (1.0 - self.alpha) * outputs.loss
        else:
            loss = self._hidden_loss(mask, outputs, teacher_outputs) / denominator
        if use_count and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients; the count is global
        # A loss normalised by the accumulated batch's count needs no division by the accumulation steps.
        self.loss_is_scaled_for_ga = use_count
        if self.stage != "logits":
            # + 0 x output: every parameter before the output gets a (zero) gradient, as DDP without unused-parameter
            # search expects; exact, since the gradients it adds are zeros.
            loss = loss + 0.0 * outputs[0].float().sum()
        if self.stage == "layers" and torch.is_grad_enabled():  # gradient checkpointing recomputes in backward
            self._captured = {"teacher_in": self._captured["teacher_in"], "teacher": {}, "student": {}}
        else:
            self._captured = None
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:  # after backward: the hooks go quiet, so the model behaves normally outside the Trainer
            self._captured = None

    def _token_mask(self, model, inputs) -> tuple[torch.Tensor, bool]:
        """(B, T) float weights of the positions that count, and whether they are the label loss's positions."""
        reference = inputs.get("input_ids", inputs.get("inputs_embeds"))
        batch, seq_len = reference.shape[:2]
        labels = inputs.get("labels")
        if isinstance(labels, torch.Tensor) and labels.shape[:2] == (batch, seq_len):
            if self._loss_shifts_labels:  # position t predicts label t + 1
                counted = F.pad(labels[:, 1:] != -100, (0, 1), value=False)
            else:
                counted = labels != -100
            return counted.float(), True
        attention_mask = inputs.get("attention_mask")
        if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
            return attention_mask[:, -seq_len:].float(), False
        return torch.ones(batch, seq_len, device=reference.device), False

    def _logit_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor):
        """Sum over counted positions of T^2 * KL(softmax(teacher / T) || softmax(student / T))."""
        t = self.temperature
        teacher_log_probs = F.log_softmax(teacher_logits.float() / t, dim=-1)
        student_log_probs = F.log_softmax(student_logits.float() / t, dim=-1)
        kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="none").sum(-1)
        return (kl * mask).sum() * t * t

    def _hidden_loss(self, mask: torch.Tensor, student_outputs=None, teacher_outputs=None) -> torch.Tensor:
        """Sum over counted positions of the per-token MSE between mapped layer outputs, averaged over the pairs.
        Subclasses may also read the two models' outputs (`hf_gru.pretrained.encoder_distillation` matches final states)."""
        captured = self._captured
        total = 0.0
        for s, t in self.layer_map.items():
            student, teacher = captured["student"][s], captured["teacher"][t]
            error = (student.float() - teacher.float()).pow(2).mean(-1)  # (B, T)
            total = total + (error * mask).sum()
        return total / len(self.layer_map)


__all__ = ["DistillationTrainer", "STAGES"]
