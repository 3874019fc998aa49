"""Held-out perplexity (hf_gru.tasks.perplexity): the blocks are the ones examples/train_causal_lm.py trains and evaluates
on, and perplexity is exp of the model's own mean loss, from a module or from a `step()` runtime alike."""

import math

import pytest
import torch

from hf_gru import HybridGRUForCausalLM
from hf_gru.tasks.perplexity import perplexity, text_blocks
from hf_gru.tasks.text import train_bpe_tokenizer
from tests.examples.lm_testing import load_script, write_tiny_data
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory):
    # more than 1000 lines per split: the script groups 1000 rows at a time
    corpus, _ = write_tiny_data(tmp_path_factory.mktemp("corpus"), train_lines=2500, valid_lines=1)
    return corpus, train_bpe_tokenizer(corpus.read_text().splitlines(), vocab_size=300)


def test_text_blocks_are_the_training_script_splits(corpus_and_tokenizer):
    corpus, tokenizer = corpus_and_tokenizer
    script = load_script()
    data_args = script.DataArguments(train_file=str(corpus), block_size=16)
    raw = script.load_raw_datasets(data_args, script.ModelArguments())
    train_set, eval_set = script.tokenize_and_group(raw, tokenizer, data_args, tiny_config())
    assert text_blocks(tokenizer, corpus, 16).tolist() == eval_set["input_ids"]
    assert text_blocks(tokenizer, corpus, 16, split="train").tolist() == train_set["input_ids"]


def test_perplexity_is_exp_of_the_model_loss_for_modules_and_step_runtimes():
    model = HybridGRUForCausalLM(tiny_config()).eval()
    blocks = torch.randint(3, 99, (5, 12))
    with torch.no_grad():
        expected = math.exp(model(input_ids=blocks, labels=blocks).loss.item())

    class StepRuntime:  # the OnnxCausalLM interface: step(input_ids) -> (logits, state)
        def step(self, input_ids):
            with torch.no_grad():
                return model(input_ids=input_ids).logits, None

    assert perplexity(model, blocks, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert perplexity(StepRuntime(), blocks, batch_size=3) == pytest.approx(expected, rel=1e-5)


def test_text_blocks_rejects_bad_input(corpus_and_tokenizer, tmp_path):
    corpus, tokenizer = corpus_and_tokenizer
    with pytest.raises(ValueError, match="missing.txt"):
        text_blocks(tokenizer, tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="split must be one of"):
        text_blocks(tokenizer, corpus, split="test")
    with pytest.raises(ValueError, match="block_size=100000"):
        text_blocks(tokenizer, corpus, block_size=100000)
