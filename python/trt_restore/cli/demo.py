"""``trt-restore demo``: every method on sample images with the bundled models (:mod:`trt_restore.demo`)."""

from __future__ import annotations

from ..demo import add_demo_arguments, run_demo
from .parser import Subcommand

COMMAND = Subcommand(
    "demo", "restore sample images with every method on the bundled models (offline)", add_demo_arguments, run_demo
)
