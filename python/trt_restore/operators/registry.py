"""``make_operator``: task names and their parameters.

Tasks: ``denoise``; ``srN`` (box average), ``srN-bicubic`` and ``srN-gauss`` for N in
:data:`SR_SCALES`; ``deblur-gauss``, ``deblur-uniform``, ``deblur-motion``; ``inpaint``;
``colorize``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

from ..errors import UserError
from .base import Operator
from .blur import CircularBlur, separable_blur
from .colorize import Colorize
from .denoise import Denoise
from .inpaint import Inpaint, MaskSpec, make_mask
from .kernels_io import KernelSpec, gaussian_kernel_1d, gaussian_kernel_2d, load_kernel, uniform_kernel_1d
from .superres import SR_SCALES, BicubicDownsample, BoxDownsample, GaussianDownsample

Size = tuple[int, int]


def _deblur_gauss(size: Size, channels: int, kernel_sigma: float = 1.6, kernel_size: int = 25) -> Operator:
    return separable_blur("deblur-gauss", size, channels, gaussian_kernel_1d(kernel_sigma, kernel_size))


def _deblur_uniform(size: Size, channels: int, kernel_size: int = 9) -> Operator:
    return separable_blur("deblur-uniform", size, channels, uniform_kernel_1d(kernel_size))


def _deblur_motion(size: Size, channels: int, kernel: KernelSpec | None = None) -> Operator:
    if kernel is None:
        raise UserError("deblur-motion needs kernel= (an array, a .npy/.png file, or a bank entry such as 'Levin09:0')")
    return CircularBlur(size, channels, load_kernel(kernel))


def _inpaint(
    size: Size,
    channels: int,
    mask: MaskSpec | None = None,
    fraction: float | None = None,
    seed: int = 0,
    box: tuple[int, int, int, int] | None = None,
) -> Operator:
    return Inpaint(size, channels, make_mask(size, channels, mask=mask, fraction=fraction, seed=seed, box=box))


def _sr_gauss(
    size: Size,
    channels: int,
    scale: int,
    kernel_sigma: float | None = None,
    kernel_size: int | None = None,
    kernel: KernelSpec | None = None,
) -> Operator:
    """Default kernel: isotropic Gaussian with σ = s/2 (size 2⌈3σ⌉ + 1 unless given)."""
    if kernel is not None:
        if kernel_sigma is not None or kernel_size is not None:
            raise UserError(f"sr{scale}-gauss takes either kernel= or kernel_sigma=/kernel_size=, not both")
        return GaussianDownsample(size, channels, scale, load_kernel(kernel))
    sigma = scale / 2 if kernel_sigma is None else kernel_sigma
    return GaussianDownsample(size, channels, scale, gaussian_kernel_2d(sigma, kernel_size))


_TASKS: dict[str, Callable[..., Operator]] = {
    "denoise": Denoise,
    "deblur-gauss": _deblur_gauss,
    "deblur-uniform": _deblur_uniform,
    "deblur-motion": _deblur_motion,
    "inpaint": _inpaint,
    "colorize": Colorize,
}
_SR_FAMILIES: dict[str, Callable[..., Operator]] = {"": BoxDownsample, "-bicubic": BicubicDownsample, "-gauss": _sr_gauss}
_SR_TASK = re.compile(r"^sr(\d+)(-bicubic|-gauss|)$")

TASKS = ("denoise", "srN", "srN-bicubic", "srN-gauss", "deblur-gauss", "deblur-uniform", "deblur-motion", "inpaint", "colorize")
"""Task names; N is one of :data:`SR_SCALES`."""


def _builder(task: str) -> tuple[Callable[..., Operator], dict]:
    sr = _SR_TASK.match(task) if isinstance(task, str) else None
    if sr:
        scale = int(sr.group(1))
        if scale not in SR_SCALES:
            raise UserError(f"super-resolution scale {scale} is not supported; use one of {', '.join(map(str, SR_SCALES))}")
        return _SR_FAMILIES[sr.group(2)], {"scale": scale}
    if task in _TASKS:
        return _TASKS[task], {}
    scales = "/".join(map(str, SR_SCALES))
    raise UserError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)} (N = {scales}, e.g. sr4)")


def _check_geometry(size: Size, channels: int) -> Size:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise UserError(f"size must be (height, width) with positive integers, got {size!r}")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise UserError(f"channels must be a positive integer, got {channels!r}")
    return (size[0], size[1])


def make_operator(task: str, *, size: Size, channels: int = 3, **params) -> Operator:
    """The degradation operator for ``task`` on (B, channels, H, W) images with ``size = (H, W)``.

    ``params`` are the task's own options: deblur-gauss ``kernel_sigma=1.6, kernel_size=25``;
    deblur-uniform ``kernel_size=9``; deblur-motion ``kernel=``; srN-gauss ``kernel_sigma``,
    ``kernel_size`` or ``kernel=``; inpaint one of ``mask=``, ``fraction=`` (with ``seed=0``),
    ``box=(top, left, height, width)``.

    >>> import torch
    >>> op = make_operator("sr4", size=(32, 32), channels=3)
    >>> op.A(torch.rand(1, 3, 32, 32)).shape
    torch.Size([1, 3, 8, 8])
    >>> op.adjointness_error() < 1e-12, op.svd_error() < 1e-12, op.prox_error(mu=0.01) < 1e-12
    (True, True, True)
    >>> blur = make_operator("sr2-gauss", size=(16, 16), kernel_sigma=1.0, kernel_size=5)
    >>> blur.has_svd, blur.adjointness_error() < 1e-12, blur.prox_error(mu=0.01) < 1e-10
    (False, True, True)
    """
    builder, fixed = _builder(task)
    size = _check_geometry(size, channels)
    accepted = [name for name in inspect.signature(builder).parameters if name not in ("size", "channels", *fixed)]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise UserError(
            f"task '{task}' has no parameter {', '.join(unknown)}; its parameters: {', '.join(accepted) or 'none'}"
        )
    return builder(size, channels, **fixed, **params)
