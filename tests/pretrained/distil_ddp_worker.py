"""DistillationTrainer on one process or under torchrun (CPU, gloo): a tiny Llama teacher, its GGA conversion, 3 steps
of stage "logits" (alpha 0.5) then 3 of stage "layers"; rank 0 saves the student's weights and what it saw.

    python tests/pretrained/distil_ddp_worker.py OUT_DIR 4
    torchrun --nproc_per_node 2 tests/pretrained/distil_ddp_worker.py OUT_DIR 2
"""

import gc
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("ACCELERATE_USE_CPU", "true")  # torchrun without GPUs: DDP over gloo
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from hf_gru import DistillationTrainer  # noqa: E402
from tests.models.hybrid_gru.test_training_hybrid_gru import pad_collate, toy_dataset  # noqa: E402
from tests.pretrained.test_distillation import teacher_and_student  # noqa: E402


def main(out_dir: str, per_device_batch: int) -> None:
    torch.set_num_threads(1)
    teacher, student = teacher_and_student("mingru")
    report = {}
    for stage in ("logits", "layers"):
        args = TrainingArguments(
            output_dir=out_dir, per_device_train_batch_size=per_device_batch, max_steps=3, learning_rate=1e-2,
            lr_scheduler_type="constant", optim="sgd", logging_steps=1, save_strategy="no", report_to=[], seed=0,
            use_cpu=True, disable_tqdm=True, dataloader_pin_memory=False,
        )  # fmt: skip
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, args=args, stage=stage, alpha=0.5, train_dataset=toy_dataset(),
            data_collator=pad_collate,
        )  # fmt: skip
        trainer.train()
        trainer.remove_hooks()
        student.requires_grad_(True)
        report[stage] = {
            "world_size": args.world_size,
            "teacher_class": type(trainer.teacher).__name__,
            "student_wrapped": type(trainer.model_wrapped).__name__,
            "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        }
        del trainer  # its DDP wrapper's gradient hooks must go before the next stage wraps the student again
        gc.collect()
    if args.process_index == 0:
        save_file({k: v.contiguous() for k, v in student.state_dict().items()}, f"{out_dir}/student.safetensors")
        Path(out_dir, "report.json").write_text(json.dumps(report))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
