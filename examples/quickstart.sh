#!/usr/bin/env bash
# README quick start, command 1: sets up a virtual environment and runs the main job end to end.
#
#     bash examples/quickstart.sh                    # extra arguments go to examples/train_causal_lm.py
#
# Creates .venv if it is missing (HF_GRU_VENV names another), installs torch and hf_gru with the example extras,
# then trains a byte-level BPE tokenizer and configs/hybrid-gru-tiny on the bundled Austen novel (data/austen/),
# evaluates it (validation loss and perplexity), prints a generated sample and saves a Hub-ready folder in
# outputs/hybrid-gru-austen/ (replaced on every run). The training takes a few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${HF_GRU_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
. "$VENV/bin/activate"
echo "installing torch and hf_gru[examples] into $VENV"
python -m pip install -q torch==2.13.0        # the CPU wheel here; on a GPU machine install your CUDA build first
python -m pip install -q -e ".[examples]"

export TOKENIZERS_PARALLELISM=false
# One intra-op thread unless told otherwise: the tiny model's tensors are small, and on a busy machine two threads
# spin while they wait (benchmarks/train_step_threads.py compares). OMP_NUM_THREADS=2 overrides.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
start=$SECONDS
python examples/train_causal_lm.py --output_dir outputs/hybrid-gru-austen --overwrite_output_dir "$@"
echo "main job: $((SECONDS - start)) s"
