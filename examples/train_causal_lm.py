"""Train a HybridGRU causal language model with the Hugging Face Trainer: the project's main job.

The default run takes the bundled Austen novel (data/austen/), trains a byte-level BPE tokenizer on it, builds the
model from configs/hybrid-gru-tiny, trains it (progress bar, periodic evaluation, checkpoints), reports validation
loss and perplexity, prints a generated sample and saves a Hub-ready folder with a model card and a loss-curve PNG:

    python examples/train_causal_lm.py

Other data, models and launchers (every `TrainingArguments` flag works too: --learning_rate, --max_steps, ...):

    python examples/train_causal_lm.py --train_file my.txt --validation_file my_valid.txt --output_dir outputs/mine
    python examples/train_causal_lm.py --dataset_name Salesforce/wikitext --dataset_config_name wikitext-2-raw-v1 \
        --config_name configs/hybrid-gru-small --block_size 256 --max_steps 5000 --output_dir outputs/wikitext
    python examples/train_causal_lm.py --push_to_hub --hub_model_id me/hybrid-gru-austen
    python examples/train_causal_lm.py --resume_from_checkpoint last                       # continue a stopped run
    torchrun --nproc_per_node 2 examples/train_causal_lm.py --output_dir outputs/ddp       # GPUs, else CPU (gloo)
    accelerate launch --config_file configs/accelerate/ddp.yaml examples/train_causal_lm.py --output_dir outputs/ddp
    python examples/train_causal_lm.py --model_name_or_path outputs/hybrid-gru-austen --use_lora \
        --train_file other.txt --output_dir outputs/lora --learning_rate 1e-3             # LoRA: GRU + attention
"""

import gc
import math
import os
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
import transformers
from datasets import DatasetDict, load_dataset
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    HfArgumentParser,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

import hf_gru  # noqa: F401  (registers model_type "hybrid_gru" with the Auto classes)
from hf_gru.pretrained.conversion import llama_config_from
from hf_gru.tasks.text import group_texts, train_bpe_tokenizer
from hf_gru.training.hub import HubPushError, push_folder_to_hub, write_model_card
from hf_gru.training.lora import DEFAULT_TARGETS, lora_targets
from hf_gru.training.plotting import save_loss_curve

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRAIN_FILE = REPO_ROOT / "data" / "austen" / "prideprejudice.txt"
DEFAULT_CONFIG = REPO_ROOT / "configs" / "hybrid-gru-tiny"
CORPUS_NAME = "Jane Austen, Pride and Prejudice (1813), public domain; text from Debian's r-cran-janeaustenr (MIT)"
EXTENSION_TO_BUILDER = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv"}


@dataclass
class ModelArguments:
    config_name: str | None = field(
        default=None,
        metadata={"help": "Config folder (e.g. configs/hybrid-gru-small) or Hub id; default configs/hybrid-gru-tiny."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from these pretrained weights (folder or Hub id) instead of a config."}
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer folder or Hub id. Default: the model's own, else a BPE trained on the train split."
        },
    )
    tokenizer_vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size of a newly trained BPE."})
    model_type: str = field(
        default="hybrid_gru",
        metadata={
            "help": "hybrid_gru, or llama: a Llama of the config's sizes with attention in every layer (a teacher for "
            "examples/hybridize.py, or a baseline)."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom code from Hub configs/models."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded and processed data is cached."})
    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft) instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default=",".join(DEFAULT_TARGETS),
        metadata={
            "help": "Comma-separated module names: GRU input_proj,hidden_proj,out_proj; attention q/k/v/o_proj."
        },
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "A dataset on the Hugging Face Hub."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name, if any."})
    train_file: str | None = field(
        default=None, metadata={"help": "Local .txt/.json/.jsonl/.csv file; default: the bundled Austen novel."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file (same formats)."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text (json/csv/Hub data)."})
    validation_split_percentage: int = field(
        default=10, metadata={"help": "Without a validation split, hold out the LAST this-many percent of train."}
    )
    block_size: int = field(default=128, metadata={"help": "Tokens per training sequence."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep at most this many train blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep at most this many validation blocks."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})


@dataclass
class JobArguments:
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a non-empty output_dir (its old checkpoints are deleted)."}
    )
    sample_prompt: str = field(default="Elizabeth", metadata={"help": "Prompt of the sample printed at the end."})
    sample_max_new_tokens: int = field(default=80, metadata={"help": "Length of that sample, in tokens."})


# TrainingArguments defaults for the main job (600 steps of 16 x 128 tokens, about 8 passes over the novel; a few
# minutes on 2 CPU cores); each can be given on the command line. Set on the parser rather than by subclassing, so
# training_args.bin unpickles without this script.
TRAINING_DEFAULTS = dict(
    output_dir="outputs/hybrid-gru-austen",
    max_steps=600,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=32,
    learning_rate=3e-3,
    weight_decay=0.1,
    warmup_steps=30,
    lr_scheduler_type="cosine",
    eval_strategy="steps",
    eval_steps=200,
    save_steps=200,
    save_total_limit=2,
    logging_steps=25,
)


def main(argv: list[str] | None = None, callbacks: list[TrainerCallback] | None = None) -> dict:
    """Runs the job; returns its metrics. `callbacks` go to the Trainer (tests use them to stop a run midway)."""
    use_cpu_for_multiprocess()
    parser = HfArgumentParser((ModelArguments, DataArguments, JobArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    model_args, data_args, job_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    command = shlex.join(["python", "examples/train_causal_lm.py", *(sys.argv[1:] if argv is None else argv)])
    check_arguments(model_args, data_args)
    check_launch(training_args)
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    resume = resolve_checkpoint(training_args)
    prepare_output_dir(training_args, resume, job_args.overwrite_output_dir)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, at the end
    set_seed(training_args.seed)

    raw = load_raw_datasets(data_args, model_args)
    tokenizer = load_or_train_tokenizer(model_args, raw["train"][data_args.text_column], resume)
    model = build_model(model_args, tokenizer)
    with training_args.main_process_first(desc="tokenize and group"):  # rank 0 fills the datasets cache first
        train_set, eval_set = tokenize_and_group(raw, tokenizer, data_args, model.config)
    log_setup(training_args, model, train_set, eval_set, data_args.block_size)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=default_data_collator,
        callbacks=callbacks,
    )
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()  # the Hub-ready folder: weights, config, remote code, tokenizer, generation config
    metrics = {**train_result.metrics, **final_evaluation(trainer)}
    trainer.save_state()
    metrics["perplexity"] = math.exp(metrics["eval_loss"]) if metrics["eval_loss"] < 700 else math.inf
    metrics["world_size"] = training_args.world_size
    trainer.log_metrics("all", metrics)
    trainer.save_metrics("all", metrics)
    if not trainer.is_world_process_zero():
        return metrics

    output_dir = Path(training_args.output_dir)
    plot = save_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png", title=output_dir.name)
    sample = sample_text(output_dir, trainer.model, tokenizer, job_args, training_args.seed, model_args.use_lora)
    metrics["sample"] = sample
    write_card(output_dir, metrics, command, (model_args, data_args, job_args, training_args), trainer.model, plot)
    print(f"\nvalidation loss {metrics['eval_loss']:.4f}, perplexity {metrics['perplexity']:.2f}")
    print(f"sample (prompt {job_args.sample_prompt!r}):\n{sample}\n")
    print(f"saved to {output_dir}/ (model card README.md, loss curve {plot.name if plot else 'skipped'})")
    if push_to_hub:
        repo_id = training_args.hub_model_id or output_dir.name
        try:
            url = push_folder_to_hub(
                output_dir, repo_id, token=training_args.hub_token, private=training_args.hub_private_repo
            )
        except HubPushError as error:
            raise SystemExit(f"error: {error}") from error
        print(f"pushed to the Hub: {url}")
    return metrics


def use_cpu_for_multiprocess() -> None:
    """Under torchrun on a machine without an accelerator, asks for CPU DDP (gloo). Without this, Trainer would run
    each process as a separate single-process job, all writing into the same output_dir."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def final_evaluation(trainer: Trainer) -> dict:
    """Validation metrics of the final weights: the periodic evaluation's if it ran at the last step, else new ones."""
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if evaluations and evaluations[-1]["step"] == trainer.state.global_step:
        return {key: value for key, value in evaluations[-1].items() if key.startswith("eval_")}
    return trainer.evaluate()


def check_launch(training_args: TrainingArguments) -> None:
    """Stops launches that would silently not do what was asked (both seen with accelerate 1.15)."""
    mpi = any(k in os.environ for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"))
    if (
        os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
        and "MASTER_ADDR" in os.environ
        and not ("WORLD_SIZE" in os.environ or mpi)
    ):
        raise SystemExit(
            "error: `accelerate launch --cpu --num_processes N` started this script as ONE process: accelerate runs "
            "several CPU processes only through mpirun (--mpirun_hostfile). For data parallelism on CPU use "
            "`accelerate launch --multi_gpu --num_processes 2 examples/train_causal_lm.py` (without GPUs the script "
            "then trains on CPU with gloo) or `torchrun --nproc_per_node 2 examples/train_causal_lm.py`."
        )
    fsdp = training_args.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    if fsdp and training_args.device.type == "cpu":
        raise SystemExit(
            "error: FSDP needs GPUs here: on CPU, accelerate ignores FSDP and the Trainer would silently run plain "
            "DDP. Drop --fsdp on CPU (DDP is used), or run on GPUs with "
            "`accelerate launch --config_file configs/accelerate/fsdp.yaml`."
        )


def check_arguments(model_args: ModelArguments, data_args: DataArguments) -> None:
    """ValueErrors for bad values, before anything is loaded or written."""
    if data_args.block_size <= 0:
        raise ValueError(f"--block_size must be a positive integer, got {data_args.block_size}.")
    if not 1 <= data_args.validation_split_percentage <= 50:
        raise ValueError(
            f"--validation_split_percentage must be in [1, 50], got {data_args.validation_split_percentage}."
        )
    if data_args.dataset_name and (data_args.train_file or data_args.validation_file):
        raise ValueError("Pass either --dataset_name or --train_file/--validation_file, not both.")
    if data_args.validation_file and not data_args.train_file and not data_args.dataset_name:
        raise ValueError("--validation_file needs a --train_file of the same format.")
    for name in ("train_file", "validation_file"):
        path = getattr(data_args, name)
        if path is None:
            continue
        if not Path(path).is_file():
            raise ValueError(f"--{name} {path!r} does not exist or is not a file.")
        if Path(path).suffix.lower() not in EXTENSION_TO_BUILDER:
            raise ValueError(f"--{name} {path!r} must end in one of {sorted(EXTENSION_TO_BUILDER)}.")
    if model_args.model_name_or_path and model_args.config_name:
        raise ValueError(
            "Pass either --model_name_or_path (pretrained weights) or --config_name (new model), not both."
        )
    if model_args.use_lora and not model_args.model_name_or_path:
        raise ValueError("--use_lora adapts pretrained weights: pass --model_name_or_path too.")
    if model_args.model_type not in ("hybrid_gru", "llama"):
        raise ValueError(f"--model_type must be hybrid_gru or llama, got {model_args.model_type!r}.")


def resolve_checkpoint(training_args: TrainingArguments) -> str | None:
    """`--resume_from_checkpoint last` picks the newest checkpoint in output_dir; a path must exist."""
    value = training_args.resume_from_checkpoint
    if value is None:
        return None
    if value in ("last", "latest", "True", "true"):
        last = get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
        if last is None:
            raise ValueError(
                f"--resume_from_checkpoint {value}: no checkpoint-* folder in {training_args.output_dir!r}."
            )
        return last
    if not Path(value, "trainer_state.json").is_file():
        raise ValueError(f"--resume_from_checkpoint {value!r} is not a Trainer checkpoint (no trainer_state.json).")
    return value


def prepare_output_dir(training_args: TrainingArguments, resume: str | None, overwrite: bool) -> None:
    """Refuses to write into a non-empty output_dir (nothing is overwritten by accident) unless resuming or asked."""
    output_dir = Path(training_args.output_dir)
    if resume or not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise ValueError(
            f"--output_dir {str(output_dir)!r} is not empty. Pass --resume_from_checkpoint last to continue its run, "
            "--overwrite_output_dir to replace it, or another --output_dir."
        )
    if training_args.should_save:  # old checkpoints would otherwise mix with the new run's in rotation and resume
        for stale in output_dir.glob("checkpoint-*"):
            shutil.rmtree(stale)


def load_raw_datasets(data_args: DataArguments, model_args: ModelArguments) -> DatasetDict:
    """Train and validation text from the Hub, from local files, or (by default) from the bundled corpus."""
    percent = 100 - data_args.validation_split_percentage
    if data_args.dataset_name:
        name, config = data_args.dataset_name, data_args.dataset_config_name

        def load(split: str | None = None):
            try:
                return load_dataset(name, config, split=split, cache_dir=model_args.cache_dir)
            except Exception as error:  # offline, unknown name, no access: datasets raises many types
                raise SystemExit(
                    f"error: could not load dataset {name!r} (config {config!r}) from the Hugging Face Hub: "
                    f"{type(error).__name__}: {error}\nWithout network access, pass local files with --train_file "
                    "and --validation_file instead. Nothing was written."
                ) from error

        raw = load()
        if "validation" not in raw:
            raw = DatasetDict(train=load(f"train[:{percent}%]"), validation=load(f"train[{percent}%:]"))
    else:
        train_file = data_args.train_file or str(DEFAULT_TRAIN_FILE)
        builder = EXTENSION_TO_BUILDER[Path(train_file).suffix.lower()]
        kwargs = {"keep_linebreaks": True} if builder == "text" else {}
        files = {"train": train_file}
        if data_args.validation_file:
            files["validation"] = data_args.validation_file
        raw = load_dataset(builder, data_files=files, cache_dir=model_args.cache_dir, **kwargs)
        if "validation" not in raw:  # a contiguous tail, so validation text never sits between training lines
            split = {
                s: f"train[:{percent}%]" if s == "train" else f"train[{percent}%:]" for s in ("train", "validation")
            }
            raw = DatasetDict(
                {
                    s: load_dataset(builder, data_files=files, split=spec, cache_dir=model_args.cache_dir, **kwargs)
                    for s, spec in split.items()
                }
            )
    columns = raw["train"].column_names
    if data_args.text_column not in columns:
        raise ValueError(f"--text_column {data_args.text_column!r} is not in the data; its columns are {columns}.")
    return raw


def load_or_train_tokenizer(
    model_args: ModelArguments, train_texts: list[str], resume: str | None
) -> PreTrainedTokenizerBase:
    """A named tokenizer, else the checkpoint's or pretrained model's, else a byte-level BPE trained on train_texts.

    Every process trains its own copy (training is deterministic and takes about a second), so no rank waits on a
    file another rank writes.
    """
    source = model_args.tokenizer_name or resume or model_args.model_name_or_path
    if source:
        tokenizer = AutoTokenizer.from_pretrained(
            source, cache_dir=model_args.cache_dir, trust_remote_code=model_args.trust_remote_code
        )
    else:
        tokenizer = train_bpe_tokenizer(train_texts, vocab_size=model_args.tokenizer_vocab_size)
    if tokenizer.pad_token is None:  # e.g. GPT-2's tokenizer: pad with eos, masked out of the loss anyway
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """Pretrained weights, or a new model from a config whose vocabulary and special ids follow the tokenizer."""
    common = {"cache_dir": model_args.cache_dir, "trust_remote_code": model_args.trust_remote_code}
    if model_args.model_name_or_path:
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **common)
        if len(tokenizer) > model.config.vocab_size:
            model.resize_token_embeddings(len(tokenizer))
    else:
        config = AutoConfig.from_pretrained(model_args.config_name or str(DEFAULT_CONFIG), **common)
        if model_args.model_type == "llama":
            config = llama_config_from(config)
        config.vocab_size = len(tokenizer)
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=model_args.trust_remote_code)
    # Sampling defaults for pipeline("text-generation") and the Hub widget.
    model.generation_config.update(
        do_sample=True, top_k=50, top_p=0.95, temperature=0.8, max_new_tokens=80,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    if model_args.use_lora:
        model = add_lora(model, model_args)
    return model


def add_lora(model: PreTrainedModel, model_args: ModelArguments) -> PreTrainedModel:
    """Wraps the model with LoRA adapters (Hu et al., 2021) on the named projections; only they train."""
    from peft import LoraConfig, get_peft_model

    names = [name.strip() for name in model_args.lora_target_modules.split(",") if name.strip()]
    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=lora_targets(model, names),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def tokenize_and_group(raw: DatasetDict, tokenizer, data_args: DataArguments, config) -> tuple:
    """Tokenizes every row, then concatenates and cuts into `block_size` blocks (train, validation)."""
    block_size = data_args.block_size
    if block_size > config.max_position_embeddings:
        raise ValueError(
            f"--block_size {block_size} exceeds the model's max_position_embeddings {config.max_position_embeddings}."
        )
    columns = raw["train"].column_names
    text_column = data_args.text_column
    tokenized = raw.map(
        lambda batch: tokenizer(batch[text_column]),
        batched=True,
        remove_columns=columns,
        num_proc=data_args.preprocessing_num_workers,
        desc="tokenize",
    )
    tokenized = tokenized.remove_columns([c for c in tokenized["train"].column_names if c == "token_type_ids"])
    blocks = tokenized.map(
        group_texts,
        batched=True,
        batch_size=1000,
        fn_kwargs={"block_size": block_size},
        num_proc=data_args.preprocessing_num_workers,
        desc=f"group into blocks of {block_size}",
    )
    train_set, eval_set = blocks["train"], blocks["validation"]
    for name, dataset in (("train", train_set), ("validation", eval_set)):
        if len(dataset) == 0:
            raise ValueError(
                f"The {name} split holds fewer than --block_size {block_size} tokens; lower --block_size."
            )
    if data_args.max_train_samples is not None:
        train_set = train_set.select(range(min(data_args.max_train_samples, len(train_set))))
    if data_args.max_eval_samples is not None:
        eval_set = eval_set.select(range(min(data_args.max_eval_samples, len(eval_set))))
    return train_set, eval_set


def log_setup(training_args: TrainingArguments, model, train_set, eval_set, block_size: int) -> None:
    """One line per process (the distributed test reads them), then a summary from rank 0."""
    rank, world = training_args.process_index, training_args.world_size
    print(
        f"[rank {rank}/{world}] device {training_args.device}, {len(train_set)} train blocks of {block_size} tokens, "
        f"per-device batch {training_args.per_device_train_batch_size}",
        flush=True,
    )
    if rank == 0:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        config = model.config
        layers = f"{config.num_hidden_layers} {config.model_type} layers"
        if config.model_type == "hybrid_gru":
            layers = f"{config.block_pattern!r} x {config.num_hidden_layers}, gru_variant {config.gru_variant}"
        print(f"model: {total / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trainable), layers {layers}")  # fmt: skip
        print(f"data: {len(train_set)} train / {len(eval_set)} validation blocks; torch threads "
              f"{torch.get_num_threads()}", flush=True)  # fmt: skip


def sample_text(output_dir: Path, model, tokenizer, job_args: JobArguments, seed: int, use_lora: bool) -> str:
    """Samples a continuation of the prompt. A full model is reloaded from output_dir with pipeline(), as a user
    would; a LoRA adapter is sampled from the trained model in memory."""
    set_seed(seed)
    kwargs = {"max_new_tokens": job_args.sample_max_new_tokens}
    if use_lora:
        inputs = tokenizer(job_args.sample_prompt, return_tensors="pt").to(model.device)
        output = model.generate(**inputs, **kwargs)
        return tokenizer.decode(output[0], skip_special_tokens=True)
    generator = transformers.pipeline("text-generation", model=str(output_dir), device="cpu")
    return generator(job_args.sample_prompt, **kwargs)[0]["generated_text"]


def write_card(output_dir: Path, metrics: dict, command: str, all_args: tuple, model, plot) -> None:
    """README.md model card: metrics, the exact command, usage and settings."""
    model_args, data_args, job_args, training_args = all_args
    if data_args.dataset_name:
        dataset = f"`{data_args.dataset_name}`" + (
            f" ({data_args.dataset_config_name})" if data_args.dataset_config_name else ""
        )
    elif data_args.train_file:
        dataset = f"local file `{Path(data_args.train_file).name}`"
    else:
        dataset = CORPUS_NAME
    kind = "LoRA adapter for" if model_args.use_lora else "HybridGRU"
    shape = "GRU blocks interleaved with self-attention"
    if model_args.model_type == "llama":
        kind, shape = ("LoRA adapter for" if model_args.use_lora else "Llama"), "self-attention in every layer"
    base = model_args.model_name_or_path or model_args.config_name or "configs/hybrid-gru-tiny"
    usage = f"""
from transformers import pipeline

# trust_remote_code: the HybridGRU modeling code ships in this folder (not needed after `import hf_gru`)
generator = pipeline("text-generation", model="{output_dir}", trust_remote_code=True)
print(generator({job_args.sample_prompt!r}, max_new_tokens=60)[0]["generated_text"])
"""
    if model_args.use_lora:
        usage = f"""
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{model_args.model_name_or_path}", trust_remote_code=True)
model = PeftModel.from_pretrained(base, "{output_dir}")
tokenizer = AutoTokenizer.from_pretrained("{output_dir}")
"""
    world = training_args.world_size
    launcher = f"  # on {world} processes (torchrun / accelerate launch)" if world > 1 else ""
    shown = {k: metrics[k] for k in ("eval_loss", "perplexity", "train_loss", "epoch") if k in metrics}
    shown["train_runtime (s)"] = metrics.get("train_runtime", "n/a")
    shown["steps"] = training_args.max_steps if training_args.max_steps > 0 else "epochs"
    shown["parameters"] = sum(p.numel() for p in model.parameters())
    settings = {"data": asdict(data_args), "model": asdict(model_args), "job": asdict(job_args)}
    settings["training"] = {k: getattr(training_args, k) for k in (
        "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
        "weight_decay", "warmup_steps", "lr_scheduler_type", "seed", "world_size",
    )}  # fmt: skip
    write_model_card(
        output_dir,
        title=f"{kind} {output_dir.name}",
        summary=(
            f"A {kind} causal language model ({shape}, built from `{base}`), "
            "trained with the Hugging Face `Trainer` by hf_gru's `examples/train_causal_lm.py`. Validation "
            "perplexity is exp(mean token cross-entropy) on the held-out validation blocks."
        ),
        metrics=shown,
        command=command + launcher,
        pipeline_tag="text-generation",
        usage=usage,
        dataset=dataset,
        hyperparameters=settings,
        plot=plot.name if plot else None,
    )


if __name__ == "__main__":
    try:
        main()
    finally:
        # Free main()'s objects (the DDP-wrapped model holds the process group) and destroy the group while Python is
        # fully alive: left to interpreter shutdown, a rank that finished cleanly can abort in gloo's teardown
        # ("terminate called without an active exception"), failing the whole launch.
        gc.collect()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
