#!/usr/bin/env bash
# The GPU checks of issue 21 in one command, for a session lent a CUDA machine (about 8 minutes on an H100/H200):
#   bash bench/gpu_check.sh            # the CUDA tests, then the speed bench on CUDA with the quality table
#   DEVICE=cpu SIZES=tiny PATCHES=2 bash bench/gpu_check.sh   # the rehearsal on the CPU (tests skip their CUDA cases)
# Output: the tests' summary, then the bench's table (chars/s, bars/s and the launch/bandwidth limit for each size,
# batch 1 and 8, short and ~1000-patch context) and the bf16 / fp16 agreement with fp32 on the fixtures.
# With OUT set (the device runner's $OUT), the bench's markdown goes to $OUT/performance_gpu.md.
# PY: a Python whose torch is a CUDA build (the project's .venv holds a CPU-only torch). The fixtures come from
# SHARED_DIR, else ./shared (what the device runner copies), else ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ -z "${SHARED_DIR:-}" ]; then
    if [ -d shared ]; then SHARED_DIR=$PWD/shared; else SHARED_DIR=$(cd .. && pwd)/shared; fi
fi
export SHARED_DIR
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-tiny,NotaGen-small,NotaGen-medium,NotaGen-large/X}
PATCHES=${PATCHES:-16}
if [ "$DEVICE" = cuda ]; then WEIGHTS=${WEIGHTS:-bf16,fp16,fp32}; else WEIGHTS=${WEIGHTS:-fp32,bf16,int8}; fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
"$PY" -m pytest tests/test_notagen_device.py tests/test_notagen_model.py -q -x -p no:cacheprovider
WRITE=()
if [ -n "${OUT:-}" ]; then WRITE=(--write "$OUT/performance_gpu.md"); fi
"$PY" bench/notagen_speed.py --device "$DEVICE" --sizes "$SIZES" --weights "$WEIGHTS" --patches "$PATCHES" \
    --baseline-patches 0 --threads "${THREADS:-4}" --quality --corpus-pieces "${CORPUS_PIECES:-0}" "${WRITE[@]}"
