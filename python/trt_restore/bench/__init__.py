"""The benchmark harness behind ``trt-restore bench``: restoration quality and speed in one run.

Quality: PSNR and SSIM (LPIPS where its weights are supplied) of every method on every task
it supports, per data set, next to the trivial baseline: the degraded input itself, or for
super-resolution its bicubic upsampling. Metrics are on full images in [0, 1] (no border
crop unless ``--crop``); ground truths are cropped to a multiple of the SR factor.

Speed: every variant (backend × precision) runs the same method on the same observation in
the same process, repeats interleaved round-robin so that load drift hits all alike. Per run:
end-to-end wall time, each component's and each pipeline stage's time (``Models.timings``),
host↔device copies on a GPU, and the rest ("glue": Python, operator setup, tensor maths
between calls). Reported: p50/p95, images/s at batch 1 and the best batch, the ratio to
torch eager, and memory (resident set size on the CPU, torch's CUDA allocator on a GPU).

The results go to one JSON file; :func:`render_markdown` and the plots read only that JSON.
Module-level imports stay light so that ``trt-restore --help`` is fast; torch and the
backends are imported where they are used.
"""

from __future__ import annotations

from .config import TASK_SETTINGS, BenchConfig, Variant
from .harness import Harness, run_benchmarks
from .report import render_markdown

__all__ = [
    "TASK_SETTINGS",
    "BenchConfig",
    "Harness",
    "Variant",
    "render_markdown",
    "run_benchmarks",
]
