"""Arguments that several subcommands share: value types, flags and the flags generated from the methods' settings."""

from __future__ import annotations

import argparse
import functools
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..distributed import RAY_LOCAL
from ..errors import UserError
from ..jobs import values
from ..jobs.request import DEFAULT_MAX_PIXELS
from ..jobs.values import BadValue, ParamValue

Value = TypeVar("Value")

SETTING_PREFIX = "setting_"
"""Namespace prefix of the method-setting flags, so that they cannot collide with ``restore``'s own."""
MODEL_SET_HELP = "networks to {purpose}: tiny, bundled (default: the models shipped with trt-restore) or a folder"


def add_model_set_argument(parser: argparse.ArgumentParser | argparse._ActionsContainer, purpose: str) -> None:
    """``--model-set``: the networks to ``purpose`` (run, build, export)."""
    parser.add_argument("--model-set", metavar="NAME|FOLDER", help=MODEL_SET_HELP.format(purpose=purpose))


def add_vae_argument(parser: argparse.ArgumentParser) -> None:
    """``--vae``: an autoencoder folder (or hub id) in place of the model set's, of the same latent geometry and scale."""
    parser.add_argument(
        "--vae",
        metavar="FOLDER",
        help="an AutoencoderKL/VQModel/AutoencoderTiny folder or hub id (e.g. a sd-vae-ft-mse folder) to use instead "
        "of the model set's autoencoder; it must have the same latent channels, downsampling and scaling_factor",
    )


def add_model_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine`` or ``--model-set``, one of them: what ``restore`` and ``serve`` run."""
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--engine", type=Path, metavar="X.plan", help="a bundle made by `trt-restore build`")
    add_model_set_argument(models, "run")


def _argument_type(parse: Callable[[str], Value]) -> Callable[[str], Value]:
    """``parse`` as an argparse type: text it refuses is a one-line usage error that says what was expected."""

    @functools.wraps(parse)
    def convert(text: str) -> Value:
        try:
            return parse(text)
        except BadValue as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


noise_level = _argument_type(values.noise_level)
"""An argparse type for σ on the [0, 1] scale: a number (``0.05``) or a fraction (``25/255``)."""
observed_noise_level = _argument_type(values.observed_noise_level)
"""An argparse type for the σ of an observation: as :data:`noise_level`, or ``auto``."""
task_parameter = _argument_type(values.task_parameter)
"""An argparse type for ``key=value``: the value becomes an int, a float or a string;
comma-separated values become a tuple (``box=8,8,16,16``)."""


def positive_int(text: str) -> int:
    """An argparse type for an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def one_of(choices: Sequence[str]) -> Callable[[str], str]:
    """An argparse type for one of ``choices``; unlike ``choices=``, the usage line does not list them."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"'{text}' is not one of {', '.join(choices)}")
        return text

    return parse


def usage_errors(kind: Callable[[str], Value]) -> Callable[[str], Value]:
    """``kind`` as an argparse type: its ValueError or UserError becomes a usage error, not a traceback."""

    def parse(text: str) -> Value:
        try:
            return kind(text)
        except (ValueError, UserError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def comma_list(kind: Callable[[str], Value]) -> Callable[[str], list[Value]]:
    """An argparse type for comma-separated values, each parsed by ``kind``; empty items are skipped."""
    each = usage_errors(kind)
    return lambda text: [each(item) for item in text.split(",") if item]


def add_bits_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bits",
        type=int,
        choices=(8, 16),
        help="output bits per sample (default: the input's, where the format allows)",
    )


def add_task_parameters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param",
        type=task_parameter,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option, repeatable: kernel_sigma=1.6, kernel=Levin09:3, fraction=0.5, box=8,8,16,16",
    )


def task_parameters(pairs: Sequence[tuple[str, ParamValue]]) -> dict[str, ParamValue]:
    """The ``--param`` pairs as a dict; a key given twice is an error."""
    params: dict[str, ParamValue] = {}
    for key, value in pairs:
        if key in params:
            raise UserError(f"--param {key} is given twice; keep one")
        params[key] = value
    return params


def add_max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images whose restored size exceeds N pixels (default {DEFAULT_MAX_PIXELS:,})",
    )


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


def model_set_name(args: argparse.Namespace) -> str:
    """``--model-set``, or the API's default."""
    from ..api import DEFAULT_MODEL_SET

    return args.model_set or DEFAULT_MODEL_SET


@dataclass
class MethodSetting:
    """The flag for one hyperparameter name, shared by every method whose ``Config`` has a field of that name."""

    name: str
    kind: Any
    """The type of the flag's value, or a ``Literal`` of the values it takes."""
    per_method: dict[str, tuple[str, Any, str]] = field(default_factory=dict)
    """Method name to the field's (help text, default, per-task defaults from the method's ``TASK_DEFAULTS``)."""

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The values of a ``Literal`` setting; None for the others."""
        return typing.get_args(self.kind) if typing.get_origin(self.kind) is typing.Literal else None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return SETTING_PREFIX + self.name

    def help(self) -> str:
        """Each method's help text and default; methods that agree share one entry."""
        methods_by_text: dict[tuple[str, Any, str], list[str]] = {}
        for method, described in self.per_method.items():
            methods_by_text.setdefault(described, []).append(method)
        entries = [
            f"{', '.join(methods)}: {text} (default {default}{'; ' + per_task if per_task else ''})"
            for (text, default, per_task), methods in methods_by_text.items()
        ]
        return "; ".join(entries).replace("%", "%%")


@functools.cache
def method_settings() -> dict[str, MethodSetting]:
    """One :class:`MethodSetting` per field name of the pipelines' ``Config`` dataclasses, in declaration order.

    A field's kind is its annotation; its help names the method's per-task defaults of that field.
    """
    from ..pipelines import PIPELINES
    from ..pipelines.base import config_fields

    settings: dict[str, MethodSetting] = {}
    for method, pipeline in PIPELINES.items():
        types = typing.get_type_hints(pipeline.Config)
        for config_field in config_fields(pipeline.Config):
            kind = types[config_field.name]
            setting = settings.setdefault(config_field.name, MethodSetting(config_field.name, kind))
            if setting.kind != kind:
                raise TypeError(
                    f"setting '{config_field.name}' is a {setting.kind.__name__} for {', '.join(setting.per_method)} "
                    f"but a {kind.__name__} for {method}; one flag cannot parse both"
                )
            per_task = "; ".join(
                f"{row.label}: {row.settings_text([config_field.name])}"
                for row in pipeline.TASK_DEFAULTS
                if config_field.name in row.settings
            )
            setting.per_method[method] = (config_field.metadata.get("help", ""), config_field.default, per_task)
    return settings


def add_method_settings(parser: argparse.ArgumentParser) -> None:
    """One flag per method setting; booleans are switches, ``Literal`` settings take one of their values.
    Default None: the chosen method's own value."""
    group = parser.add_argument_group(
        "method settings",
        "each flag sets the setting of that name of the chosen method; left out, the model set's own setting (its model_set.json), else the method's default",
    )
    for setting in method_settings().values():
        if setting.kind is bool:
            group.add_argument(
                setting.option, dest=setting.dest, action="store_true", default=None, help=setting.help()
            )
        elif setting.choices is not None:
            group.add_argument(setting.option, dest=setting.dest, choices=setting.choices, help=setting.help())
        else:
            group.add_argument(
                setting.option,
                dest=setting.dest,
                type=setting.kind,
                metavar=setting.kind.__name__.upper(),
                help=setting.help(),
            )


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The method settings given on the command line, by name."""
    return {
        name: getattr(args, setting.dest)
        for name, setting in method_settings().items()
        if getattr(args, setting.dest) is not None
    }


def chosen_settings(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The method settings given on the command line; one that ``method`` does not have is an error."""
    chosen = given_settings(args)
    settings = method_settings()
    for name in chosen:
        if method not in settings[name].per_method:
            raise UserError(
                f"{settings[name].option} is a setting of {', '.join(settings[name].per_method)}, not of {method}; "
                "drop it or choose one of those methods with --method"
            )
    return chosen
