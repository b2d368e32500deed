"""Inpainting: ``y = m ⊙ x`` for a binary mask m (1 = observed).

SVD with M = N: ``U = V = P`` the permutation that lists the observed entries first,
``Σ = 1`` for the K observed entries; so ``prox_l2 = (m ⊙ b + μ z) / (m + μ)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import kernels
from ..errors import UserError
from .base import SVDOperator, Tensor, TensorCache

MaskSpec = Tensor | np.ndarray | str | Path


def _read_mask_file(path: Path) -> Tensor:
    """A mask file: ``.npy`` (nonzero = observed) or an image (brighter than mid-grey = observed)."""
    if not path.is_file():
        raise UserError(f"mask file {path} not found")
    if path.suffix.lower() == ".npy":
        return torch.as_tensor(np.load(path)) != 0
    from PIL import Image

    try:
        with Image.open(path) as image:
            return torch.as_tensor(np.array(image.convert("L"))) >= 128
    except OSError as error:
        raise UserError(f"cannot read mask image {path}: {error}") from None


def _given_mask(spec: MaskSpec, size: tuple[int, int], channels: int) -> Tensor:
    mask = _read_mask_file(Path(spec).expanduser()) if isinstance(spec, (str, Path)) else torch.as_tensor(spec) != 0
    mask = mask.cpu()
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3 or tuple(mask.shape[1:]) != tuple(size) or mask.shape[0] not in (1, channels):
        raise UserError(
            f"mask must have shape (H, W), (1, H, W) or (C, H, W) = ({channels}, {size[0]}, {size[1]}), got {tuple(mask.shape)}"
        )
    return mask.expand(channels, *size)


def _random_mask(fraction: float, seed: int, size: tuple[int, int], channels: int) -> Tensor:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise UserError(f"fraction (the share of missing pixels) must be in [0, 1), got {fraction!r}")
    pixels = size[0] * size[1]
    missing = torch.randperm(pixels, generator=torch.Generator().manual_seed(int(seed)))[: round(fraction * pixels)]
    mask = torch.ones(pixels, dtype=torch.bool)
    mask[missing] = False
    return mask.reshape(1, *size).expand(channels, *size)


def _box_mask(box: tuple[int, int, int, int], size: tuple[int, int], channels: int) -> Tensor:
    if len(box) != 4 or not all(isinstance(v, int) and v >= 0 for v in box):
        raise UserError(f"box must be (top, left, height, width) with non-negative integers, got {box!r}")
    top, left, height, width = box
    if top + height > size[0] or left + width > size[1]:
        raise UserError(f"box {tuple(box)} reaches outside the {size[0]}x{size[1]} image")
    mask = torch.ones(channels, *size, dtype=torch.bool)
    mask[:, top : top + height, left : left + width] = False
    return mask


def make_mask(
    size: tuple[int, int],
    channels: int,
    *,
    mask: MaskSpec | None = None,
    fraction: float | None = None,
    seed: int = 0,
    box: tuple[int, int, int, int] | None = None,
) -> Tensor:
    """The (C, H, W) boolean mask (True = observed) from exactly one of:
    ``mask`` (array/tensor or file), ``fraction`` of pixels missing at random (``seed``;
    the same pixels in every channel) or a missing ``box`` = (top, left, height, width)."""
    given = [name for name, value in (("mask", mask), ("fraction", fraction), ("box", box)) if value is not None]
    if len(given) != 1:
        raise UserError(f"inpaint needs exactly one of mask=, fraction= or box=, got {given or 'none'}")
    if mask is not None:
        return _given_mask(mask, size, channels)
    if fraction is not None:
        return _random_mask(fraction, seed, size, channels)
    return _box_mask(tuple(box), size, channels)


class Inpaint(SVDOperator):
    """``y = m ⊙ x`` for a (C, H, W) boolean mask m; the observation keeps the image shape."""

    def __init__(self, size: tuple[int, int], channels: int, mask: Tensor):
        super().__init__("inpaint", size, channels)
        flat = mask.reshape(-1)
        observed = torch.nonzero(flat).reshape(-1)
        if observed.numel() == 0:
            raise UserError("the inpainting mask observes no pixel; keep at least one")
        self.consts = TensorCache(
            mask=mask.to(torch.float64),
            index=torch.cat([observed, torch.nonzero(~flat).reshape(-1)]),
            singular_values=torch.ones(observed.numel(), dtype=torch.float64),
        )

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(x_shape)

    def A(self, x: Tensor) -> Tensor:
        """``m ⊙ x``."""
        self.check_x(x)
        return x * self.consts.get("mask", x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        """``m ⊙ y`` (A is symmetric)."""
        self.check_y(y)
        return y * self.consts.get("mask", y)

    def V_adjoint(self, x: Tensor) -> Tensor:
        flat = self.flat_image(x)
        return kernels.permute(flat, self.consts.get("index", flat))

    def V(self, v: Tensor) -> Tensor:
        flat = self.flat_image(v)
        return kernels.unpermute(flat, self.consts.get("index", flat))

    def U_adjoint(self, y: Tensor) -> Tensor:
        flat = self.flat_observation(y)
        return kernels.permute(flat, self.consts.get("index", flat))

    def U(self, u: Tensor) -> Tensor:
        flat = self.flat_observation(u)
        return kernels.unpermute(flat, self.consts.get("index", flat))
