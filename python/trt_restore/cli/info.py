"""``trt-restore info``: what a ``.plan`` bundle holds, and whether this machine can run it."""

from __future__ import annotations

import argparse
from pathlib import Path

from .parser import Subcommand

EXIT_CANNOT_RUN = 3
"""The exit status of ``info`` on a bundle that this machine cannot run."""


def add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="X.plan", help="a bundle made by `trt-restore build`")


def run_info(args: argparse.Namespace) -> int:
    """Print what the bundle holds; exit 0 if this machine can run it, 3 if not, 2 if it is damaged."""
    from ..runtime.bundle import Bundle

    bundle = Bundle.open(args.bundle)
    bundle.verify()
    print(bundle.describe())
    return 0 if bundle.compatibility_problem() is None else EXIT_CANNOT_RUN


COMMAND = Subcommand(
    "info",
    "show what a .plan bundle holds; exit status 0 if this machine can run it, 3 if not, 2 if it is damaged",
    add_info_arguments,
    run_info,
)
