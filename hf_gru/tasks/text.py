"""Text helpers: a byte-level BPE tokenizer trained with `tokenizers`, chunking for language models, and classifiers
built with their label maps.

Nothing here is needed to load a saved checkpoint: a trained tokenizer is saved as a plain `tokenizer.json` that
`AutoTokenizer` reads without hf_gru.
"""

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..models.hybrid_gru.configuration_hybrid_gru import HybridGRUConfig

# GPT-2's convention: one token marks both ends of a document. Padding gets its own token so that a padded position
# is never confused with a real end of text (generation stops on eos, and attention masks are built from pad).
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2, model_max_length: int = 2048
) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE tokenizer (as GPT-2's: any UTF-8 text encodes, no unknown token) on `texts`.

    Returns it wrapped as a `PreTrainedTokenizerFast` with bos = eos = `<|endoftext|>` and pad = `<|pad|>`, the
    special tokens taking ids 0 and 1. Training is deterministic for the same texts and settings.
    """
    special_tokens = [EOS_TOKEN, PAD_TOKEN]
    min_size = len(special_tokens) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < min_size:
        raise ValueError(f"`vocab_size` must be at least {min_size} (256 bytes + special tokens), got {vocab_size}.")
    if min_frequency < 1:
        raise ValueError(f"`min_frequency` must be at least 1, got {min_frequency}.")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_non_empty(texts), trainer=trainer)
    if tokenizer.get_vocab_size() <= min_size:
        raise ValueError("The tokenizer training corpus is empty: no text to learn merges from.")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
    )


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"Tokenizer training texts must be strings, got {type(text).__name__}: {text!r:.80}.")
        if text.strip():
            yield text


def group_texts(examples: dict[str, list], block_size: int) -> dict[str, list]:
    """Concatenates tokenized rows and cuts them into blocks of `block_size` tokens, for causal LM training.

    A `datasets.map(batched=True)` function: takes columns of token lists (`input_ids`, `attention_mask`, ...) and
    returns the same columns in blocks plus `labels` (a copy of `input_ids`; the model shifts them). The remainder
    shorter than a block is dropped, as in transformers' `run_clm.py`.
    """
    if block_size <= 0:
        raise ValueError(f"`block_size` must be a positive integer, got {block_size}.")
    concatenated = {key: [token for row in rows for token in row] for key, rows in examples.items()}
    total = len(next(iter(concatenated.values()), []))
    total = (total // block_size) * block_size
    blocks = {
        key: [tokens[i : i + block_size] for i in range(0, total, block_size)] for key, tokens in concatenated.items()
    }
    blocks["labels"] = [list(block) for block in blocks["input_ids"]]
    return blocks


__all__ = ["EOS_TOKEN", "PAD_TOKEN", "train_bpe_tokenizer", "group_texts"]


def build_classifier(
    auto_class: type,
    tokenizer: PreTrainedTokenizerBase,
    labels: list[str],
    *,
    model_name_or_path: str | None = None,
    config_name: str | None = None,
    trust_remote_code: bool = False,
    **config_kwargs,
) -> PreTrainedModel:
    """A sequence- or token-classification model (`auto_class`, e.g. `AutoModelForSequenceClassification`) with the
    label maps of `labels`: fine-tuned from `model_name_or_path`, or built fresh from `config_name` or from a
    `HybridGRUConfig(**config_kwargs)`, with the tokenizer's vocabulary size and special token ids."""
    label_maps = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    if model_name_or_path is not None:
        return auto_class.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code, **label_maps)
    special_ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if config_name is not None:
        config = AutoConfig.from_pretrained(config_name, **special_ids, **label_maps)
    else:
        config = HybridGRUConfig(**config_kwargs, **special_ids, **label_maps)
    return auto_class.from_config(config)
