#!/usr/bin/env sh
# CPU benchmarks with the bundled models: the README's quality table (Set5, Set14, set3c;
# Set12 and BSD68 in gray) and the speed comparison of torch eager, onnxruntime, fp32 and fp16.
# Extra flags are passed on, e.g. `benchmarks/cpu.sh --threads 1 --limit 2`.
set -e
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec "$PY" benchmarks/run.py --model-set bundled \
    --variants torch,onnxruntime,torch-fp16,onnxruntime-fp16 \
    --datasets Set5,Set14,set3c,Set12,BSD68 "$@"
