"""``trt-restore degrade``: simulate an observation ``y = A x + σ n`` of a clean image."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..jobs.timing import stage
from .arguments import add_bits_argument, add_task_parameters, noise_level, task_parameters
from .parser import Subcommand


def add_degrade_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="clean image (PNG, JPEG, TIFF or BMP)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the observation")
    parser.add_argument(
        "--task",
        required=True,
        help="denoise, srN, srN-bicubic, srN-gauss, deblur-gauss, deblur-uniform, deblur-motion, inpaint or colorize",
    )
    parser.add_argument(
        "--sigma", type=noise_level, required=True, help="noise std on the [0, 1] scale, e.g. 0.05 or 25/255"
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    add_bits_argument(parser)
    add_task_parameters(parser)


def run_degrade(args: argparse.Namespace) -> int:
    """Write ``y = A x + σ n`` for the input image ``x``, clamped to [0, 1]."""
    from ..io import fit_alpha, output_format, read_image, write_image
    from ..operators import Degradation, make_operator

    params = task_parameters(args.param)
    largest_depth = max(output_format(args.output).bit_depths)
    with stage("read"):
        image = read_image(args.input)
    channels, height, width = image.data.shape
    with stage("degrade"):
        operator = make_operator(args.task, size=(height, width), channels=channels, **params)
        observed = Degradation(operator, args.sigma).observe(image.data[None], seed=args.seed)[0]
    alpha = None if image.alpha is None else fit_alpha(image.alpha, (observed.shape[1], observed.shape[2]))
    with stage("write"):
        write_image(args.output, observed, alpha=alpha, bit_depth=args.bits or min(image.bit_depth, largest_depth))
    return 0


COMMAND = Subcommand(
    "degrade", "simulate an observation y = A x + sigma n of a clean image", add_degrade_arguments, run_degrade
)
