"""``trt-restore bench``: quality and speed per method, task and backend (:mod:`trt_restore.bench`)."""

from __future__ import annotations

from ..bench import add_bench_arguments, run_bench
from .parser import Subcommand

COMMAND = Subcommand("bench", "measure quality and speed per method, task and backend", add_bench_arguments, run_bench)
