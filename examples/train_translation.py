"""Train a HybridGRU encoder-decoder translator (AutoModelForSeq2SeqLM) with Seq2SeqTrainer, and a same-size
transformer (MarianMTModel) on the same tokenizer, data, steps, batch and schedule, then compare them.

Default data: Spanish -> English Bible verses built from Debian's SWORD modules (examples/build_verse_pairs.py;
`apt-get install -y diatheke sword-text-sparv sword-text-web`), split by book. The run used for the README table:

    OMP_NUM_THREADS=1 python examples/train_translation.py --output_dir outputs/translation --max_steps 600

Other data (jsonl/csv with a source and a target column, or a Hub dataset), only one model, translating with a
trained folder:

    python examples/train_translation.py --train_file train.jsonl --validation_file valid.jsonl \
        --test_file test.jsonl --source_column de --target_column en --models hybrid --output_dir outputs/de-en
    python examples/train_translation.py --translate "En el principio creó Dios los cielos y la tierra." \
        --model_name_or_path outputs/translation/hybrid

Each trained model lands in `<output_dir>/<hybrid|marian>/` (weights, remote code, tokenizer, generation config,
model card), loadable with `AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)`; the comparison
(BLEU and chrF on the test split, training and generation speed, cache bytes) goes to `<output_dir>/results.json`.
"""

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
import transformers
from datasets import DatasetDict, load_dataset
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    HfArgumentParser,
    MarianConfig,
    MarianMTModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    set_seed,
)

import hf_gru  # noqa: F401  (registers model_type "hybrid_gru" with the Auto classes)
from hf_gru import HybridGRUConfig, HybridGRUForConditionalGeneration
from hf_gru.metrics import load_metric
from hf_gru.tasks.text import train_bpe_tokenizer
from hf_gru.training.hub import write_model_card

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_verse_pairs  # noqa: E402

EXTENSION_TO_BUILDER = {".json": "json", ".jsonl": "json", ".csv": "csv"}
MODELS = ("hybrid", "marian")
TRAINING_DEFAULTS = dict(
    output_dir="outputs/translation", max_steps=600, per_device_train_batch_size=32, per_device_eval_batch_size=32,
    learning_rate=2e-3, warmup_steps=60, lr_scheduler_type="cosine", weight_decay=0.01, max_grad_norm=1.0,
    logging_steps=50, save_strategy="no", eval_strategy="no", report_to="none", predict_with_generate=True,
    generation_max_length=96, train_sampling_strategy="group_by_length", seed=0, use_cpu=True,
)  # fmt: skip


@dataclass
class DataArguments:
    train_file: str | None = field(default=None, metadata={"help": "jsonl/csv; default: build the verse pairs."})
    validation_file: str | None = field(default=None, metadata={"help": "jsonl/csv (unused in training)."})
    test_file: str | None = field(default=None, metadata={"help": "jsonl/csv scored with BLEU/chrF."})
    dataset_name: str | None = field(default=None, metadata={"help": "A datasets Hub name instead of files."})
    dataset_config_name: str | None = None
    source_column: str = "es"
    target_column: str = "en"
    max_source_length: int = 128
    max_target_length: int = 128
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    verses_dir: str | None = field(default=None, metadata={"help": "Where built verse pairs go (default: output)."})


@dataclass
class ModelArguments:
    models: str = field(default="hybrid,marian", metadata={"help": "Comma-separated subset of hybrid, marian."})
    vocab_size: int = 4000
    hidden_size: int = 256
    num_attention_heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 3
    block_pattern: str = "GGA"
    decoder_block_pattern: str = "GGA"
    num_beams: int = 1
    speed_samples: int = 32
    translate: str | None = field(default=None, metadata={"help": "Translate this text with --model_name_or_path."})
    model_name_or_path: str | None = None


def load_raw(data_args: DataArguments, output_dir: Path) -> DatasetDict:
    if data_args.dataset_name:
        raw = load_dataset(data_args.dataset_name, data_args.dataset_config_name)
    else:
        files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
        if data_args.train_file is None:
            verses = Path(data_args.verses_dir or output_dir / "verses")
            if not (verses / "train.jsonl").is_file():
                build_verse_pairs.main(["--output_dir", str(verses)])
            files = {split: str(verses / f"{split}.jsonl") for split in ("train", "validation", "test")}
        files = {split: path for split, path in files.items() if path is not None}
        builders = {EXTENSION_TO_BUILDER.get(Path(path).suffix) for path in files.values()}
        if None in builders or len(builders) != 1:
            raise ValueError(f"Data files must all be .jsonl/.json or all .csv, got {sorted(files.values())}.")
        raw = load_dataset(builders.pop(), data_files=files)
    for split, dataset in raw.items():
        for column in (data_args.source_column, data_args.target_column):
            if column not in dataset.column_names:
                raise ValueError(f"Split {split!r} has no column {column!r}; its columns are {dataset.column_names}.")
    if "test" not in raw:
        raise ValueError(f"No test split to score (splits: {list(raw)}); pass --test_file.")
    if data_args.max_train_samples:
        raw["train"] = raw["train"].shuffle(seed=0).select(range(min(data_args.max_train_samples, len(raw["train"]))))
    if data_args.max_test_samples:
        raw["test"] = raw["test"].select(range(min(data_args.max_test_samples, len(raw["test"]))))
    return raw


def tokenize(raw: DatasetDict, tokenizer: PreTrainedTokenizerBase, data_args: DataArguments) -> DatasetDict:
    """Source and target ids, each ending in eos (the byte-level tokenizer adds no special tokens itself)."""
    eos = tokenizer.eos_token_id

    def encode(batch: dict) -> dict:
        sources = tokenizer(batch[data_args.source_column], add_special_tokens=False)["input_ids"]
        targets = tokenizer(batch[data_args.target_column], add_special_tokens=False)["input_ids"]
        return {
            "input_ids": [ids[: data_args.max_source_length - 1] + [eos] for ids in sources],
            "labels": [ids[: data_args.max_target_length - 1] + [eos] for ids in targets],
        }

    return raw.map(encode, batched=True, remove_columns=raw["train"].column_names)


def hybrid_model(args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> HybridGRUForConditionalGeneration:
    config = HybridGRUConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size, intermediate_size=int(2.75 * args.hidden_size),
        num_hidden_layers=args.encoder_layers, num_decoder_layers=args.decoder_layers, block_pattern=args.block_pattern,
        decoder_block_pattern=args.decoder_block_pattern, num_attention_heads=args.num_attention_heads,
        is_encoder_decoder=True, bidirectional=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id, max_position_embeddings=512,
    )  # fmt: skip
    return HybridGRUForConditionalGeneration(config)


def marian_model(args: ModelArguments, tokenizer: PreTrainedTokenizerBase, parameters: int) -> MarianMTModel:
    """A Marian transformer of the same width, depth and heads, its FFN width chosen to match `parameters`."""

    def build(ffn: int) -> MarianMTModel:
        config = MarianConfig(
            vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), d_model=args.hidden_size,
            encoder_layers=args.encoder_layers, decoder_layers=args.decoder_layers,
            encoder_attention_heads=args.num_attention_heads, decoder_attention_heads=args.num_attention_heads,
            encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=512, dropout=0.1,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=None,
            share_encoder_decoder_embeddings=True, tie_word_embeddings=True, scale_embedding=True,
        )  # fmt: skip
        return MarianMTModel(config)

    low, high = (count_parameters(build(ffn)) for ffn in (64, 128))
    ffn = max(64, round((64 + 64 * (parameters - low) / (high - low)) / 64) * 64)
    return build(ffn)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are one parameter, counted once


def cache_bytes(cache) -> int:
    """Bytes of every tensor a generation cache holds (keys/values, GRU and conv states, cross-attention keys/values)."""
    total, seen = 0, set()
    caches = (
        [cache.self_attention_cache, cache.cross_attention_cache]
        if hasattr(cache, "cross_attention_cache")
        else [cache]
    )
    for sub in caches:
        for layer in sub.layers:
            for value in vars(layer).values():
                items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
                for item in items:
                    if isinstance(item, torch.Tensor) and item.data_ptr() not in seen:
                        seen.add(item.data_ptr())
                        total += item.numel() * item.element_size()
    return total


@torch.no_grad()
def generation_speed(model, tokenizer, sources: list[str], batch_size: int, num_beams: int, max_new_tokens: int):
    """Generated tokens per second over `sources` in batches (left-padded), and the cache bytes of the first batch."""
    model.eval()
    tokenizer.padding_side = "left"
    generated, elapsed, first_cache = 0, 0.0, None
    for start in range(0, len(sources), batch_size):
        batch = [s + tokenizer.eos_token for s in sources[start : start + batch_size]]
        inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        began = time.perf_counter()
        out = model.generate(
            **inputs, num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens,
            return_dict_in_generate=True,
        )  # fmt: skip
        elapsed += time.perf_counter() - began
        sequences = out.sequences[:, 1:]
        generated += int((sequences != tokenizer.pad_token_id).sum())
        if first_cache is None:
            first_cache = cache_bytes(out.past_key_values)
    return generated / elapsed, first_cache


def train_one(name: str, model: PreTrainedModel, tokenizer, tokenized: DatasetDict, raw: DatasetDict,
              training_args: Seq2SeqTrainingArguments, model_args: ModelArguments, data_args: DataArguments) -> dict:  # fmt: skip
    bleu, chrf = load_metric("sacrebleu"), load_metric("chrf")

    def compute_metrics(prediction) -> dict:
        ids = prediction.predictions
        ids = [[t for t in row if t >= 0] for row in ids.tolist()]
        predictions = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        references = list(raw["test"][data_args.target_column])[: len(predictions)]
        return {
            "bleu": bleu.compute(predictions=predictions, references=references)["bleu"],
            "chrf": chrf.compute(predictions=predictions, references=references)["chrf"],
        }

    args = Seq2SeqTrainingArguments(
        **{**training_args.to_dict(), "output_dir": str(Path(training_args.output_dir, name))}
    )
    args.generation_num_beams = model_args.num_beams
    tokenizer.padding_side = "right"
    trainer = Seq2SeqTrainer(
        model=model, args=args, train_dataset=tokenized["train"], processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        compute_metrics=compute_metrics,
    )  # fmt: skip
    train = trainer.train().metrics
    seen = args.max_steps * args.per_device_train_batch_size
    lengths = tokenized["train"].map(
        lambda r: {"n": len(r["input_ids"]) + len(r["labels"])}, remove_columns=["input_ids", "labels"]
    )
    mean_tokens = sum(lengths["n"]) / len(lengths)
    test = trainer.predict(tokenized["test"], metric_key_prefix="test").metrics
    sources = list(raw["test"][data_args.source_column])[: model_args.speed_samples]
    speed1, cache1 = generation_speed(model, tokenizer, sources[:8], 1, model_args.num_beams, 64)
    speed16, cache16 = generation_speed(model, tokenizer, sources, 16, model_args.num_beams, 64)
    tokenizer.padding_side = "right"
    folder = Path(training_args.output_dir, name)
    trainer.save_model(str(folder))
    result = {
        "model": type(model).__name__,
        "parameters": count_parameters(model),
        "steps": args.max_steps,
        "test_bleu": round(test["test_bleu"], 2),
        "test_chrf": round(test["test_chrf"], 2),
        "test_loss": round(test["test_loss"], 4),
        "train_loss": round(train["train_loss"], 4),
        "train_seconds": round(train["train_runtime"], 1),
        "train_tokens_per_second": round(seen * mean_tokens / train["train_runtime"], 1),
        "generate_tokens_per_second_batch1": round(speed1, 1),
        "generate_tokens_per_second_batch16": round(speed16, 1),
        "cache_bytes_batch1": cache1,
        "cache_bytes_batch16": cache16,
    }
    return result


def translate(model_args: ModelArguments) -> str:
    if not model_args.model_name_or_path:
        raise ValueError("--translate needs --model_name_or_path (a folder this script saved).")
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_args.model_name_or_path, trust_remote_code=True).eval()
    inputs = tokenizer(model_args.translate + tokenizer.eos_token, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, num_beams=model_args.num_beams, max_new_tokens=128)
    return tokenizer.decode(output[0], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, Seq2SeqTrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if model_args.translate is not None:
        text = translate(model_args)
        print(text)
        return {"translation": text}
    names = [n.strip() for n in model_args.models.split(",") if n.strip()]
    if not names or any(n not in MODELS for n in names):
        raise ValueError(f"--models must be a comma-separated subset of {list(MODELS)}, got {model_args.models!r}.")
    command = shlex.join(["python", "examples/train_translation.py", *(sys.argv[1:] if argv is None else argv)])
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    output_dir = Path(training_args.output_dir)
    set_seed(training_args.seed)
    raw = load_raw(data_args, output_dir)
    texts = list(raw["train"][data_args.source_column]) + list(raw["train"][data_args.target_column])
    tokenizer = train_bpe_tokenizer(texts, vocab_size=model_args.vocab_size)
    tokenized = tokenize(raw, tokenizer, data_args)
    results, parameters = {}, None
    for name in names:
        set_seed(training_args.seed)
        model = hybrid_model(model_args, tokenizer)
        parameters = parameters or count_parameters(model)
        if name == "marian":
            model = marian_model(model_args, tokenizer, parameters)
        print(f"{name}: {type(model).__name__}, {count_parameters(model):,} parameters", flush=True)
        results[name] = train_one(name, model, tokenizer, tokenized, raw, training_args, model_args, data_args)
        print(json.dumps({name: results[name]}), flush=True)
        folder = output_dir / name
        write_model_card(
            folder, title=f"{type(model).__name__} es->en (Bible verses)",
            summary=f"A {results[name]['parameters']:,}-parameter Spanish-to-English translator trained from scratch.",
            metrics={k: v for k, v in results[name].items() if k != "model"}, command=command,
            pipeline_tag="translation", dataset="Reina-Valera 1909 / World English Bible verses (public domain)",
            usage=(
                "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n"
                f"tokenizer = AutoTokenizer.from_pretrained({str(folder)!r})\n"
                f"model = AutoModelForSeq2SeqLM.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
                "inputs = tokenizer('Dios es amor.' + tokenizer.eos_token, return_tensors='pt', add_special_tokens=False)\n"
                "print(tokenizer.decode(model.generate(**inputs)[0], skip_special_tokens=True))"
            ),
            hyperparameters={**asdict(model_args), "max_steps": training_args.max_steps,
                             "batch_size": training_args.per_device_train_batch_size,
                             "learning_rate": training_args.learning_rate},
        )  # fmt: skip
    (output_dir / "results.json").write_text(json.dumps({"command": command, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
