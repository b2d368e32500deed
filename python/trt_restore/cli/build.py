"""``trt-restore build``: a method's engines (or ONNX graphs) in one ``.plan`` bundle."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..errors import UserError
from ..jobs.timing import stage
from ..methods import BUNDLE_BACKENDS, METHODS, BundleBackend
from .arguments import add_model_set_argument, add_vae_argument, model_set_name, positive_int
from .export import megabytes
from .parser import Subcommand

BUILD_BACKEND_PRECISION: dict[BundleBackend, str] = {"tensorrt": "fp16", "onnxruntime": "fp32", "openvino": "auto"}
"""The default precision of each bundle backend."""


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    size = {"type": positive_int, "nargs": 2, "metavar": ("H", "W")}
    parser.add_argument("--method", choices=METHODS, required=True, help="the method to build")
    add_model_set_argument(parser, "build")
    add_vae_argument(parser)
    parser.add_argument(
        "--backend",
        choices=BUNDLE_BACKENDS,
        default="tensorrt",
        help="tensorrt (default: TensorRT engines, for NVIDIA GPUs), onnxruntime (ONNX graphs, e.g. for CPUs) "
        "or openvino (ONNX graphs for OpenVINO on Intel and AMD CPUs)",
    )
    parser.add_argument(
        "--precision",
        help="fp16 or fp32 (default: fp16 for tensorrt, fp32 for onnxruntime); for openvino auto (default: bf16 "
        "where the CPU that runs the bundle has native bf16, AVX512-BF16 or AMX, else fp32), fp32 or bf16",
    )
    parser.add_argument("--min", **size, default=(64, 64), help="smallest image size (default 64 64)")
    parser.add_argument(
        "--opt",
        **size,
        default=(256, 256),
        help="image size to optimise for; the decoder VJP (static shapes) is built for exactly this size (default 256 256)",
    )
    parser.add_argument("--max", **size, default=(512, 512), help="largest image size (default 512 512)")
    parser.add_argument(
        "--batch",
        type=positive_int,
        nargs=3,
        default=(1, 1, 4),
        metavar=("MIN", "OPT", "MAX"),
        help="batch sizes (default 1 1 4)",
    )
    parser.add_argument("--timing-cache", type=Path, metavar="FILE", help="TensorRT timing cache, read and updated")
    parser.add_argument(
        "--compute-capability",
        nargs="+",
        metavar="X.Y",
        help="GPU compute capabilities to build for, e.g. 8.6 8.9 (TensorRT-RTX; default 8.0 and later)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.plan", help="the bundle to write")


def run_build(args: argparse.Namespace) -> int:
    """Export the method's components to a temporary folder, build them into a bundle and print what it holds."""
    from ..engine.bundle_writer import build_bundle
    from ..export.model_sets import load_model_set
    from ..export.onnx_export import export_method
    from ..runtime.bundle import Bundle

    if args.backend != "tensorrt" and (args.timing_cache or args.compute_capability):
        raise UserError("--timing-cache and --compute-capability apply to --backend tensorrt; drop them")
    if not args.output.parent.is_dir():
        raise UserError(f"cannot write {args.output}: folder {args.output.parent} does not exist; create it first")
    precision = args.precision or BUILD_BACKEND_PRECISION[args.backend]
    with stage("load model set"):
        model_set = load_model_set(model_set_name(args), vae=args.vae)
    with tempfile.TemporaryDirectory(prefix="trt-restore-build-") as folder:
        with stage("export"):
            components = export_method(
                args.method, model_set, folder, precision="fp32" if args.backend == "openvino" else precision,
                example_size=tuple(args.opt),
            )
        with stage("build"):
            build_bundle(
                args.method,
                components,
                args.output,
                backend=args.backend,
                precision=precision,
                profile=(tuple(args.min), tuple(args.opt), tuple(args.max)),
                batch=tuple(args.batch),
                meta=model_set.meta,
                model_set=model_set.name,
                timing_cache=args.timing_cache,
                compute_capabilities=args.compute_capability,
            )
    manifest = Bundle.open(args.output).manifest
    print(f"{args.output}: {megabytes(args.output.stat().st_size)}, method {args.method}, {args.backend}, {precision}")
    for name, record in manifest["components"].items():
        print(f"  {name}: {record['entry']} ({megabytes(manifest['entries'][record['entry']]['size'])})")
    return 0


COMMAND = Subcommand(
    "build", "build a method's engines (or ONNX graphs) into a .plan bundle", add_build_arguments, run_build
)
