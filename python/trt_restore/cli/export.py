"""``trt-restore export``: a method's networks as ONNX graphs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..jobs.timing import stage
from ..methods import METHODS
from .arguments import add_model_set_argument, add_vae_argument, model_set_name, positive_int
from .parser import Subcommand


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=METHODS, required=True, help="the method whose components to export")
    add_model_set_argument(parser, "export")
    add_vae_argument(parser)
    parser.add_argument("--precision", default="fp32", help="fp32 (default) or fp16 (normalisations kept in fp32)")
    parser.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        default=(64, 64),
        metavar=("H", "W"),
        help="image size to trace at; graphs with static shapes (the decoder VJP) are exported for it (default 64 64)",
    )
    parser.add_argument("--opset", type=positive_int, default=17, help="ONNX opset, 17 or newer (default 17)")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIR", help="folder for <component>.onnx (created)"
    )


def run_export(args: argparse.Namespace) -> int:
    """Write one ONNX graph per component of the method and print each path and size."""
    from ..export.model_sets import load_model_set
    from ..export.onnx_export import export_method

    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"{args.output} is a file; give a folder for the ONNX graphs with -o")
    with stage("load model set"):
        model_set = load_model_set(model_set_name(args), vae=args.vae)
    args.output.mkdir(parents=True, exist_ok=True)
    with stage("export"):
        exported = export_method(
            args.method,
            model_set,
            args.output,
            precision=args.precision,
            example_size=tuple(args.size),
            opset=args.opset,
        )
    for name, (path, _) in exported.items():
        print(f"{name}: {path} ({megabytes(path.stat().st_size)})")
    return 0


def megabytes(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"


COMMAND = Subcommand("export", "export a method's networks to ONNX", add_export_arguments, run_export)
