#!/usr/bin/env sh
# The CPU backends side by side, bundled models, every method end to end: torch eager fp32
# (what users run), torch with bf16 autocast, onnxruntime, and OpenVINO in fp32 and bf16,
# same models and threads, 256×256 output, batch 1. One run per method (its JSON is kept
# even if a later method fails), then the merged report. Needs `pip install -e .[openvino]`.
# Extra flags are passed on, e.g. `benchmarks/cpu_backends.sh --size 512` or `--threads 2`.
set -e
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/cpu/backends
for method in ldm-sr indigo-latent ddrm-ldm ddrm indigo-pixel reld; do
    "$PY" benchmarks/run.py --model-set bundled --sections speed --methods "$method" \
        --variants torch,torch-bf16,onnxruntime,openvino,openvino-bf16 \
        --batches 1 --repeats 2 --steps 5 --threads 1 \
        --json "$OUT/$method.json" --report-dir "${TMPDIR:-/tmp}/trt-restore-bench-$method" --no-plots "$@" || echo "$method: failed, see above"
done
"$PY" benchmarks/run.py --from-json "$OUT"/*.json --report-dir "$OUT"
