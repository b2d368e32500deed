"""Denoising: ``A = I``."""

from __future__ import annotations

import torch

from .base import SVDOperator, Tensor, TensorCache


class Denoise(SVDOperator):
    """The identity: ``y = x``; U = V = I and Σ = 1, so ``prox_l2 = (b + μz) / (1 + μ)``."""

    def __init__(self, size: tuple[int, int], channels: int):
        super().__init__("denoise", size, channels)
        self.consts = TensorCache(singular_values=torch.ones(self.n, dtype=torch.float64))

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(x_shape)

    def A(self, x: Tensor) -> Tensor:
        self.check_x(x)
        return x

    def A_adjoint(self, y: Tensor) -> Tensor:
        self.check_y(y)
        return y

    def V(self, v: Tensor) -> Tensor:
        return self.flat_image(v)

    def V_adjoint(self, x: Tensor) -> Tensor:
        return self.flat_image(x)

    def U(self, u: Tensor) -> Tensor:
        return self.flat_observation(u)

    def U_adjoint(self, y: Tensor) -> Tensor:
        return self.flat_observation(y)
