"""hf_gru.tasks.text: the byte-level BPE tokenizer and block grouping used by the causal LM example."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_gru.tasks.text import EOS_TOKEN, PAD_TOKEN, group_texts, train_bpe_tokenizer
from tests.examples.lm_testing import CORPUS

LINES = CORPUS.read_text().splitlines(keepends=True)[:1500]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(LINES, vocab_size=600)


def test_special_tokens_and_vocabulary(tokenizer):
    assert len(tokenizer) == 600
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (EOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1)
    assert tokenizer("Mr. Darcy")["input_ids"] == tokenizer.encode("Mr. Darcy")  # no special tokens added


def test_training_is_deterministic(tokenizer):
    """Every DDP rank trains its own copy, so two trainings on the same text must give the same tokenizer."""
    again = train_bpe_tokenizer(LINES, vocab_size=600)
    assert again.get_vocab() == tokenizer.get_vocab()
    text = "".join(LINES[:40])
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]


@settings(max_examples=25, deadline=None)
@given(text=st.text(min_size=1, max_size=60))
def test_any_unicode_text_round_trips(tokenizer, text):
    """Byte-level BPE: no unknown token, decode(encode(text)) == text for any string."""
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_saved_tokenizer_reloads_identically(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "".join(LINES[100:130])
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (reloaded.eos_token_id, reloaded.pad_token_id) == (0, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"vocab_size": 100}, "`vocab_size` must be at least 258"), ({"min_frequency": 0}, "`min_frequency` must be")],
)
def test_bad_tokenizer_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_bpe_tokenizer(LINES[:10], **kwargs)


def test_empty_corpus_and_non_strings_are_rejected():
    with pytest.raises(ValueError, match="corpus is empty"):
        train_bpe_tokenizer(["", "  \n"], vocab_size=300)
    with pytest.raises(ValueError, match="must be strings, got int"):
        train_bpe_tokenizer(["fine", 7], vocab_size=300)


def test_group_texts_concatenates_and_cuts_blocks():
    rows = {"input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]], "attention_mask": [[1] * 3, [1] * 2, [1] * 6]}
    blocks = group_texts(rows, block_size=4)
    assert blocks["input_ids"] == [[1, 2, 3, 4], [5, 6, 7, 8]]  # 11 tokens: the last 3 are dropped
    assert blocks["labels"] == blocks["input_ids"] and blocks["labels"][0] is not blocks["input_ids"][0]
    assert blocks["attention_mask"] == [[1] * 4, [1] * 4]
    assert group_texts({"input_ids": [[1, 2]]}, block_size=4) == {"input_ids": [], "labels": []}
    with pytest.raises(ValueError, match="`block_size` must be a positive integer, got 0"):
        group_texts(rows, block_size=0)
