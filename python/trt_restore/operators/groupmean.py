"""Operators that average disjoint groups of g pixels: box-average SR (s×s blocks) and colorisation (channels).

With P the permutation that lists the q-th member of every group as row q of a
(g, K) array and Q the orthonormal DCT-II basis of length g (first row ``1/√g``):

    Vᵀ x = (Q ⊗ I_K) P x,   Σ = (1/√g) 1_K,   U = I_K,

so the first K coefficients are the group sums over ``√g`` and ``A x = Σ ⊙ (Vᵀx)[:K]``
is the group mean.
"""

from __future__ import annotations

import math

import torch

from .. import kernels
from .base import SVDOperator, Tensor, TensorCache


def dct_basis(n: int) -> Tensor:
    """Orthonormal DCT-II matrix (n, n) in float64: ``Q[q, i] = √((2 − δ_q0)/n) cos(π q (2i + 1) / 2n)``."""
    q = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * q * (2 * i + 1) / (2 * n)) * math.sqrt(2 / n)
    basis[0] = 1 / math.sqrt(n)
    return basis


class GroupMeanOperator(SVDOperator):
    """``y_k = mean_q x[groups[q, k]]`` with the SVD above; subclasses give the direct A and Aᵀ."""

    def __init__(self, task: str, size: tuple[int, int], channels: int, groups: Tensor):
        super().__init__(task, size, channels)
        self.group_size, count = groups.shape
        self.consts = TensorCache(
            index=groups.reshape(-1),
            basis=dct_basis(self.group_size),
            singular_values=torch.full((count,), 1 / math.sqrt(self.group_size), dtype=torch.float64),
        )

    def V_adjoint(self, x: Tensor) -> Tensor:
        flat = self.flat_image(x)
        grouped = kernels.permute(flat, self.consts.get("index", flat)).reshape(flat.shape[0], self.group_size, -1)
        return (self.consts.get("basis", flat) @ grouped).reshape(flat.shape[0], -1)

    def V(self, v: Tensor) -> Tensor:
        flat = self.flat_image(v)
        grouped = flat.reshape(flat.shape[0], self.group_size, -1)
        mixed = (self.consts.get("basis", flat).T @ grouped).reshape(flat.shape[0], -1)
        return kernels.unpermute(mixed, self.consts.get("index", flat))

    def U(self, u: Tensor) -> Tensor:
        return self.flat_observation(u)

    def U_adjoint(self, y: Tensor) -> Tensor:
        return self.flat_observation(y)
