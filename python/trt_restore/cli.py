"""The ``trt-restore`` command line.

Every subcommand is one :class:`Subcommand` entry in :data:`SUBCOMMANDS`: a function that
declares its arguments and a ``run_<name>(args) -> int`` handler. Handlers import the
heavy modules (torch, the operators, the backends) themselves, so that
``trt-restore --help`` stays fast. A :class:`~trt_restore.errors.UserError` raised
anywhere below a handler is printed as one ``error: ...`` line with exit status 2.

``trt-restore --engine X.plan in.png -o out.png`` is shorthand for
``trt-restore restore --engine X.plan in.png -o out.png``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import UserError

log = logging.getLogger(__name__)

GLOBAL_FLAGS = ("-v", "--verbose", "--debug")
SHORTHAND_COMMAND = "restore"
SHORTHAND_TRIGGER = "--engine"
EXIT_INTERRUPTED = 130

ParamValue = int | float | str | tuple[int | float | str, ...]


@dataclass(frozen=True)
class Subcommand:
    """A subcommand: its name, a one-line summary, the function that declares its
    arguments on its parser, and the handler that runs it and returns the exit status."""

    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand, return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = expand_shorthand(argv, [command.name for command in SUBCOMMANDS])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_request:  # --help, --version and usage errors
        return exit_request.code if isinstance(exit_request.code, int) else 2
    configure_logging(args.verbose)
    try:
        return args.run(args)
    except UserError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per entry of :data:`SUBCOMMANDS`.

    The global flags are accepted before and after the subcommand name.
    """
    parser = argparse.ArgumentParser(
        prog="trt-restore",
        description="Image restoration with latent diffusion models on ONNX Runtime and TensorRT.",
        epilog="Shorthand: 'trt-restore --engine X.plan in.png -o out.png' runs 'trt-restore restore ...'.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_flags(parser, default=False)
    after_command = argparse.ArgumentParser(add_help=False)
    _add_global_flags(after_command, default=argparse.SUPPRESS)  # absent: keep the top-level value
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in SUBCOMMANDS:
        sub = subparsers.add_parser(
            command.name, help=command.summary, description=command.summary, parents=[after_command]
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def expand_shorthand(argv: Sequence[str], commands: Sequence[str]) -> list[str]:
    """Insert ``restore`` where the subcommand belongs when ``argv`` names none but passes ``--engine``.

    ``[--verbose] --engine X.plan in.png …`` becomes ``[--verbose] restore --engine X.plan in.png …``;
    anything else is returned unchanged.
    """
    argv = list(argv)
    position = 0
    while position < len(argv) and argv[position] in GLOBAL_FLAGS:
        position += 1
    rest = argv[position:]
    if not rest or rest[0] in commands:
        return argv
    if any(token == SHORTHAND_TRIGGER or token.startswith(SHORTHAND_TRIGGER + "=") for token in rest):
        return [*argv[:position], SHORTHAND_COMMAND, *rest]
    return argv


def configure_logging(verbose: bool) -> None:
    """Send the package's log records to stderr: warnings always, stage timings with ``--verbose``."""
    logging.basicConfig(format="[%(levelname)s] %(message)s")  # does nothing if the host configured logging
    logging.getLogger("trt_restore").setLevel(logging.INFO if verbose else logging.WARNING)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Log the wall time of the enclosed block at INFO level (shown with ``--verbose``)."""
    start = time.perf_counter()
    yield
    log.info("%s: %.3f s", name, time.perf_counter() - start)


def noise_level(text: str) -> float:
    """An argparse type for σ on the [0, 1] scale: a number (``0.05``) or a fraction (``25/255``)."""
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.05 or 25/255, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"the noise level must be finite and >= 0, got {text!r}")
    return value


def task_parameter(text: str) -> tuple[str, ParamValue]:
    """An argparse type for ``key=value``: the value becomes an int, a float or a string;
    comma-separated values become a tuple (``box=8,8,16,16``)."""
    key, equals, value = text.partition("=")
    if not equals or not key.isidentifier() or not value:
        raise argparse.ArgumentTypeError(f"expected key=value (e.g. kernel_sigma=1.6), got {text!r}")
    items = tuple(_scalar(item) for item in value.split(","))
    return key, items if len(items) > 1 else items[0]


def _scalar(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log each stage and its time")
    parser.add_argument("--debug", action="store_true", default=default, help="show the full traceback on errors")


def _task_parameters(pairs: Sequence[tuple[str, ParamValue]]) -> dict[str, ParamValue]:
    params: dict[str, ParamValue] = {}
    for key, value in pairs:
        if key in params:
            raise UserError(f"--param {key} is given twice; keep one")
        params[key] = value
    return params


# degrade ---------------------------------------------------------------------------------


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
    parser.add_argument(
        "--bits",
        type=int,
        choices=(8, 16),
        help="output bits per sample (default: the input's, where the format allows)",
    )
    parser.add_argument(
        "--param",
        type=task_parameter,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option, repeatable: kernel_sigma=1.6, kernel=Levin09:3, fraction=0.5, box=8,8,16,16",
    )


def run_degrade(args: argparse.Namespace) -> int:
    """Write ``y = A x + σ n`` for the input image ``x``, clamped to [0, 1]."""
    from .io import fit_alpha, output_format, read_image, write_image
    from .operators import Degradation, make_operator

    params = _task_parameters(args.param)
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


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "degrade", "simulate an observation y = A x + sigma n of a clean image", add_degrade_arguments, run_degrade
    ),
)
"""The registered subcommands, in the order ``--help`` lists them."""
