#!/usr/bin/env bash
# The benchmark suite on one GPU in bf16, quick sizes, plus the CUDA equivalence tests; about 5 minutes on an H100.
#
#     bash benchmarks/gpu_suite.sh                    # on a CUDA machine, from the repository root
#     DEVICE=cpu DTYPE=float32 TINY=1 THREADS=1 LIMIT=900 bash benchmarks/gpu_suite.sh   # CPU dry run
#
# Wheels: if .gpuwhl/ holds wheels (e.g. transformers 5.24 for a machine that has an older one), they are installed
# into /tmp/site first, without the network. Tables go to stdout and, with the JSON files, to $OUT (default
# /tmp/gpu_suite).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_suite}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".gpuwhl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpuwhl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"; } \
    | tee "$OUT/machine.txt"
python3 -c "import torch, transformers, hf_gru; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/machine.txt" || exit 1

if [ "${TINY:-0}" = 1 ]; then  # dry run: the smallest sizes that still exercise every code path
    TRAIN="--quick"; DECODE="--quick --batches 1"; MEMORY="--quick"; SCAN="--quick"
else
    TRAIN="--seqs 1024,4096 --reps 5"
    DECODE="--contexts 1024,8192 --batch8-contexts 1024 --reps 5"
    MEMORY="--contexts 1024,4096,8192 --seqs 1024,4096 --batch 8"
    SCAN="--lengths 1024,4096 --reps 5"
fi
COMMON="--device $DEVICE --dtype $DTYPE --threads ${THREADS:-2}"

step() {  # step NAME LIMIT_SECONDS COMMAND...: runs, tees to $OUT/NAME.txt, never stops the suite
    local name=$1 limit=$2; shift 2
    echo "== $name: $*"
    timeout "${LIMIT:-$limit}" "$@" 2>&1 | tee "$OUT/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}"
}
step tests 90 python3 -m pytest tests/models/hybrid_gru/test_recurrence_hybrid_gru.py -q -p no:cacheprovider
step scan_kernels 60 python3 benchmarks/scan_kernels.py --device "$DEVICE" $SCAN --json "$OUT/scan_kernels.json"
step train 100 python3 benchmarks/train_throughput.py $COMMON $TRAIN --json "$OUT/train.json"
step decode 80 python3 benchmarks/decode_latency.py $COMMON $DECODE --json "$OUT/decode.json"
step memory 60 python3 benchmarks/memory.py $COMMON $MEMORY --json "$OUT/memory.json"
