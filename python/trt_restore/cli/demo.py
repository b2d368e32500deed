"""``trt-restore demo``: every method on sample images with the bundled models (:mod:`trt_restore.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import demo
from .parser import Subcommand


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``trt-restore demo``."""
    parser.add_argument("--out", type=Path, required=True, help="folder for contact_sheet.png and results.json")
    parser.add_argument("--quick", action="store_true", help="one small case with a few steps per method (a smoke test)")
    parser.add_argument("--model-set", default="bundled", help="model set name or folder (default: bundled)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the observation noise and the samplers (default 0)")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch (default 1: the demo is small, and one thread never oversubscribes a shared machine)"
    )


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``trt-restore demo``: restore the demo cases and write the contact sheet."""
    demo.run_demo(args.out, quick=args.quick, model_set=args.model_set, seed=args.seed, threads=args.threads)
    return 0


COMMAND = Subcommand(
    "demo", "restore sample images with every method on the bundled models (offline)", add_demo_arguments, run_demo
)
