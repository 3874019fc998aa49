"""examples/train_causal_lm.py on two CPU processes (DDP over gloo) under torchrun and accelerate launch, against one
process with the same global batch; and FSDP2 sharding of HybridGRU on CPU."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.examples.lm_testing import REPO, SCRIPT, losses, tiny_argv

pytestmark = pytest.mark.slow  # each case starts 2-3 Python processes that import torch and transformers

STEPS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def argv(work: Path, name: str, per_device_batch: int) -> list[str]:
    # One checkpoint (save_steps = max_steps) and an evaluation set that splits evenly over two ranks.
    return tiny_argv(
        work, work / name, max_steps=STEPS, save_steps=STEPS, eval_steps=3, max_eval_samples=32,
        per_device_train_batch_size=per_device_batch,
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    work = tmp_path_factory.mktemp("ddp")
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    commands = {
        "single": [sys.executable, str(SCRIPT), *argv(work, "single", 4)],
        "torchrun": [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
            str(SCRIPT), *argv(work, "torchrun", 2),
        ],
        "accelerate": [
            *accelerate, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            str(SCRIPT), *argv(work, "accelerate", 2),
        ],
        "accelerate-config": [
            *accelerate, "--config_file", str(REPO / "configs" / "accelerate" / "ddp.yaml"), "--main_process_port",
            str(free_port()), str(SCRIPT), *argv(work, "accelerate-config", 2),
        ],
    }  # fmt: skip
    return work, {name: run(command) for name, command in commands.items()}


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate", "accelerate-config"])
def test_two_ranks_match_one_process_with_the_same_global_batch(runs, launcher):
    work, results = runs
    stdout = results[launcher].stdout
    assert "[rank 0/2] device cpu" in stdout and "[rank 1/2] device cpu" in stdout  # two ranks, both training
    single, ranks = work / "single", work / launcher
    reference, distributed = losses(single), losses(ranks)
    assert sorted(distributed) == list(range(1, STEPS + 1))
    for step, loss in reference.items():  # same examples per step: rank r takes every other per-device batch
        assert distributed[step] == pytest.approx(loss, abs=1e-4), step
    single_metrics = json.loads((single / "all_results.json").read_text())
    metrics = json.loads((ranks / "all_results.json").read_text())
    assert metrics["world_size"] == 2 and single_metrics["world_size"] == 1
    assert metrics["eval_loss"] == pytest.approx(single_metrics["eval_loss"], abs=1e-4)
    a, b = load_file(single / "model.safetensors"), load_file(ranks / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate", "accelerate-config"])
def test_exactly_one_checkpoint_holding_both_ranks_rng_states(runs, launcher):
    work, _ = runs
    checkpoints = sorted(p.name for p in (work / launcher).glob("checkpoint-*"))
    assert checkpoints == [f"checkpoint-{STEPS}"]
    saved = {p.name for p in (work / launcher / checkpoints[0]).iterdir()}
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json", "rng_state_0.pth", "rng_state_1.pth"} <= saved
    assert not any(name.startswith("rng_state_2") for name in saved)


def test_accelerate_cpu_flag_with_two_processes_is_refused(tmp_path):
    """accelerate 1.15 starts ONE process for `--cpu --num_processes 2` (its multi-CPU path needs mpirun): the script
    says so instead of training alone."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), *argv(tmp_path, "out", 2),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "started this script as ONE process" in result.stderr and "--multi_gpu" in result.stderr
    assert not (tmp_path / "out").exists()


def test_fsdp2_shards_hybrid_gru_on_cpu_and_matches_unsharded_training(tmp_path):
    out = tmp_path / "fsdp.json"
    worker = Path(__file__).with_name("fsdp_cpu_worker.py")
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(worker), str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["world"] == 2
    gru_weight = "model.layers.0.mixer.hidden_proj.weight"
    rows, cols = report["full_shapes"][gru_weight]
    assert report["local_shapes"][gru_weight] == [rows // 2, cols]  # each rank holds half of the GRU weights
    assert report["losses"] == pytest.approx(report["reference_losses"], abs=1e-5)
    assert report["max_weight_difference"] < 1e-5
