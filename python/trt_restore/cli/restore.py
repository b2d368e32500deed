"""``trt-restore restore``: restore degraded images (a file, a folder or a glob), on this machine or on Ray."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from ..jobs.engines import EngineSource
from ..jobs.inputs import collect_inputs, is_batch, plan_outputs
from ..jobs.report import SUMMARY_NAME
from ..jobs.request import DEFAULT_TASK_KEY, RestoreRequest
from ..methods import (
    BACKENDS,
    DEFAULT_METHOD,
    INFERENCE_PRECISIONS,
    METHODS,
    NOISE_SOURCES,
)
from ..noise_level import SIGMA_HELP
from .arguments import (
    add_bits_argument,
    add_max_pixels_argument,
    add_method_settings,
    add_model_source_arguments,
    add_ray_argument,
    add_vae_argument,
    add_task_parameters,
    chosen_settings,
    model_set_name,
    observed_noise_level,
    positive_int,
    task_parameters,
)
from .parser import CommandParser, Subcommand


def add_restore_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="degraded image file, folder of images, or glob (quoted)"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output image (one input) or folder (created); in a folder, outputs keep the input names, as .png; "
        "with --ray also a URI (s3://, gs://, file://)",
    )
    parser.add_argument(
        "--method", choices=METHODS, help=f"restoration method (default: the bundle's, else {DEFAULT_METHOD})"
    )
    parser.add_argument(
        "--task",
        help="denoise, srN, srN-bicubic, srN-gauss, deblur-gauss, deblur-uniform, deblur-motion, inpaint or colorize "
        "(required unless the bundle records a default task); for colorize an RGB input is first made gray",
    )
    parser.add_argument("--sigma", type=observed_noise_level, help=f"noise std of the input on the [0, 1] scale: {SIGMA_HELP}")
    add_model_source_arguments(parser)
    add_vae_argument(parser)
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default: the bundle's backend, else torch), torch, onnxruntime, openvino or tensorrt (needs --engine)",
    )
    parser.add_argument(
        "--precision",
        choices=INFERENCE_PRECISIONS,
        help="arithmetic of the openvino backend: auto (bf16 where the CPU has native bf16, AVX512-BF16 or AMX, "
        "else fp32), fp32 or bf16 (default: an openvino bundle's precision, else auto)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    parser.add_argument(
        "--noise",
        choices=NOISE_SOURCES,
        default="host",
        help="where the sampling noise is drawn: host (default; a seed gives the same result on every device) "
        "or device (faster on a GPU for large images)",
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU if there is one)")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads for torch, onnxruntime and OpenVINO")
    add_task_parameters(parser)
    parser.add_argument(
        "--save-intermediates", type=Path, metavar="DIR", help="write the current estimate as DIR/<name>_stepNNN.png"
    )
    parser.add_argument(
        "--every", type=positive_int, metavar="K", help="with --save-intermediates: every K steps (default 1)"
    )
    add_bits_argument(parser)
    parser.add_argument(
        "--tile",
        type=positive_int,
        metavar="N",
        help="run the networks on overlapping N×N tiles (image pixels), to fit larger images in memory "
        "(default: 512 on torch, 256 on onnxruntime, or the bundle's largest profile size)",
    )
    add_max_pixels_argument(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip inputs whose output already exists and decodes (outputs are written atomically)",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        metavar="FILE.json",
        help=f"where to write the JSON summary (default for a folder, glob or several inputs: "
        f"{SUMMARY_NAME} beside the outputs)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    cluster = parser.add_argument_group(
        "Ray", "run the batch on a Ray cluster (pip install 'trt-restore[ray]'); INPUTs may then be URIs too"
    )
    add_ray_argument(cluster, "restore on")
    cluster.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="actors, each holding the engines (default: one per GPU, else one per --threads CPUs)",
    )
    cluster.add_argument(
        "--batch-size", type=positive_int, metavar="N", help="images per task, of similar sizes (default 8)"
    )
    parser.defer(add_method_settings)


def run_restore(args: argparse.Namespace) -> int:
    """Restore every input with engines loaded once; an input that fails is reported and the others go on.

    The request (method, task, parameters, engines) is checked on the first input that
    decodes, before anything is written: a problem there stops the run with status 2.
    A batch (or ``--summary``) gets a JSON summary, saved also when the run is interrupted.
    With ``--ray`` the batch runs on a Ray cluster (:mod:`trt_restore.distributed.batch`).
    """
    if args.every is not None and args.save_intermediates is None:
        raise UserError("--every applies to --save-intermediates; add --save-intermediates DIR")
    if args.vae and args.engine:
        raise UserError("--vae replaces a model set's autoencoder, and a bundle's is built in: drop --vae, "
                        "or build the bundle with `trt-restore build --vae`")
    if args.ray is not None:
        return run_restore_on_ray(args)
    if args.workers is not None or args.batch_size is not None:
        raise UserError("--workers and --batch-size apply to --ray; add --ray or drop them")
    from ..jobs.batch import run_batch

    request = restore_request(args)
    pairs = plan_outputs(collect_inputs(args.inputs), Path(args.output))
    return run_batch(
        pairs,
        request,
        engine_source(args, request),
        tile=args.tile,
        max_pixels=args.max_pixels,
        bits=args.bits,
        resume=args.resume,
        summary=args.summary or (pairs[0][1].parent / SUMMARY_NAME if is_batch(args.inputs) else None),
        intermediates=args.save_intermediates,
        every=args.every or 1,
        show=_shows_progress(args),
    )


def run_restore_on_ray(args: argparse.Namespace) -> int:
    """``trt-restore restore --ray``: the flags of ``restore``, on a Ray cluster."""
    if args.save_intermediates is not None:
        raise UserError("--save-intermediates does not apply with --ray; drop it or run without --ray")
    from ..distributed.batch import DEFAULT_BATCH_SIZE, run_batch
    from ..distributed.storage import list_sources, plan_targets

    request = restore_request(args)
    pairs = plan_targets(list_sources(args.inputs), args.output)
    status, _ = run_batch(
        pairs,
        request,
        engine_source(args, request),
        address=args.ray,
        workers=args.workers,
        threads=args.threads or 1,
        batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
        tile=args.tile,
        max_pixels=args.max_pixels,
        bits=args.bits,
        resume=args.resume,
        summary=None if args.summary is None else str(args.summary),
        show=_shows_progress(args),
    )
    return status


def restore_request(args: argparse.Namespace) -> RestoreRequest:
    """The request from the flags; with ``--engine`` the bundle supplies the method and may supply the task."""
    method, task = args.method, args.task
    if args.engine is not None:
        from ..runtime.bundle import Bundle

        bundle = Bundle.open(args.engine)
        method = method or bundle.method
        task = task or bundle.meta.get(DEFAULT_TASK_KEY)
    if task is None:
        recorded = f"; {args.engine.name} records no default task" if args.engine is not None else ""
        raise UserError(f"--task is required (e.g. --task sr4 or --task denoise){recorded}")
    method = method or DEFAULT_METHOD
    settings = chosen_settings(args, method)
    return RestoreRequest(method, task, args.sigma, args.seed, settings, task_parameters(args.param), args.noise)


def engine_source(args: argparse.Namespace, request: RestoreRequest) -> EngineSource:
    """Where the request's engines come from, by the flags."""
    adapt = bool(request.settings.get("adapt"))
    return EngineSource(
        request.method,
        args.engine,
        model_set_name(args),
        args.backend,
        args.device,
        args.threads,
        adapt,
        request.scale,
        args.precision,
        args.vae,
    )


def _shows_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


COMMAND = Subcommand(
    "restore",
    "restore degraded images (a file, a folder or a glob) with a method's engines",
    add_restore_arguments,
    run_restore,
)
