"""Training-step time of the main job's model (configs/hybrid-gru-tiny, batch 16 x 128) with 1 and 2 intra-op
threads, in one process; prints each and the ratio. Why quickstart.sh sets OMP_NUM_THREADS=1.

    python benchmarks/train_step_threads.py [--steps 6] [--rounds 2]
"""

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hf_gru  # noqa: F401

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "hybrid-gru-tiny"


def step_times(model, optimizer, batch: torch.Tensor, threads: int, steps: int) -> tuple[float, float]:
    """Median wall and CPU seconds of a forward + backward + AdamW step, after one warm-up step."""
    torch.set_num_threads(threads)
    wall, cpu = [], []
    for _ in range(steps + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return sorted(wall[1:])[steps // 2], sorted(cpu[1:])[steps // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="alternate 1 and 2 threads this many times")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(CONFIG))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = torch.randint(0, model.config.vocab_size, (16, 128))
    for _ in range(args.rounds):
        (one, one_cpu), (two, two_cpu) = (step_times(model, optimizer, batch, n, args.steps) for n in (1, 2))
        print(f"1 thread: {one * 1e3:.0f} ms ({one_cpu * 1e3:.0f} CPU-ms); 2 threads: {two * 1e3:.0f} ms "
              f"({two_cpu * 1e3:.0f} CPU-ms); 2-thread / 1-thread wall ratio {two / one:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
