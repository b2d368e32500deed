"""The parsers of ``trt-restore`` and its subcommands, and the :class:`Subcommand` entry of each command module."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

EXIT_USER_ERROR = UserError.exit_code


@dataclass(frozen=True)
class Subcommand:
    """A subcommand: its name, a one-line summary, the function that declares its
    arguments on its parser, and the handler that runs it and returns the exit status."""

    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


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
