"""The observation model ``y = A x + σ n`` with reproducible Gaussian noise."""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from .base import Operator, Tensor


class Degradation:
    """An operator plus white Gaussian noise of standard deviation ``sigma`` (on the [0, 1] image scale)."""

    def __init__(self, operator: Operator, sigma: float):
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma >= 0):
            raise UserError(f"noise sigma must be a finite number >= 0 on the [0, 1] scale (25/255 for level 25), got {sigma!r}")
        self.operator = operator
        self.sigma = float(sigma)

    def noise(self, shape: tuple[int, ...], seed: int, like: Tensor) -> Tensor:
        """Standard normal noise drawn in float64 by a CPU generator seeded with ``seed``,
        then cast to ``like``'s dtype and moved to its device: the same numbers on every device."""
        generator = torch.Generator().manual_seed(int(seed))
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(device=like.device, dtype=like.dtype)

    def observe(self, x: Tensor, seed: int) -> Tensor:
        """``y = A x + σ n`` with n from :meth:`noise`."""
        clean = self.operator.A(x)
        return clean + self.sigma * self.noise(tuple(clean.shape), seed, clean)
