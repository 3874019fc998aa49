"""Convert a pretrained Llama-family causal LM into a HybridGRU and distil it: the teacher's embeddings, norms, MLPs and
some attention layers are kept, the other attention layers become GRU mixers initialised from them, then a short
layer-wise stage (each GRU layer matches the teacher's layer output, teacher frozen) and a logit stage (KL to the
teacher) train the student. Reports held-out perplexity of the teacher, of the converted model before distillation
and after each stage, and saves a Hub-ready folder with a model card and loss curves.

Offline proof on the bundled corpus: a small Llama teacher (600 steps), then conversion to GGA with 60 distillation
steps (10% of the teacher's; held-out perplexity 85.2 against the teacher's 82.1, see README):

    python examples/train_causal_lm.py --model_type llama --output_dir outputs/llama-austen
    python examples/hybridize.py --teacher outputs/llama-austen --block_pattern GGA --gru_variant gru \
        --layer_steps 20 --logit_steps 40 --output_dir outputs/hybrid-from-llama

A Hub checkpoint works the same way where the Hub is reachable (any LlamaForCausalLM, MistralForCausalLM or
Qwen2ForCausalLM), with your own data:

    python examples/hybridize.py --teacher Qwen/Qwen2.5-0.5B --attention_layers 5,11,17,23 --train_file my.txt \
        --layer_steps 500 --logit_steps 2000 --teacher_dtype bfloat16 --output_dir outputs/qwen-hybrid
"""

import dataclasses
import gc
import json
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    HfArgumentParser,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

import hf_gru  # noqa: F401  (registers model_type "hybrid_gru" with the Auto classes)
from hf_gru.pretrained.conversion import convert_to_hybrid, gru_state_bytes, kv_cache_bytes, write_conversion_card
from hf_gru.pretrained.distillation import DistillationTrainer
from hf_gru.training.plotting import save_loss_curve

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the data helpers of the main job, reused as they are
from train_causal_lm import (  # noqa: E402
    CORPUS_NAME,
    DataArguments,
    ModelArguments,
    load_raw_datasets,
    prepare_output_dir,
    tokenize_and_group,
    use_cpu_for_multiprocess,
)


@dataclass
class HybridizeArguments:
    teacher: str = field(metadata={"help": "Folder or Hub id of a Llama, Mistral or Qwen2 causal LM."})
    block_pattern: str = field(default="GGA", metadata={"help": "Mixer per layer, tiled: G = GRU, A = attention."})
    attention_layers: str | None = field(
        default=None, metadata={"help": "Comma-separated layers that keep attention (instead of --block_pattern)."}
    )
    gru_variant: str = field(default="gru", metadata={"help": "gru (classic cell) or mingru (parallel scan)."})
    gru_hidden_size: int | None = field(
        default=None, metadata={"help": "GRU state width: heads * head_dim (default) or kv_heads * head_dim."}
    )
    layer_steps: int = field(default=20, metadata={"help": "Steps of layer-wise distillation (GRU layers only)."})
    logit_steps: int = field(default=40, metadata={"help": "Steps of logit distillation (whole student)."})
    layer_learning_rate: float = field(default=1e-2, metadata={"help": "Peak learning rate of the layer stage."})
    logit_learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate of the logit stage."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the logit KL."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the KL; 1 - alpha goes to the label loss."})
    teacher_dtype: str | None = field(default=None, metadata={"help": "Run the teacher in this dtype (bfloat16)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded and processed data is cached."})


TRAINING_DEFAULTS = dict(
    output_dir="outputs/hybrid-from-llama",
    per_device_train_batch_size=16,
    per_device_eval_batch_size=32,
    weight_decay=0.0,
    warmup_steps=5,
    lr_scheduler_type="cosine",
    logging_steps=5,
    eval_strategy="no",
    save_strategy="no",  # each stage is short; the final student is saved once, at the end
    report_to="none",
)


def main(argv: list[str] | None = None) -> dict:
    """Runs conversion and both stages; returns the metrics written to hybridize_results.json."""
    use_cpu_for_multiprocess()
    parser = HfArgumentParser((HybridizeArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    job, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    command = shlex.join(["python", "examples/hybridize.py", *(sys.argv[1:] if argv is None else argv)])
    attention_layers = parse_layers(job.attention_layers)
    if job.layer_steps < 0 or job.logit_steps < 0:
        raise ValueError(f"--layer_steps and --logit_steps must be >= 0, got {job.layer_steps}, {job.logit_steps}.")
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    prepare_output_dir(training_args, None, job.overwrite_output_dir)
    set_seed(training_args.seed)

    teacher = AutoModelForCausalLM.from_pretrained(job.teacher, cache_dir=job.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(job.teacher, cache_dir=job.cache_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    raw = load_raw_datasets(data_args, ModelArguments(cache_dir=job.cache_dir))
    with training_args.main_process_first(desc="tokenize and group"):
        train_set, eval_set = tokenize_and_group(raw, tokenizer, data_args, teacher.config)

    overrides = {"gru_hidden_size": job.gru_hidden_size} if job.gru_hidden_size else {}
    student = convert_to_hybrid(teacher, job.block_pattern, job.gru_variant, attention_layers, **overrides)
    metrics = {"teacher_perplexity": perplexity(teacher, eval_set, training_args)}
    metrics["converted_perplexity"] = perplexity(student, eval_set, training_args)
    print(f"teacher {metrics['teacher_perplexity']:.2f}, converted before distillation "
          f"{metrics['converted_perplexity']:.2f} (layers {student.config.block_pattern!r})", flush=True)  # fmt: skip
    teacher_dtype = getattr(torch, job.teacher_dtype) if job.teacher_dtype else None
    histories = {}
    stages = (
        ("layers", job.layer_steps, job.layer_learning_rate),
        ("logits", job.logit_steps, job.logit_learning_rate),
    )
    for stage, steps, learning_rate in stages:
        if steps == 0:
            continue
        args = dataclasses.replace(training_args, max_steps=steps, learning_rate=learning_rate)
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, args=args, stage=stage, temperature=job.temperature,
            alpha=job.alpha, teacher_dtype=teacher_dtype, train_dataset=train_set, data_collator=default_data_collator,
        )  # fmt: skip
        trainer.train()
        trainer.remove_hooks()
        student.requires_grad_(True)  # stage "layers" froze everything but the GRU mixers
        histories[stage] = trainer.state.log_history
        del trainer  # under DDP its wrapper's gradient hooks must go before the next stage wraps the student again
        gc.collect()
        metrics[f"{stage}_steps"] = steps
        metrics[f"after_{stage}_perplexity"] = perplexity(student, eval_set, training_args)
        print(f"after {steps} steps of stage {stage!r}: perplexity {metrics[f'after_{stage}_perplexity']:.2f}")
    metrics["distillation_steps"] = job.layer_steps + job.logit_steps
    metrics.update(cache_metrics(teacher.config, student.config, data_args.block_size))

    if not training_args.should_save:
        return metrics
    output_dir = Path(training_args.output_dir)
    student.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    plots = [
        save_loss_curve(history, output_dir / f"loss_curve_{stage}.png", title=f"stage {stage!r}")
        for stage, history in histories.items()
    ]
    (output_dir / "hybridize_results.json").write_text(json.dumps(metrics, indent=2) + "\n")
    dataset = CORPUS_NAME if not (data_args.train_file or data_args.dataset_name) else None
    dataset = dataset or data_args.dataset_name or f"local file `{Path(data_args.train_file).name}`"
    plot = plots[-1].name if plots and plots[-1] else None
    write_conversion_card(output_dir, student, metrics=metrics, command=command, dataset=dataset, plot=plot)
    print(json.dumps(metrics, indent=2))
    print(f"saved to {output_dir}/ (model card README.md, loss curves)")
    return metrics


def parse_layers(value: str | None) -> list[int] | None:
    if value is None or not value.strip():
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(f"--attention_layers must be comma-separated integers, got {value!r}.") from error


def perplexity(model: PreTrainedModel, eval_set, training_args: TrainingArguments) -> float:
    """exp(mean token cross-entropy) on the held-out blocks, as examples/train_causal_lm.py reports it."""
    args = dataclasses.replace(training_args, report_to="none")
    trainer = Trainer(model=model, args=args, eval_dataset=eval_set, data_collator=default_data_collator)
    loss = trainer.evaluate()["eval_loss"]
    return math.exp(loss) if loss < 700 else math.inf


def cache_metrics(teacher_config, student_config, context: int) -> dict:
    """Inference state per sequence at `context` tokens (bf16): the teacher's KV cache vs the student's KV + GRU."""
    teacher_bytes = kv_cache_bytes(teacher_config, context)
    student_bytes = kv_cache_bytes(student_config, context) + gru_state_bytes(student_config)
    return {
        "cache_context_tokens": context,
        "teacher_kv_cache_bytes": teacher_bytes,
        "student_cache_bytes": student_bytes,
        "cache_ratio": student_bytes / teacher_bytes,
    }


if __name__ == "__main__":
    try:
        main()
    finally:
        gc.collect()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
