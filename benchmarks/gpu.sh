#!/usr/bin/env sh
# GPU benchmarks with the bundled models: quality on TensorRT fp16, and every backend
# (torch eager, onnxruntime CUDA, TensorRT; fp32 and fp16) side by side, with the size and
# batch sweeps. Needs `pip install -e .[gpu]` (or tensorrt-rtx on an RTX GPU).
set -e
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec "$PY" benchmarks/run.py --model-set bundled \
    --variants torch,onnxruntime,tensorrt,torch-fp16,onnxruntime-fp16,tensorrt-fp16 \
    --quality-variant tensorrt-fp16 --datasets Set5,Set14,set3c,Set12,BSD68 \
    --batches 1,2,4,8,16 --scaling "$@"
