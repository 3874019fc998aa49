"""hf_gru.DistillationTrainer: what trains in each stage, losses going down, exact accumulation, resume, LoRA."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, TrainingArguments

from hf_gru import DistillationTrainer, HybridGRUConfig, HybridGRUForCausalLM, HybridGRUModel, convert_to_hybrid
from tests.helpers import assert_close
from tests.models.hybrid_gru.test_training_hybrid_gru import pad_collate, toy_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def teacher_and_student(variant: str = "gru") -> tuple[LlamaForCausalLM, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=0,
        )  # fmt: skip
    )
    return teacher, convert_to_hybrid(teacher, block_pattern="GGA", gru_variant=variant)


def arguments(tmp_path, max_steps: int = 6, batch: int = 4, accumulation: int = 1, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
        max_steps=max_steps, learning_rate=1e-2, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
        report_to=[], seed=0, use_cpu=True, disable_tqdm=True, dataloader_pin_memory=False,
    )  # fmt: skip
    values.update(overrides)
    return TrainingArguments(**values)


def distil(tmp_path, student, teacher, stage: str, **kwargs) -> DistillationTrainer:
    trainer_kwargs = {k: kwargs.pop(k) for k in ("temperature", "alpha", "layer_map", "teacher_dtype") if k in kwargs}
    resume = kwargs.pop("resume", None)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=arguments(tmp_path, **kwargs), stage=stage,
        train_dataset=toy_dataset(), data_collator=pad_collate, **trainer_kwargs,
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def logged_losses(trainer: DistillationTrainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_layer_stage_trains_only_the_gru_mixers_and_lowers_the_loss(tmp_path):
    teacher, student = teacher_and_student()
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    teacher_before = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    trainer = distil(tmp_path, student, teacher, "layers", max_steps=12)
    losses = logged_losses(trainer)
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses
    changed = {name for name, p in student.named_parameters() if not torch.equal(p, before[name])}
    gru = {name for name in before if name.startswith(("model.layers.0.mixer.", "model.layers.1.mixer."))}
    assert changed == gru
    assert all(torch.equal(p, teacher_before[n]) for n, p in teacher.named_parameters())
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_hooks_are_quiet_outside_the_trainer(tmp_path):
    """After training, the teacher-forcing hooks must not touch an ordinary forward of the student."""
    teacher, student = teacher_and_student()
    trainer = distil(tmp_path, student, teacher, "layers", max_steps=2)
    ids = torch.randint(3, 99, (2, 8))
    with torch.no_grad():
        hooked = student(ids).logits
        trainer.remove_hooks()
        assert torch.equal(student(ids).logits, hooked)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_logit_stage_lowers_the_kl_and_trains_every_parameter(tmp_path, alpha):
    teacher, converted = teacher_and_student("mingru")
    torch.manual_seed(1)
    student = HybridGRUForCausalLM(converted.config)  # a fresh model: far from the teacher, so the KL has room to fall
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    losses = logged_losses(distil(tmp_path, student, teacher, "logits", alpha=alpha, max_steps=12, temperature=2.0))
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses  # alpha=0.5: half is label CE on the toy rule
    assert all(not torch.equal(p, before[name]) for name, p in student.named_parameters())


def test_gradient_accumulation_4x1_equals_1x4(tmp_path):
    """Uneven row lengths: only normalising by Trainer's num_items_in_batch makes the two runs equal."""
    teacher, one_big = teacher_and_student("mingru")
    _, four_small = teacher_and_student("mingru")
    for stage in ("logits", "layers"):
        distil(tmp_path / f"a{stage}", one_big, teacher, stage, alpha=0.5, max_steps=3, batch=4, optim="sgd")
        distil(tmp_path / f"b{stage}", four_small, teacher, stage, alpha=0.5, max_steps=3, batch=1, accumulation=4,
               optim="sgd")  # fmt: skip
        for p in (*one_big.parameters(), *four_small.parameters()):
            p.requires_grad_(True)
    for (name, a), b in zip(one_big.named_parameters(), four_small.parameters(), strict=True):
        assert_close(a, b, 1e-5, name)


@pytest.mark.parametrize("stage", ["layers", "logits"])
def test_resume_equals_an_uninterrupted_run(tmp_path, stage):
    teacher, straight = teacher_and_student()
    distil(tmp_path / "straight", straight, teacher, stage, max_steps=4)
    _, stopped = teacher_and_student()
    distil(tmp_path / "resumed", stopped, teacher, stage, max_steps=2, save_strategy="steps", save_steps=2)
    _, resumed = teacher_and_student()
    checkpoint = tmp_path / "resumed" / "checkpoint-2"
    distil(tmp_path / "resumed", resumed, teacher, stage, max_steps=4, resume=str(checkpoint))
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert_close(a, b, 1e-6, name)


def test_lora_student_trains_only_adapters_and_layers_stage_only_gru_adapters(tmp_path):
    teacher, student = teacher_and_student()
    targets = ["input_proj", "out_proj", "q_proj", "v_proj"]
    lora = get_peft_model(student, LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    before = {name: p.detach().clone() for name, p in lora.named_parameters()}
    distil(tmp_path / "layers", lora, teacher, "layers", max_steps=3)
    changed = {name for name, p in lora.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all("lora_" in n and ".mixer." in n and ".layers.2." not in n for n in changed), changed
    assert not any(".layers.2." in n for n, p in lora.named_parameters() if p.requires_grad)


def test_hidden_stage_distils_an_encoder_of_another_architecture(tmp_path):
    """A BERT teacher into a bidirectional HybridGRU encoder: unlabelled text, hidden states matched layer to layer."""
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)  # fmt: skip
    student = HybridGRUModel(HybridGRUConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                             num_attention_heads=4, block_pattern="GA", bidirectional=True))  # fmt: skip

    def unlabelled(features):
        batch = pad_collate(features)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    trainer = DistillationTrainer(
        model=student, teacher_model=bert, args=arguments(tmp_path, max_steps=15), stage="hidden",
        train_dataset=toy_dataset(), data_collator=unlabelled,
    )  # fmt: skip
    assert trainer.layer_map == {0: 0, 1: 0, 2: 1, 3: 1}
    trainer.train()
    losses = logged_losses(trainer)
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses


def test_teacher_may_run_in_bfloat16(tmp_path):
    teacher, student = teacher_and_student("mingru")
    trainer = distil(tmp_path, student, teacher, "logits", max_steps=2, teacher_dtype=torch.bfloat16)
    assert next(teacher.parameters()).dtype == torch.bfloat16
    assert all(torch.isfinite(torch.tensor(loss)) for loss in logged_losses(trainer))


def test_bad_settings_are_refused(tmp_path):
    teacher, student = teacher_and_student()
    make = dict(model=student, teacher_model=teacher, args=arguments(tmp_path))
    with pytest.raises(ValueError, match="stage=.*'mse'"):
        DistillationTrainer(**make, stage="mse")
    with pytest.raises(ValueError, match="alpha=1.5"):
        DistillationTrainer(**make, alpha=1.5)
    with pytest.raises(ValueError, match="layer_map"):
        DistillationTrainer(**make, stage="layers", layer_map={0: 7})
    other = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4))  # fmt: skip
    with pytest.raises(ValueError, match="vocab_size=50"):
        DistillationTrainer(model=student, teacher_model=other, args=arguments(tmp_path), stage="logits")
    with pytest.raises(ValueError, match="hidden_size=48"):
        DistillationTrainer(model=student, teacher_model=other, args=arguments(tmp_path), stage="hidden")


@pytest.mark.slow  # three Python processes import torch and transformers
def test_ddp_two_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    worker = Path(__file__).with_name("distil_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    commands = {
        "single": [sys.executable, str(worker), str(tmp_path / "single"), "4"],
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                str(worker), str(tmp_path / "ddp"), "2"],
    }  # fmt: skip
    for command in commands.values():
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    single = json.loads((tmp_path / "single" / "report.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "report.json").read_text())
    for stage in ("logits", "layers"):
        assert ddp[stage]["world_size"] == 2 and single[stage]["world_size"] == 1
        assert ddp[stage]["student_wrapped"] == "DistributedDataParallel"
        assert ddp[stage]["teacher_class"] == "LlamaForCausalLM"  # the teacher is never wrapped
        assert ddp[stage]["losses"] == pytest.approx(single[stage]["losses"], abs=1e-5), stage
    reference = load_file(tmp_path / "single" / "student.safetensors")
    for name, tensor in load_file(tmp_path / "ddp" / "student.safetensors").items():
        assert_close(tensor, reference[name], 1e-5, name)
