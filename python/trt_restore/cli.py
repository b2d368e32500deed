"""The ``trt-restore`` command line.

Every subcommand is one :class:`Subcommand` entry in :data:`SUBCOMMANDS`: a function that
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
import copy
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .bench import add_bench_arguments, run_bench
from .demo import add_demo_arguments, run_demo
from .errors import UserError
from .train.command import add_train_arguments, run_train
from .methods import DEFAULT_METHOD, METHODS, NOISE_SOURCES

if TYPE_CHECKING:
    import torch

    from .io import Image
    from .pipelines import Models
    from .pipelines.base import StepCallback

log = logging.getLogger(__name__)

GLOBAL_FLAGS = ("-v", "--verbose", "--debug")
SHORTHAND_COMMAND = "restore"
SHORTHAND_TRIGGER = "--engine"
EXIT_SOME_FAILED = 1
EXIT_USER_ERROR = UserError.exit_code
EXIT_CANNOT_RUN = 3
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


class CommandParser(argparse.ArgumentParser):
    """The parser of ``trt-restore`` and of each subcommand: a usage error is one line, and
    some arguments can be declared on first use (parsing or help).

    Arguments generated from heavy modules (the methods' settings come from the
    pipelines, which import torch) are declared through :meth:`defer`, so that building
    the whole command line stays fast.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
        """Call ``add_arguments(self)`` just before this parser is first used."""
        self._deferred.append(add_arguments)

    def parse_known_args(self, args=None, namespace=None):
        self._declare_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._declare_deferred()
        return super().format_help()

    def error(self, message: str) -> typing.NoReturn:
        """Print the usage error as one line that points to ``--help``, and exit with status 2."""
        self.exit(EXIT_USER_ERROR, f"error: {message}; see `{self.prog} --help`\n")

    def _declare_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)


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


def positive_int(text: str) -> int:
    """An argparse type for an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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


def _add_bits_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bits",
        type=int,
        choices=(8, 16),
        help="output bits per sample (default: the input's, where the format allows)",
    )


def _add_task_parameters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param",
        type=task_parameter,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option, repeatable: kernel_sigma=1.6, kernel=Levin09:3, fraction=0.5, box=8,8,16,16",
    )


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
    _add_bits_argument(parser)
    _add_task_parameters(parser)


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


# restore ---------------------------------------------------------------------------------

DEFAULT_TASK_KEY = "default_task"
"""The key of a bundle's model-set metadata that names the task ``restore`` runs when ``--task`` is left out."""
COLORIZE = "colorize"
SETTING_PREFIX = "setting_"
"""Namespace prefix of the method-setting flags, so that they cannot collide with ``restore``'s own."""
INTERMEDIATE_NAME = "{stem}_step{step:03d}.png"
RAY_LOCAL = "local"
"""The value of a bare ``--ray``: start Ray on this machine."""
MODEL_SET_HELP = "networks to {purpose}: tiny, bundled (default: the models shipped with trt-restore) or a folder"
SUMMARY_NAME = "restore_summary.json"
"""The batch summary that ``restore`` writes beside its outputs (``--summary`` names another path)."""
IMAGE_STATUSES = ("done", "skipped", "failed", "not_run")
DEFAULT_MAX_PIXELS = 50_000_000
FIRST_RETRY_TILE = 512
"""The largest tile (image pixels) of the retry after running out of memory."""
MIN_TILE_MULTIPLES = 2
"""Tiles span at least this many of the networks' size multiples (their overlap is one multiple)."""


@dataclass
class MethodSetting:
    """The flag for one hyperparameter name, shared by every method whose ``Config`` has a field of that name."""

    name: str
    kind: type
    per_method: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """Method name to the field's (help text, default)."""

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return SETTING_PREFIX + self.name

    def help(self) -> str:
        """Each method's help text and default; methods that agree share one entry."""
        methods_by_text: dict[tuple[str, Any], list[str]] = {}
        for method, described in self.per_method.items():
            methods_by_text.setdefault(described, []).append(method)
        entries = [
            f"{', '.join(methods)}: {text} (default {default})" for (text, default), methods in methods_by_text.items()
        ]
        return "; ".join(entries).replace("%", "%%")


@functools.cache
def method_settings() -> dict[str, MethodSetting]:
    """One :class:`MethodSetting` per field name of the pipelines' ``Config`` dataclasses, in declaration order."""
    from .pipelines import PIPELINES
    from .pipelines.base import config_fields

    settings: dict[str, MethodSetting] = {}
    for method, pipeline in PIPELINES.items():
        types = typing.get_type_hints(pipeline.Config)
        for config_field in config_fields(pipeline.Config):
            kind = types[config_field.name]
            setting = settings.setdefault(config_field.name, MethodSetting(config_field.name, kind))
            if setting.kind is not kind:
                raise TypeError(
                    f"setting '{config_field.name}' is a {setting.kind.__name__} for {', '.join(setting.per_method)} "
                    f"but a {kind.__name__} for {method}; one flag cannot parse both"
                )
            setting.per_method[method] = (config_field.metadata.get("help", ""), config_field.default)
    return settings


def add_method_settings(parser: argparse.ArgumentParser) -> None:
    """One flag per method setting; booleans are switches. Default None: the chosen method's own value."""
    group = parser.add_argument_group(
        "method settings",
        "each flag sets the setting of that name of the chosen method; left out, the method's default",
    )
    for setting in method_settings().values():
        if setting.kind is bool:
            group.add_argument(
                setting.option, dest=setting.dest, action="store_true", default=None, help=setting.help()
            )
        else:
            group.add_argument(
                setting.option,
                dest=setting.dest,
                type=setting.kind,
                metavar=setting.kind.__name__.upper(),
                help=setting.help(),
            )


def _add_max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images whose restored size exceeds N pixels (default {DEFAULT_MAX_PIXELS:,})",
    )


def chosen_settings(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The method settings given on the command line; one that ``method`` does not have is an error."""
    chosen = {}
    for name, setting in method_settings().items():
        value = getattr(args, setting.dest)
        if value is None:
            continue
        if method not in setting.per_method:
            raise UserError(
                f"{setting.option} is a setting of {', '.join(setting.per_method)}, not of {method}; "
                "drop it or choose one of those methods with --method"
            )
        chosen[name] = value
    return chosen


@dataclass(frozen=True)
class RestoreRequest:
    """What ``restore`` does to every image: the method, the task and their settings."""

    method: str
    task: str
    sigma: float
    seed: int
    settings: Mapping[str, Any]
    task_params: Mapping[str, ParamValue]
    noise: str = "host"

    @property
    def scale(self) -> int:
        from .api import sr_factor

        return sr_factor(self.task)

    def output_size(self, image: Image) -> tuple[int, int]:
        """(H, W) of the restored image: the input's, times the SR factor."""
        return image.data.shape[1] * self.scale, image.data.shape[2] * self.scale

    def observation(self, image: Image) -> torch.Tensor:
        """The image as the observation y: for colorisation its gray, the channel mean (the operator's A); else as read."""
        if self.task == COLORIZE and image.data.shape[0] > 1:
            return image.data.mean(dim=0, keepdim=True)
        return image.data

    def run(self, image: Image, models: Models, callback: StepCallback) -> torch.Tensor:
        """The restored image (C, H', W') in [0, 1]."""
        from .api import restore

        return restore(
            self.observation(image),
            method=self.method,
            task=self.task,
            sigma=self.sigma,
            seed=self.seed,
            noise=self.noise,
            config=dict(self.settings),
            task_params=dict(self.task_params),
            callback=callback,
            models=models,
        )

    def check_size(self, image: Image, max_pixels: int) -> None:
        """Refuse an image whose restored size exceeds ``max_pixels``."""
        height, width = self.output_size(image)
        if height * width > max_pixels:
            raise UserError(
                f"{image.path} would be restored to {width}x{height} = {height * width:,} pixels, "
                f"more than --max-pixels {max_pixels}; split it into smaller images or raise --max-pixels"
            )

    def check(self, image: Image) -> None:
        """Refuse, before any image is restored, an unknown task, a bad task parameter or a method that cannot solve the task."""
        from .operators import make_operator
        from .pipelines import pipeline_class

        channels = 3 if self.task == COLORIZE else image.data.shape[0]
        operator = make_operator(self.task, size=self.output_size(image), channels=channels, **self.task_params)
        pipeline_class(self.method).check_task(operator)


def restore_request(args: argparse.Namespace) -> RestoreRequest:
    """The request from the flags; with ``--engine`` the bundle supplies the method and may supply the task."""
    method, task = args.method, args.task
    if args.engine is not None:
        from .runtime.bundle import Bundle

        bundle = Bundle.open(args.engine)
        method = method or bundle.method
        task = task or bundle.meta.get(DEFAULT_TASK_KEY)
    if task is None:
        recorded = f"; {args.engine.name} records no default task" if args.engine is not None else ""
        raise UserError(f"--task is required (e.g. --task sr4 or --task denoise){recorded}")
    method = method or DEFAULT_METHOD
    settings = chosen_settings(args, method)
    return RestoreRequest(method, task, args.sigma, args.seed, settings, _task_parameters(args.param), args.noise)


def model_set_name(args: argparse.Namespace) -> str:
    """``--model-set``, or the API's default."""
    from .api import DEFAULT_MODEL_SET

    return args.model_set or DEFAULT_MODEL_SET


def collect_inputs(specs: Sequence[str]) -> list[Path]:
    """The image files named by each INPUT (a file, a folder or a glob), each once, in the given order."""
    from .io import list_inputs

    found: dict[Path, Path] = {}
    for spec in specs:
        for path in list_inputs(spec):
            found.setdefault(path.resolve(), path)
    return list(found.values())


def plan_outputs(inputs: Sequence[Path], output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: ``output`` itself for a single input when it names an image file, else
    ``output/<input stem>.png``. Two inputs onto one output, or an output onto its input, are refused."""
    from .io import OUTPUT_FORMATS

    names_file = output.suffix.lower() in OUTPUT_FORMATS and not output.is_dir()
    if names_file and len(inputs) > 1:
        raise UserError(
            f"{len(inputs)} inputs need an output folder, but {output} names an image file; give a folder with -o"
        )
    if names_file and not output.parent.is_dir():
        raise UserError(
            f"cannot write {output}: folder {output.parent} does not exist; create it or choose another output path"
        )
    if not names_file and output.exists() and not output.is_dir():
        raise UserError(f"output {output} is a file, not a folder; give a folder or an image file name with -o")
    pairs = [(inputs[0], output)] if names_file else [(source, output / f"{source.stem}.png") for source in inputs]
    targets: dict[Path, Path] = {}
    for source, target in pairs:
        key = target.resolve()
        if key == source.resolve():
            raise UserError(f"restoring {source} would overwrite it; choose another output with -o")
        if key in targets:
            raise UserError(
                f"{targets[key]} and {source} would both be written to {target}; restore them into separate folders"
            )
        targets[key] = source
    return pairs


@dataclass(frozen=True)
class EngineSource:
    """Where a request's engines come from: calling it loads them for a restored size and a tile.

    It holds no engines itself, so it pickles cheaply to the processes that load them.
    """

    method: str
    engine: Path | None
    model_set: str
    backend: str
    device: str | None
    threads: int | None
    adapt: bool
    scale: int

    @classmethod
    def from_args(cls, args: argparse.Namespace, request: RestoreRequest) -> EngineSource:
        adapt = bool(request.settings.get("adapt"))
        return cls(
            request.method,
            args.engine,
            model_set_name(args),
            args.backend,
            args.device,
            args.threads,
            adapt,
            request.scale,
        )

    def __call__(self, size: tuple[int, int], tile: int | None) -> tuple[str, Models]:
        from .api import load_models

        return load_models(
            self.method,
            engine=self.engine,
            model_set=self.model_set,
            backend=self.backend,
            device=self.device,
            image_size=size,
            scale=self.scale,
            threads=self.threads,
            adapt=self.adapt,
            tile=tile,
        )

    def cache(self, tile: int | None) -> EngineCache:
        """An empty :class:`EngineCache` that loads from this source."""
        return EngineCache(self, self.scale, reloadable=self.engine is None, tile=tile)


class EngineCache:
    """The method's engines, loaded once and reused for every image.

    Graphs with static shapes (the decoder VJP) are exported for one padded canvas, so
    engines made from a model set with such graphs on a backend other than torch are
    loaded again when an image needs another canvas. The trainable networks (the INN that
    ``--adapt`` fine-tunes) are reset to their loaded weights for every image, so that no
    result depends on the images before it. ``tile`` (image pixels, None: the engines'
    default) is the size of the overlapping tiles the networks run on.
    """

    def __init__(
        self,
        load: Callable[[tuple[int, int], int | None], tuple[str, Models]],
        scale: int,
        reloadable: bool,
        tile: int | None = None,
    ):
        self._load = load
        self._scale = scale
        self._reloadable = reloadable
        self.tile = tile
        self._models: Models | None = None
        self._canvas: tuple[int, int] | None = None
        self._per_canvas = False
        self._loaded_weights: dict[str, dict] = {}

    def get(self, size: tuple[int, int]) -> Models:
        """The engines for a restored image of ``size`` (H, W), ready for a new image."""
        if self._models is None or (self._per_canvas and self._canvas_for(size) != self._canvas):
            with stage(f"load engines for {size[0]}x{size[1]}" if self._models else "load engines"):
                self._models = None  # release the old engines before loading new ones
                _, self._models = self._load(size, self.tile)
            self._check_tile()
            engines = self._models.engines.values()
            self._per_canvas = self._reloadable and any(
                engine.backend != "torch" and engine.spec.meta.get("static_shapes") for engine in engines
            )
            self._canvas = self._canvas_for(size)
            self._loaded_weights = {
                name: copy.deepcopy(network.state_dict()) for name, network in self._models.trainable.items()
            }
        for name, network in self._models.trainable.items():
            network.load_state_dict(self._loaded_weights[name])
        self._models.timings.clear()
        return self._models

    @property
    def backend(self) -> str | None:
        """The backend of the loaded engines; None before the first :meth:`get`."""
        return None if self._models is None else next(iter(self._models.engines.values())).backend

    @property
    def timings(self) -> Mapping[str, list[float]]:
        """Seconds of each component's calls since the last :meth:`get`."""
        return {} if self._models is None else self._models.timings

    def use_smaller_tiles(self, size: tuple[int, int]) -> int | None:
        """Halve the tiles for the next :meth:`get`: from the engines' current tile, or from the
        image's canvas when they run untiled, at most :data:`FIRST_RETRY_TILE`, rounded down to
        the networks' size multiple. Returns the new tile, None when the tiles cannot shrink."""
        from .api import size_multiple
        from .runtime.tiling import TiledEngine

        engines = self._models.engines.values()
        tiles = [min(engine.tile) for engine in engines if isinstance(engine, TiledEngine) and not engine.static]
        current = min(tiles, default=max(self._canvas_for(size)))
        multiple = size_multiple(self._models)
        smaller = min(FIRST_RETRY_TILE, current // 2) // multiple * multiple
        if smaller < MIN_TILE_MULTIPLES * multiple:
            return None
        self.tile = smaller
        self._models = None
        return smaller

    def _check_tile(self) -> None:
        from .api import size_multiple

        smallest = MIN_TILE_MULTIPLES * size_multiple(self._models)
        if self.tile is not None and self.tile < smallest:
            raise UserError(f"--tile {self.tile} is too small for these networks; use {smallest} or more")

    def _canvas_for(self, size: tuple[int, int]) -> tuple[int, int]:
        from .api import padded_size, size_multiple

        return padded_size(size, math.lcm(size_multiple(self._models), self._scale))


@dataclass
class ImageRecord:
    """What became of one input of a batch."""

    input: str
    output: str
    status: str = "not_run"
    """done, skipped (``--resume`` found a complete output), failed or not_run (the run stopped first)."""
    seconds: float | None = None
    reason: str | None = None


class BatchReport:
    """The progress bar over the images and each image's :class:`ImageRecord`; failures are
    reported on stderr as they happen.

    A context manager: leaving it closes the bar and, if inputs of a batch failed, prints how many.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], show: bool):
        from tqdm import tqdm

        self.records = {source: ImageRecord(str(source), str(target)) for source, target in pairs}
        self.interrupted = False
        self.bar = tqdm(total=len(pairs), unit="image", disable=not show, dynamic_ncols=True)

    def __enter__(self) -> BatchReport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()
        if self.count("failed") and self.total > 1:
            print(f"error: {self.count('failed')} of {self.total} images failed (see above)", file=sys.stderr)

    @property
    def total(self) -> int:
        return len(self.records)

    def count(self, status: str) -> int:
        return sum(record.status == status for record in self.records.values())

    @property
    def status(self) -> int:
        """0 when nothing failed; else 1 for a batch, or the user-error status when the only input failed."""
        if not self.count("failed"):
            return 0
        return EXIT_SOME_FAILED if self.total > 1 else EXIT_USER_ERROR

    def done(self, source: Path, seconds: float) -> None:
        self._settle(source, "done", seconds=seconds)

    def skip(self, source: Path) -> None:
        self._settle(source, "skipped", reason="the output exists and is complete (--resume)")

    def fail(self, source: Path, error: UserError) -> None:
        message = str(error) if str(source) in str(error) else f"{source}: {error}"
        self.bar.write(f"error: {message}", file=sys.stderr)
        self._settle(source, "failed", reason=str(error))

    def _settle(self, source: Path, status: str, **details: Any) -> None:
        self.records[source] = dataclasses.replace(self.records[source], status=status, **details)
        self.bar.update()

    def summary(self, request: RestoreRequest, backend: str) -> dict[str, Any]:
        """The batch as JSON: the request, the counts per status, the mean seconds per restored image, each file."""
        seconds = [record.seconds for record in self.records.values() if record.seconds is not None]
        return {
            "method": request.method,
            "task": request.task,
            "sigma": request.sigma,
            "seed": request.seed,
            "noise": request.noise,
            "backend": backend,
            "interrupted": self.interrupted,
            "counts": {status: self.count(status) for status in IMAGE_STATUSES},
            "seconds_per_image": sum(seconds) / len(seconds) if seconds else None,
            "files": [dataclasses.asdict(record) for record in self.records.values()],
        }


class StepMonitor:
    """The pipeline callback for one image: a progress bar over the steps and, every ``every``
    steps, the current estimate (cropped to ``size``) written as ``folder/<stem>_stepNNN.png``."""

    def __init__(self, show: bool, size: tuple[int, int], folder: Path | None, stem: str, every: int):
        self.show = show
        self.size = size
        self.folder = folder
        self.stem = stem
        self.every = every
        self.bar = None

    def __call__(self, step: int, total: int, estimate: Callable[[], torch.Tensor]) -> None:
        from tqdm import tqdm

        from .io import write_image

        if self.bar is None:
            self.bar = tqdm(total=total, unit="step", leave=False, disable=not self.show, dynamic_ncols=True)
        self.bar.update(step - self.bar.n)
        if self.folder is not None and step % self.every == 0:
            height, width = self.size
            write_image(
                self.folder / INTERMEDIATE_NAME.format(stem=self.stem, step=step), estimate()[0, :, :height, :width]
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log_stage_timings(timings: Mapping[str, list[float]]) -> None:
    """Log each component's and each pipeline stage's calls and total time (``--verbose``)."""
    for name, seconds in sorted(timings.items()):
        log.info("  %s: %d calls, %.3f s", name, len(seconds), sum(seconds))


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
    parser.add_argument(
        "--sigma", type=noise_level, default=0.0, help="noise std of the input on the [0, 1] scale (default 0)"
    )
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--engine", type=Path, metavar="X.plan", help="a bundle made by `trt-restore build`")
    models.add_argument("--model-set", metavar="NAME|FOLDER", help=MODEL_SET_HELP.format(purpose="run"))
    parser.add_argument(
        "--backend",
        default="auto",
        help="auto (default: the bundle's backend, else torch), torch, onnxruntime or tensorrt (needs --engine)",
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
    parser.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads for torch and onnxruntime")
    _add_task_parameters(parser)
    parser.add_argument(
        "--save-intermediates", type=Path, metavar="DIR", help="write the current estimate as DIR/<name>_stepNNN.png"
    )
    parser.add_argument(
        "--every", type=positive_int, metavar="K", help="with --save-intermediates: every K steps (default 1)"
    )
    _add_bits_argument(parser)
    parser.add_argument(
        "--tile",
        type=positive_int,
        metavar="N",
        help="run the networks on overlapping N×N tiles (image pixels), to fit larger images in memory "
        "(default: 512 on torch, 256 on onnxruntime, or the bundle's largest profile size)",
    )
    _add_max_pixels_argument(parser)
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


def add_ray_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, purpose: str) -> None:
    """``--ray [ADDRESS]``: no address starts Ray on this machine; ``auto`` joins the cluster that
    ``ray start`` made here; ``HOST:PORT`` or ``ray://HOST:PORT`` joins a remote one."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const=RAY_LOCAL,
        metavar="ADDRESS",
        help=f"{purpose} Ray: alone, a new Ray on this machine; auto, the cluster that `ray start` made here; "
        "HOST:PORT or ray://HOST:PORT, a remote cluster",
    )


def run_restore(args: argparse.Namespace) -> int:
    """Restore every input with engines loaded once; an input that fails is reported and the others go on.

    The request (method, task, parameters, engines) is checked on the first input that
    decodes, before anything is written: a problem there stops the run with status 2.
    A batch (or ``--summary``) gets a JSON summary, saved also when the run is interrupted.
    With ``--ray`` the batch runs on a Ray cluster (:mod:`trt_restore.distributed.batch`).
    """
    if args.every is not None and args.save_intermediates is None:
        raise UserError("--every applies to --save-intermediates; add --save-intermediates DIR")
    if args.ray is not None:
        from .distributed.batch import run_restore_on_ray

        return run_restore_on_ray(args)
    if args.workers is not None or args.batch_size is not None:
        raise UserError("--workers and --batch-size apply to --ray; add --ray or drop them")
    import torch

    request = restore_request(args)
    pairs = plan_outputs(collect_inputs(args.inputs), Path(args.output))
    check_bits(args.bits, pairs[0][1])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    engines = EngineSource.from_args(args, request).cache(args.tile)
    summary_path = args.summary or (pairs[0][1].parent / SUMMARY_NAME if is_batch(args.inputs) else None)

    def summarize(report: BatchReport) -> Path | None:
        if summary_path is not None:
            write_summary(summary_path, report.summary(request, engines.backend or args.backend))
            log.info("summary: %s", summary_path)
        return summary_path

    show = not args.quiet and sys.stderr.isatty()
    with batch_report(pairs, show, summarize) as report:
        _restore_batch(args, request, pairs, engines, report)
    return report.status


def check_bits(bits: int | None, target: str | Path) -> None:
    """Refuse ``--bits 16`` for an output format that stores 8-bit samples only."""
    from .io import output_format

    if bits is not None and bits not in output_format(target).bit_depths:
        raise UserError(f"{Path(target).suffix} stores 8-bit samples only; drop --bits 16 or write .png or .tif")


@contextmanager
def batch_report(
    pairs: Sequence[tuple[Any, Any]], show: bool, summarize: Callable[[BatchReport], object]
) -> Iterator[BatchReport]:
    """A :class:`BatchReport` over ``pairs``; when the block ends, also by Ctrl-C or SIGTERM,
    ``summarize(report)`` writes the summary and returns where it went (None: nowhere)."""
    with BatchReport(pairs, show) as report:
        try:
            yield report
        except KeyboardInterrupt:
            report.interrupted = True
            where = summarize(report)
            saved = f", summary in {where}" if where is not None else ""
            done = report.count("done") + report.count("skipped")
            raise KeyboardInterrupt(
                f"{done} of {report.total} images restored{saved}; rerun the same command with --resume to finish"
            ) from None
        summarize(report)


def _restore_batch(
    args: argparse.Namespace,
    request: RestoreRequest,
    pairs: Sequence[tuple[Path, Path]],
    engines: EngineCache,
    report: BatchReport,
) -> None:
    """Restore each input of ``pairs`` (with ``--resume``, not those whose output is complete),
    recording each outcome in ``report``."""
    from .io import output_format

    pending = []
    for source, target in pairs:
        if args.resume and is_complete(target):
            report.skip(source)
        else:
            pending.append((source, target))
    images = _read_inputs(pending, report, request, args.max_pixels)
    first = next(images, None)
    if first is None:
        return
    request.check(first[2])
    engines.get(request.output_size(first[2]))
    make_folder(pairs[0][1].parent)
    if args.save_intermediates is not None:
        make_folder(args.save_intermediates)
    largest_depth = max(output_format(pairs[0][1]).bit_depths)
    show = not report.bar.disable
    for source, target, image in itertools.chain([first], images):
        size = request.output_size(image)
        monitor = StepMonitor(show, size, args.save_intermediates, source.stem, args.every or 1)
        start = time.perf_counter()
        try:
            with stage(f"restore {source}"), closing(monitor):
                restored = restore_with_retry(request, image, engines, monitor)
            log_stage_timings(engines.timings)
            write_restored(target, restored, image, args.bits or min(image.bit_depth, largest_depth))
        except UserError as error:
            report.fail(source, error)
        else:
            report.done(source, time.perf_counter() - start)


def restore_with_retry(
    request: RestoreRequest, image: Image, engines: EngineCache, callback: StepCallback
) -> torch.Tensor:
    """Restore one image; when memory runs out, retry once on smaller tiles, which the rest of the batch keeps.

    A second failure is a :class:`UserError` that says to pass a smaller ``--tile``.
    """
    size = request.output_size(image)
    restored = _run_unless_out_of_memory(request, image, engines.get(size), callback)
    if restored is None and (tile := engines.use_smaller_tiles(size)) is not None:
        log.warning(
            "out of memory restoring %s; retrying with --tile %d for it and the remaining images", image.path, tile
        )
        restored = _run_unless_out_of_memory(request, image, engines.get(size), callback)
    if restored is None:
        tried = f" with --tile {engines.tile}" if engines.tile else ""
        raise UserError(
            f"out of memory restoring {image.path}{tried}; pass a smaller --tile, use --device cpu, "
            "or free memory that other programs hold"
        )
    return restored


def _run_unless_out_of_memory(
    request: RestoreRequest, image: Image, models: Models, callback: StepCallback
) -> torch.Tensor | None:
    """The restored image, or None (with the GPU cache emptied) when memory ran out."""
    try:
        return request.run(image, models, callback)
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
    free_cached_memory()
    return None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that host or device memory ran out (torch, onnxruntime or TensorRT)."""
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def free_cached_memory() -> None:
    """Give the GPU memory that torch caches back to the device, before a retry."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_batch(inputs: Sequence[str]) -> bool:
    """Whether the INPUT arguments make a batch: several of them, a folder or a glob."""
    return len(inputs) > 1 or not Path(inputs[0]).expanduser().is_file()


def is_complete(target: Path) -> bool:
    """Whether ``target`` exists and decodes: outputs are written atomically, so one that decodes is whole.
    One that does not is logged and restored again."""
    from .io import read_image

    if not target.is_file():
        return False
    try:
        read_image(target)
    except UserError as error:
        log.warning("%s exists but does not decode (%s); restoring it again", target, error)
        return False
    return True


def make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) for outputs, or say why it cannot be written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot create the output folder {folder} ({error.strerror or error}); choose another folder with -o"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(
            f"cannot write in the output folder {folder} (permission denied); choose another folder with -o"
        )


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Write the batch summary as JSON, atomically."""
    from .files import atomic_output

    try:
        with atomic_output(path) as temporary:
            temporary.write_text(json.dumps(summary, indent=2) + "\n")
    except OSError as error:
        raise UserError(
            f"cannot write the summary {path} ({error.strerror or error}); choose another path with --summary"
        ) from None


def write_restored(target: Path, restored: torch.Tensor, image: Image, bit_depth: int) -> None:
    """Write a restored image atomically, with the input's alpha put back (resampled for SR)."""
    from .io import fit_alpha, write_image

    alpha = None if image.alpha is None else fit_alpha(image.alpha, tuple(restored.shape[-2:]))
    write_image(target, restored, alpha=alpha, bit_depth=bit_depth)


def _read_inputs(
    pairs: Sequence[tuple[Path, Path]], report: BatchReport, request: RestoreRequest, max_pixels: int
) -> Iterator[tuple[Path, Path, Image]]:
    """(input, output, decoded image) for each input that decodes and is not too large;
    the others are reported as failed."""
    from .io import read_image

    for source, target in pairs:
        try:
            image = read_image(source)
            request.check_size(image, max_pixels)
        except UserError as error:
            report.fail(source, error)
            continue
        yield source, target, image


# serve -----------------------------------------------------------------------------------


def add_serve_arguments(parser: CommandParser) -> None:
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--engine", type=Path, metavar="X.plan", help="a bundle made by `trt-restore build`")
    models.add_argument("--model-set", metavar="NAME|FOLDER", help=MODEL_SET_HELP.format(purpose="run"))
    parser.add_argument(
        "--method",
        choices=METHODS,
        help=f"method of requests that name none (default: the bundle's, else {DEFAULT_METHOD})",
    )
    parser.add_argument("--task", help="task of requests that name none (default: the bundle's; else requests must)")
    parser.add_argument(
        "--backend", default="auto", help="auto (default), torch, onnxruntime or tensorrt (needs --engine)"
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU if the cluster has one)")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads of each replica (default 1)")
    parser.add_argument("--tile", type=positive_int, metavar="N", help="run the networks on overlapping N×N tiles")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=positive_int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument(
        "--replicas", type=positive_int, default=1, metavar="N", help="replicas, each holding the engines (default 1)"
    )
    parser.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=8,
        metavar="N",
        help="concurrent requests batched together (default 8)",
    )
    parser.add_argument(
        "--batch-wait-ms", type=float, default=20.0, metavar="MS", help="how long a batch waits to fill up (default 20)"
    )
    parser.add_argument(
        "--max-request-mb", type=float, default=32.0, metavar="MB", help="largest request body accepted (default 32)"
    )
    _add_max_pixels_argument(parser)
    add_ray_argument(parser, "serve from")
    parser.defer(add_method_settings)


def run_serve(args: argparse.Namespace) -> int:
    """Serve restoration over HTTP with Ray Serve until Ctrl-C (:mod:`trt_restore.distributed.serve`)."""
    from .distributed.serve import run_serve as serve

    return serve(args)


# export ----------------------------------------------------------------------------------


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=METHODS, required=True, help="the method whose components to export")
    parser.add_argument("--model-set", metavar="NAME|FOLDER", help=MODEL_SET_HELP.format(purpose="export"))
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
    from .export.model_sets import load_model_set
    from .export.onnx_export import export_method

    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"{args.output} is a file; give a folder for the ONNX graphs with -o")
    with stage("load model set"):
        model_set = load_model_set(model_set_name(args))
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
        print(f"{name}: {path} ({_megabytes(path.stat().st_size)})")
    return 0


def _megabytes(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"


# build -----------------------------------------------------------------------------------

BUILD_BACKEND_PRECISION = {"tensorrt": "fp16", "onnxruntime": "fp32"}
"""The default precision of each bundle backend."""


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    size = {"type": positive_int, "nargs": 2, "metavar": ("H", "W")}
    parser.add_argument("--method", choices=METHODS, required=True, help="the method to build")
    parser.add_argument("--model-set", metavar="NAME|FOLDER", help=MODEL_SET_HELP.format(purpose="build"))
    parser.add_argument(
        "--backend",
        default="tensorrt",
        help="tensorrt (default: TensorRT engines, for NVIDIA GPUs) or onnxruntime (ONNX graphs, e.g. for CPUs)",
    )
    parser.add_argument("--precision", help="fp16 or fp32 (default: fp16 for tensorrt, fp32 for onnxruntime)")
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
    from .engine.bundle_writer import build_bundle
    from .export.model_sets import load_model_set
    from .export.onnx_export import export_method
    from .runtime.bundle import Bundle

    if args.backend not in BUILD_BACKEND_PRECISION:
        raise UserError(f"unknown backend '{args.backend}'; choose one of: {', '.join(BUILD_BACKEND_PRECISION)}")
    if args.backend != "tensorrt" and (args.timing_cache or args.compute_capability):
        raise UserError("--timing-cache and --compute-capability apply to --backend tensorrt; drop them")
    if not args.output.parent.is_dir():
        raise UserError(f"cannot write {args.output}: folder {args.output.parent} does not exist; create it first")
    precision = args.precision or BUILD_BACKEND_PRECISION[args.backend]
    with stage("load model set"):
        model_set = load_model_set(model_set_name(args))
    with tempfile.TemporaryDirectory(prefix="trt-restore-build-") as folder:
        with stage("export"):
            components = export_method(
                args.method, model_set, folder, precision=precision, example_size=tuple(args.opt)
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
    print(f"{args.output}: {_megabytes(args.output.stat().st_size)}, method {args.method}, {args.backend}, {precision}")
    for name, record in manifest["components"].items():
        print(f"  {name}: {record['entry']} ({_megabytes(manifest['entries'][record['entry']]['size'])})")
    return 0


# info ------------------------------------------------------------------------------------


def add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="X.plan", help="a bundle made by `trt-restore build`")


def run_info(args: argparse.Namespace) -> int:
    """Print what the bundle holds; exit 0 if this machine can run it, 3 if not, 2 if it is damaged."""
    from .runtime.bundle import Bundle

    bundle = Bundle.open(args.bundle)
    bundle.verify()
    print(bundle.describe())
    return 0 if bundle.compatibility_problem() is None else EXIT_CANNOT_RUN


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "restore",
        "restore degraded images (a file, a folder or a glob) with a method's engines",
        add_restore_arguments,
        run_restore,
    ),
    Subcommand(
        "serve",
        "serve restoration over HTTP with Ray Serve (POST an image, get the restored PNG)",
        add_serve_arguments,
        run_serve,
    ),
    Subcommand(
        "degrade", "simulate an observation y = A x + sigma n of a clean image", add_degrade_arguments, run_degrade
    ),
    Subcommand("export", "export a method's networks to ONNX", add_export_arguments, run_export),
    Subcommand(
        "build", "build a method's engines (or ONNX graphs) into a .plan bundle", add_build_arguments, run_build
    ),
    Subcommand(
        "info",
        "show what a .plan bundle holds; exit status 0 if this machine can run it, 3 if not, 2 if it is damaged",
        add_info_arguments,
        run_info,
    ),
    Subcommand(
        "demo", "restore sample images with every method on the bundled models (offline)", add_demo_arguments, run_demo
    ),
    Subcommand("bench", "measure quality and speed per method, task and backend", add_bench_arguments, run_bench),
    Subcommand("train", "train the bundled small models", add_train_arguments, run_train),
)
"""The registered subcommands, in the order ``--help`` lists them."""


if __name__ == "__main__":
    sys.exit(main())
