"""Colorisation: ``y = mean over channels`` (a gray image (B, 1, H, W)).

A :class:`GroupMeanOperator` whose groups are the C values of each pixel: σ = 1/√C and V
puts the (scaled) gray image first, followed by the C − 1 chroma planes of the DCT basis.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from .base import Tensor
from .groupmean import GroupMeanOperator


class Colorize(GroupMeanOperator):
    """``y = (1/C) Σ_c x_c``, keepdim; needs C ≥ 2."""

    def __init__(self, size: tuple[int, int], channels: int):
        if channels < 2:
            raise UserError(f"colorize needs a colour image (channels >= 2), got channels={channels}")
        groups = torch.arange(channels * size[0] * size[1]).reshape(channels, -1)
        super().__init__("colorize", size, channels, groups)

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (x_shape[0], 1, *x_shape[2:])

    def A(self, x: Tensor) -> Tensor:
        """Channel mean."""
        self.check_x(x)
        return x.mean(dim=1, keepdim=True)

    def A_adjoint(self, y: Tensor) -> Tensor:
        """The gray value divided by C in every channel."""
        self.check_y(y)
        return y.expand(-1, self.channels, -1, -1) / self.channels
