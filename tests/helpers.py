"""Shared test helpers: tiny seeded configs and a Python subprocess in which hf_gru cannot be imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from hf_gru import HybridGRUConfig

REPO = Path(__file__).resolve().parents[1]  # the repository root

# Run first in the child: makes `import hf_gru` fail even with an editable install, so only the remote code
# saved next to a checkpoint can define the model.
_BLOCK_HF_GRU = "import sys; sys.modules['hf_gru'] = None\n"


def tiny_config(**overrides) -> HybridGRUConfig:
    """A tiny float32 config (vocab 99, width 32, 3 layers, GQA 4/2 heads), as transformers' model testers use."""
    values = dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    values.update(overrides)
    return HybridGRUConfig(**values)


def run_without_hf_gru(code: str, cwd: Path, timeout: int = 300) -> dict:
    """Runs `code` in a fresh `python -I` where hf_gru is not importable; the code prints one JSON line, returned."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HF_HOME"] = str(cwd / "hf_home")  # remote code lands in a private modules cache
    env["HF_HUB_OFFLINE"] = "1"
    probe = "try:\n    import hf_gru\n    raise SystemExit('hf_gru is importable in the clean process')\nexcept ImportError:\n    pass\n"
    result = subprocess.run(
        [sys.executable, "-I", "-c", _BLOCK_HF_GRU + probe + code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"clean subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5, msg: str = "") -> None:
    """assert_close that reports max and mean absolute differences."""
    diff = (actual.float() - expected.float()).abs()
    assert diff.max() <= atol, f"{msg} max abs diff {diff.max().item():.3e} (mean {diff.mean().item():.3e}) > {atol}"


# A word-piece vocabulary for a tiny BERT teacher (issue 11's encoder distillation): special tokens first, as BERT's.
TINY_BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "##s", "##ed", "##ing"] + (
    "the a and of to was she he her his it that in not be had for with my mr mrs miss elizabeth darcy letter "
    "tea coffee snack taste great good bad stale box love would very much one".split()
)


def tiny_bert_teacher(folder: Path, seed: int = 0):
    """A tiny random `BertModel` (width 32, 2 layers) and its word-piece tokenizer, both saved in `folder`."""
    from transformers import BertConfig, BertModel, BertTokenizer

    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(TINY_BERT_WORDS)})
    config = BertConfig(
        vocab_size=len(TINY_BERT_WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    teacher = BertModel(config, add_pooling_layer=False).eval()
    teacher.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return teacher, tokenizer
