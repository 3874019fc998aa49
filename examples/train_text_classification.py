"""Text classification (sentiment, topic, ...) with a HybridGRU trained from scratch, through `Trainer`.

Trains a byte-level BPE tokenizer on the training texts, builds `AutoModelForSequenceClassification` from a
HybridGRU config (bidirectional encoder by default), trains with `Trainer`, reports accuracy and F1 (offline
`evaluate` metric modules from `hf_gru.metrics`) on the validation and test splits, and saves a folder that
`pipeline("text-classification", model=folder, trust_remote_code=True)` loads, with a loss-curve PNG beside it.

Fine-food reviews (labels great / other; 10% of train held out for validation, seeded), ~10 minutes on 2 CPU cores:

    python examples/train_text_classification.py \
        --train_file ../shared/data/classification/fine_food_reviews/train.jsonl \
        --test_file ../shared/data/classification/fine_food_reviews/test.jsonl \
        --output_dir outputs/fine-food

Inputs: local jsonl/json/csv files (`--train_file`, `--validation_file`, `--test_file`) or a Hub dataset
(`--dataset_name`, `--dataset_config_name`); `--text_column` and `--label_column` name the columns. Labels may be
strings or integers (or a `ClassLabel`); `config.id2label` keeps their names. `--model_name_or_path` fine-tunes a
saved checkpoint instead of training from scratch, with its own tokenizer: the main job's language model, an encoder
distilled by `examples/distill_encoder.py`, or any transformers encoder folder (e.g. a BERT). Any `TrainingArguments`
flag works (`--learning_rate`, `--num_train_epochs`, `--per_device_train_batch_size`, ...).
"""

import json
import logging
import random
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import transformers
from tokenizers import normalizers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    HfArgumentParser,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)

import hf_gru  # noqa: F401  (registers HybridGRU with the Auto classes)
from hf_gru.metrics import load_metric
from hf_gru.tasks.text import build_classifier, train_bpe_tokenizer
from hf_gru.training.plotting import save_loss_curve

logger = logging.getLogger(__name__)

# This script's defaults for `TrainingArguments` (a small model trained from scratch wants a larger learning rate than
# transformers' fine-tuning default of 5e-5). Any of them can be overridden on the command line.
TRAINING_DEFAULTS = {
    "output_dir": "outputs/text-classification",
    "do_train": True,
    "do_eval": True,
    "learning_rate": 5e-4,
    "weight_decay": 0.01,
    "warmup_steps": 30,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "train_sampling_strategy": "group_by_length",  # batches of similar length: little padding for the GRU to run over
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "f1",
    "logging_steps": 10,
    "report_to": "none",
}


@dataclass
class ModelArguments:
    """The model: trained from scratch from these sizes (or `--config_name`), or fine-tuned from a checkpoint."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved model folder or Hub id to fine-tune; default: train from scratch."}
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "A config.json (or folder) for a model from scratch; overrides the sizes below."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "A saved tokenizer; default: the checkpoint's, or one trained on train texts."}
    )
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary of the tokenizer trained from scratch."})
    lowercase: bool = field(
        default=True,
        metadata={
            "help": "The tokenizer trained from scratch lowercases its input (saved with it, so pipelines too)."
        },
    )
    hidden_size: int = field(default=128)
    intermediate_size: int = field(default=352)
    num_hidden_layers: int = field(default=2)
    num_attention_heads: int = field(default=4)
    block_pattern: str = field(default="GA", metadata={"help": "G = GRU, A = attention, L = sliding attention."})
    gru_variant: str = field(default="mingru", metadata={"help": "'gru' (classic cell) or 'mingru' (parallel)."})
    bidirectional: bool = field(default=True, metadata={"help": "Encoder mode: backward GRU, non-causal attention."})
    classifier_dropout: float = field(default=0.1)
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code from a Hub checkpoint to run."})


@dataclass
class DataArguments:
    """Where the texts and labels come from."""

    dataset_name: str | None = field(default=None, metadata={"help": "A dataset on the Hugging Face Hub."})
    dataset_config_name: str | None = field(default=None)
    train_file: str | None = field(default=None, metadata={"help": "A jsonl/json/csv file of training examples."})
    validation_file: str | None = field(default=None)
    test_file: str | None = field(default=None)
    text_column: str = field(default="text")
    label_column: str = field(default="label")
    validation_split_percentage: float = field(
        default=10.0, metadata={"help": "Share of train held out for validation when there is no validation split."}
    )
    max_seq_length: int = field(default=256, metadata={"help": "Longer texts are truncated to this many tokens."})
    token_dropout: float = field(
        default=0.0,
        metadata={"help": "Drop each training token with this probability, anew every epoch (word dropout)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training examples."})
    max_eval_samples: int | None = field(default=None)

    def __post_init__(self) -> None:
        if self.dataset_name is None and self.train_file is None:
            raise ValueError("Pass --dataset_name or --train_file.")
        for path in (self.train_file, self.validation_file, self.test_file):
            if path is not None and Path(path).suffix not in (".json", ".jsonl", ".csv"):
                raise ValueError(f"Data files must be .json, .jsonl or .csv, got {path!r}.")
        if not 0 < self.validation_split_percentage < 100:
            raise ValueError(
                f"--validation_split_percentage must be in (0, 100), got {self.validation_split_percentage}."
            )
        if self.max_seq_length <= 0:
            raise ValueError(f"--max_seq_length must be positive, got {self.max_seq_length}.")
        if not 0 <= self.token_dropout < 1:
            raise ValueError(f"--token_dropout must be in [0, 1), got {self.token_dropout}.")


def load_raw_datasets(args: DataArguments, seed: int) -> datasets.DatasetDict:
    """Train / validation (held out from train with `seed` if missing) / test splits, from files or the Hub."""
    if args.dataset_name is not None:
        raw = datasets.load_dataset(args.dataset_name, args.dataset_config_name)
    else:
        files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
        files = {split: path for split, path in files.items() if path is not None}
        builder = "csv" if Path(args.train_file).suffix == ".csv" else "json"
        raw = datasets.load_dataset(builder, data_files=files)
    for split in raw.values():
        for column in (args.text_column, args.label_column):
            if column not in split.column_names:
                raise ValueError(f"Column {column!r} not found; the data has columns {split.column_names}.")
    if "validation" not in raw:
        held_out = raw["train"].train_test_split(test_size=args.validation_split_percentage / 100, seed=seed)
        raw["train"], raw["validation"] = held_out["train"], held_out["test"]
    if args.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(args.max_train_samples, len(raw["train"]))))
    if args.max_eval_samples is not None:
        for split in ("validation", "test"):
            if split in raw:
                raw[split] = raw[split].select(range(min(args.max_eval_samples, len(raw[split]))))
    return raw


def label_names(raw: datasets.DatasetDict, label_column: str) -> list[str]:
    """The class names: a `ClassLabel`'s names, else the sorted distinct labels of the training split."""
    feature = raw["train"].features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return [str(label) for label in sorted(set(raw["train"][label_column]))]


def build_tokenizer(model_args: ModelArguments, texts: list[str], max_length: int) -> PreTrainedTokenizerBase:
    """A saved tokenizer when one is named, else a byte-level BPE trained on the training texts."""
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name is not None:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=model_args.trust_remote_code)
    if model_args.lowercase:
        texts = [text.lower() for text in texts]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=model_args.vocab_size, model_max_length=max_length)
    if model_args.lowercase:  # part of tokenizer.json: the pipeline and every later user lowercase the same way
        tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()
    return tokenizer


def build_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, labels: list[str], max_length: int):
    """AutoModelForSequenceClassification, from a checkpoint or a fresh HybridGRU config with the label maps."""
    sizes = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "block_pattern",
             "gru_variant", "bidirectional", "classifier_dropout")  # fmt: skip
    return build_classifier(
        AutoModelForSequenceClassification,
        tokenizer,
        labels,
        model_name_or_path=model_args.model_name_or_path,
        config_name=model_args.config_name,
        trust_remote_code=model_args.trust_remote_code,
        max_position_embeddings=max(max_length, 512),
        **{name: getattr(model_args, name) for name in sizes},
    )


def token_dropout_transform(p: float, special_ids: set[int], seed: int):
    """A `with_transform` function that drops each non-special token with probability `p` each time a row is read:
    word dropout (Iyyer et al., 2015, "Deep Unordered Composition Rivals Syntactic Methods"), a regulariser for
    models trained from scratch on little text."""
    rng = random.Random(seed)

    def transform(batch: dict) -> dict:
        out = {key: list(values) for key, values in batch.items()}
        for i, ids in enumerate(batch["input_ids"]):
            keep = [j for j, token in enumerate(ids) if token in special_ids or rng.random() >= p] or [0]
            for key in ("input_ids", "attention_mask"):
                out[key][i] = [batch[key][i][j] for j in keep]
        return out

    return transform


def make_compute_metrics(labels: list[str]):
    """Accuracy, macro / weighted F1, and the F1 of each class (`f1_<label>`)."""
    accuracy, f1 = load_metric("accuracy"), load_metric("f1")

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        preds, refs = np.argmax(logits, axis=-1), prediction.label_ids
        scores = accuracy.compute(predictions=preds, references=refs)
        scores["f1"] = f1.compute(predictions=preds, references=refs, average="macro")["f1"]
        scores["f1_weighted"] = f1.compute(predictions=preds, references=refs, average="weighted")["f1"]
        per_class = f1.compute(predictions=preds, references=refs, average=None, labels=list(range(len(labels))))
        scores.update({f"f1_{name}": value for name, value in zip(labels, per_class["f1"], strict=True)})
        return scores

    return compute_metrics


def write_model_card(
    output_dir: str, metrics: dict, labels: list[str], command: str, base_model: str | None = None
) -> None:
    """A short README.md: what the model is, how to use it, its metrics and the command that trained it."""
    origin = "trained from scratch" if base_model is None else f"fine-tuned from `{base_model}`"
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, float))
    card = f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [hybrid_gru, text-classification]
---
# Text classifier

A sequence classifier ({origin}) trained with `examples/train_text_classification.py` of hf_gru.
Labels: {", ".join(labels)}.

```python
from transformers import pipeline
classifier = pipeline("text-classification", model="<this folder>", trust_remote_code=True)
```

| metric | value |
| --- | --- |
{rows}

Trained with:

```bash
{command}
```
"""
    Path(output_dir, "README.md").write_text(card)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)

    raw = load_raw_datasets(data_args, training_args.seed)
    labels = label_names(raw, data_args.label_column)
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = build_tokenizer(model_args, raw["train"][data_args.text_column], data_args.max_seq_length)
    model = build_model(model_args, tokenizer, labels, data_args.max_seq_length)
    logger.info("%d labels %s; model with %.2fM parameters", len(labels), labels, model.num_parameters() / 1e6)

    is_class_label = isinstance(raw["train"].features[data_args.label_column], datasets.ClassLabel)

    def label_id(value) -> int:
        name = labels[value] if is_class_label and 0 <= value < len(labels) else str(value)
        if name not in label2id:
            raise ValueError(f"Label {value!r} is not among the training labels {labels}.")
        return label2id[name]

    def preprocess(batch: dict) -> dict:
        encoded = tokenizer(batch[data_args.text_column], truncation=True, max_length=data_args.max_seq_length)
        encoded["labels"] = [label_id(value) for value in batch[data_args.label_column]]
        return encoded

    encoded = raw.map(preprocess, batched=True, remove_columns=raw["train"].column_names, desc="Tokenizing")

    if data_args.token_dropout > 0:
        special_ids = set(tokenizer.all_special_ids)
        transform = token_dropout_transform(data_args.token_dropout, special_ids, training_args.seed)
        encoded["train"] = encoded["train"].with_transform(transform)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"] if training_args.do_train else None,
        eval_dataset=encoded["validation"] if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=make_compute_metrics(labels),
    )
    metrics: dict[str, float] = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        metrics.update(train_result.metrics)
        trainer.save_model()  # the best checkpoint's weights when load_best_model_at_end
    if training_args.do_eval:
        metrics.update(trainer.evaluate(encoded["validation"], metric_key_prefix="eval"))
    if "test" in encoded:
        metrics.update(trainer.evaluate(encoded["test"], metric_key_prefix="test"))
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics)
        trainer.save_state()
        plot = save_loss_curve(trainer.state.log_history, Path(training_args.output_dir) / "loss_curve.png",
                               title="text classification")  # fmt: skip
        command = shlex.join(
            ["python", "examples/train_text_classification.py", *(sys.argv[1:] if argv is None else argv)]
        )
        write_model_card(training_args.output_dir, metrics, labels, command, model_args.model_name_or_path)
        logger.info("Saved model, tokenizer, metrics and loss curve (%s) to %s", plot, training_args.output_dir)
        print(json.dumps({k: round(v, 4) for k, v in metrics.items() if k.startswith(("eval_", "test_"))}, indent=1))
    return metrics


if __name__ == "__main__":
    main()
