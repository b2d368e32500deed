"""Degradation operators ``y = A x`` on (B, C, H, W) images: A, Aᵀ, the data step ``prox_l2``
and, where DDRM needs it, a real SVD ``A = U Σ Vᵀ`` on flattened vectors."""

from .base import Operator, SVDOperator, conjugate_gradient
from .kernels_io import kernel_bank, kernel_banks, load_kernel
from .noise import Degradation
from .registry import SR_SCALES, TASKS, make_operator

__all__ = [
    "Degradation",
    "Operator",
    "SR_SCALES",
    "SVDOperator",
    "TASKS",
    "conjugate_gradient",
    "kernel_bank",
    "kernel_banks",
    "load_kernel",
    "make_operator",
]
