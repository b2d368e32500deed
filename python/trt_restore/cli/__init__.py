"""The ``trt-restore`` command line: argument parsing and printing, over :mod:`trt_restore.jobs` and the library.

Every subcommand is one :class:`~.parser.Subcommand` entry in :data:`SUBCOMMANDS`, declared
by its own module (:mod:`.restore`, :mod:`.serve`, :mod:`.degrade`, :mod:`.export`,
:mod:`.build`, :mod:`.info`, :mod:`.demo`, :mod:`.bench`, :mod:`.train`): a function that
declares its arguments and a ``run_<name>(args) -> int`` handler. Handlers import the
heavy modules (torch, the operators, the backends) themselves, so that
``trt-restore --help`` stays fast. A :class:`~trt_restore.errors.UserError` raised
anywhere below a handler is printed as one ``error: ...`` line with exit status 2.

``trt-restore --engine X.plan in.png -o out.png`` is shorthand for
``trt-restore restore --engine X.plan in.png -o out.png``.

Exit status: 0 success, 1 some inputs of a batch failed (each is reported), 2 a usage
or user error, 3 ``info`` on a bundle that this machine cannot run, 130 interrupted
(Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .. import __version__
from ..errors import UserError
from . import bench, build, degrade, demo, export, info, restore, serve, train
from .parser import CommandParser, Subcommand

GLOBAL_FLAGS = ("-v", "--verbose", "--debug")
SHORTHAND_COMMAND = "restore"
SHORTHAND_TRIGGER = "--engine"
EXIT_INTERRUPTED = 130

SUBCOMMANDS: tuple[Subcommand, ...] = (
    restore.COMMAND,
    serve.COMMAND,
    degrade.COMMAND,
    export.COMMAND,
    build.COMMAND,
    info.COMMAND,
    demo.COMMAND,
    bench.COMMAND,
    train.COMMAND,
)
"""The registered subcommands, in the order ``--help`` lists them."""


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
        with sigterm_interrupts():
            return args.run(args)
    except UserError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as interruption:
        if args.debug:
            raise
        detail = f" ({interruption})" if str(interruption) else ""
        print(f"error: interrupted{detail}", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so that a terminated
    run cleans up the same way (no partial outputs, the batch summary saved). Signal handlers
    belong to the main thread; elsewhere the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per entry of :data:`SUBCOMMANDS`.

    The global flags are accepted before and after the subcommand name.
    """
    parser = CommandParser(
        prog="trt-restore",
        description="Image restoration with latent diffusion models on ONNX Runtime and TensorRT.",
        epilog="Shorthand: 'trt-restore --engine X.plan in.png -o out.png' runs 'trt-restore restore ...'.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_flags(parser, default=False)
    after_command = argparse.ArgumentParser(add_help=False)
    _add_global_flags(after_command, default=argparse.SUPPRESS)  # absent: keep the top-level value
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for command in SUBCOMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.summary,
            description=command.summary,
            parents=[after_command],
            allow_abbrev=False,  # flags generated from the methods' settings must not shadow each other's prefixes
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log each stage and its time")
    parser.add_argument("--debug", action="store_true", default=default, help="show the full traceback on errors")


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
