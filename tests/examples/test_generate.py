"""examples/generate.py against direct `model.generate` calls on a tiny saved causal LM."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_gru import HybridGRUForCausalLM
from hf_gru.tasks.text import train_bpe_tokenizer
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory) -> Path:
    """A tiny randomly initialised HybridGRU LM with a BPE tokenizer, saved as a Hub-style folder."""
    folder = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = train_bpe_tokenizer(["the cat sat on the mat and the dog sat on the log"] * 20, vocab_size=300)
    config = tiny_config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    HybridGRUForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def direct_greedy(folder: Path, prompt: str, max_new_tokens: int) -> str:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, min_new_tokens=0)
    return tokenizer.decode(output[0], skip_special_tokens=True)


def test_greedy_matches_generate(generate_example, lm_folder):
    texts = generate_example.main(["--model", str(lm_folder), "--prompt", "the cat", "--max_new_tokens", "6"])
    assert texts == [direct_greedy(lm_folder, "the cat", 6)]


def test_batched_prompts_equal_single_runs(generate_example, lm_folder):
    """Two prompts of different lengths run as one left-padded batch give each prompt's own continuation."""
    prompts = ["the cat", "a dog sat on the"]
    batched = generate_example.main(["--model", str(lm_folder), "--prompt", *prompts, "--max_new_tokens", "5"])
    assert batched == [direct_greedy(lm_folder, prompt, 5) for prompt in prompts]


def test_decoding_options(generate_example, lm_folder):
    base = ["--model", str(lm_folder), "--prompt", "the cat", "--max_new_tokens", "5"]
    sample = ["--do_sample", "--temperature", "0.8", "--top_k", "20", "--top_p", "0.9", "--seed", "3"]
    assert generate_example.main([*base, *sample]) == generate_example.main([*base, *sample])  # seeded
    beams = generate_example.main([*base, "--num_beams", "3", "--num_return_sequences", "2"])
    assert len(beams) == 2 and all(text.startswith("the cat") for text in beams)
    static = generate_example.main([*base, "--cache_implementation", "static"])
    assert static == generate_example.main(base)
    penalised = generate_example.main([*base, "--repetition_penalty", "1.5"])
    assert penalised[0].startswith("the cat")


@pytest.mark.parametrize(
    "flag, value", [("--temperature", "0"), ("--top_p", "1.5"), ("--max_new_tokens", "0"), ("--dtype", "int8")]
)
def test_bad_options_are_value_errors(generate_example, lm_folder, flag, value):
    with pytest.raises(ValueError, match=value):
        generate_example.main(["--model", str(lm_folder), flag, value])
