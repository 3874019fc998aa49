"""Shared fixtures-by-function for the tests of examples/train_causal_lm.py: tiny corpus, tiny config, argv."""

import importlib.util
import json
import site
import subprocess
import sys
from functools import cache
from pathlib import Path

from hf_gru import HybridGRUConfig

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_causal_lm.py"
CORPUS = REPO / "data" / "austen" / "prideprejudice.txt"


@cache
def load_script():
    """examples/train_causal_lm.py as a module, so tests call its `main(argv)` in-process."""
    spec = importlib.util.spec_from_file_location("train_causal_lm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_data(folder: Path, train_lines: int = 600, valid_lines: int = 150) -> tuple[Path, Path]:
    """The first lines of the bundled novel as train.txt and the lines right after as valid.txt."""
    lines = CORPUS.read_text().splitlines(keepends=True)
    folder.mkdir(parents=True, exist_ok=True)
    train, valid = folder / "train.txt", folder / "valid.txt"
    train.write_text("".join(lines[:train_lines]))
    valid.write_text("".join(lines[train_lines : train_lines + valid_lines]))
    return train, valid


def write_tiny_config(folder: Path, **overrides) -> Path:
    """A config folder like configs/*, but with a model small enough for a few-second test run."""
    spec = dict(
        vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        block_pattern="GGA", gru_variant="mingru", max_position_embeddings=128,
    )  # fmt: skip
    spec.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    HybridGRUConfig(**spec).to_json_file(folder / "config.json")
    return folder


def tiny_argv(work: Path, output_dir: Path, **overrides) -> list[str]:
    """Arguments for a run of a few steps on the tiny corpus; `overrides` replace or add `--name value` pairs."""
    train, valid = work / "train.txt", work / "valid.txt"
    if not train.is_file():
        write_tiny_data(work)
    config = work / "config"
    if not (config / "config.json").is_file():
        write_tiny_config(config)
    args = {
        "train_file": train, "validation_file": valid, "config_name": config, "output_dir": output_dir,
        "cache_dir": work / "cache", "tokenizer_vocab_size": 384, "block_size": 32, "max_steps": 4,
        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "max_eval_samples": 16,
        "eval_steps": 2, "save_steps": 2, "logging_steps": 1, "learning_rate": 1e-2, "warmup_steps": 0,
        "sample_max_new_tokens": 8, "dataloader_pin_memory": False, "disable_tqdm": True,
    }  # fmt: skip
    args.update(overrides)
    argv = []
    for name, value in args.items():
        if value is None:
            continue
        argv += [f"--{name}", str(value)]
    return argv


def losses(output_dir: Path) -> dict[int, float]:
    """Training loss per step from the Trainer state saved in output_dir (or a checkpoint)."""
    history = json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def run_without_hf_gru(code: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Runs `code` in a Python where hf_gru cannot be imported.

    `-S` skips the site module, so the editable install's .pth file and import finder are never processed; the
    site-packages folders are then put on sys.path as plain folders (which makes transformers importable, but not the
    editable hf_gru, whose source lives in the repo). `-I` drops PYTHONPATH and the script folder; cwd is outside the
    repo. The code asserts that `import hf_gru` fails before it does anything else.
    """
    prelude = (
        "import sys\n"
        f"sys.path.extend({site.getsitepackages()!r})\n"
        "try:\n"
        "    import hf_gru\n"
        "except ModuleNotFoundError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit(f'hf_gru is importable from {hf_gru.__file__}; the test would prove nothing')\n"
    )
    return subprocess.run(
        [sys.executable, "-S", "-I", "-c", prelude + code], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
