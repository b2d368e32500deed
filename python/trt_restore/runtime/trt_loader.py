"""Which TensorRT this machine has: enterprise TensorRT (``tensorrt`` ≥ 10.1) or TensorRT-RTX (``tensorrt_rtx``).

Both expose the same Python API. This is the only place that imports either of them;
everything else asks :func:`load_trt` for the module and uses :func:`trt_logger`.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections import deque
from types import ModuleType

from ..errors import UserError

log = logging.getLogger(__name__)

FLAVOURS = ("tensorrt", "tensorrt_rtx")
"""Flavour names, which are also the module names, in order of preference."""

PIP_NAMES = {"tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt-rtx"}

MIN_ENTERPRISE_VERSION = (10, 1)
"""``set_device_memory`` and ``get_device_memory_size_for_profile_v2`` arrived in TensorRT 10.1."""


def _import(flavour: str) -> ModuleType | None:
    try:
        return importlib.import_module(flavour)
    except (ImportError, OSError):  # OSError: the wheel is there but its shared libraries are not
        return None


def installed_flavours() -> dict[str, str]:
    """Flavour name to version for every TensorRT flavour that imports here."""
    found = {}
    for flavour in FLAVOURS:
        module = _import(flavour)
        if module is not None:
            found[flavour] = module.__version__
    return found


@functools.cache
def load_trt(flavour: str | None = None) -> tuple[ModuleType, str, str]:
    """``(module, flavour, version)`` for ``flavour``, or for the preferred installed one when None."""
    if flavour is not None and flavour not in FLAVOURS:
        raise UserError(f"unknown TensorRT flavour '{flavour}'; choose one of: {', '.join(FLAVOURS)}")
    for name in (flavour,) if flavour else FLAVOURS:
        module = _import(name)
        if module is None:
            continue
        version = module.__version__
        if name == "tensorrt" and tuple(int(part) for part in version.split(".")[:2]) < MIN_ENTERPRISE_VERSION:
            raise UserError(f"TensorRT {version} is too old; install TensorRT 10.1 or newer with `pip install -U tensorrt`")
        return module, name, version
    if flavour:
        raise UserError(f"{flavour} is not installed; install it with `pip install {PIP_NAMES[flavour]}`")
    raise UserError(
        "TensorRT is not installed; `pip install tensorrt` (TensorRT ≥ 10.1) or `pip install tensorrt-rtx` "
        "(builds without a GPU), or use the onnxruntime backend"
    )


@functools.cache
def trt_logger(flavour: str):
    """One process-wide TensorRT logger per flavour: forwards to :mod:`logging` and keeps the recent errors.

    ``logger.errors`` holds the last error messages, so that a failed parse or build can
    say why in its one-line :class:`UserError`.
    """
    trt, _, _ = load_trt(flavour)
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.ERROR,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,
        severity.VERBOSE: logging.DEBUG,
    }

    class RecordingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: deque[str] = deque(maxlen=16)

        def log(self, level, message):
            if int(level) <= int(severity.ERROR):
                self.errors.append(message)
            if int(level) <= int(severity.WARNING) or log.isEnabledFor(logging.DEBUG):
                log.log(levels[level], "%s: %s", flavour, message)

    return RecordingLogger()
