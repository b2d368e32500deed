"""Super-resolution operators for an integer scale s (the image size must be divisible by s).

- ``srN`` box average: ``y = mean`` of each s×s block (a :class:`GroupMeanOperator`).
- ``srN-bicubic``: strided bicubic downsampling ``Y = R_h X R_wᵀ`` (DDRM's ``SRConv``), whose
  1-D rows are the Keys cubic (a = −0.5) stretched by s, with symmetric boundary.
- ``srN-gauss``: circular blur then keep every s-th pixel, ``y = (k ⊛ x)[::s, ::s]`` (the
  USRNet/DPIR model), with the closed-form data step of Zhao et al. 2016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import kernels
from ..errors import UserError
from .base import Mu, Operator, Tensor, TensorCache, batch_scalar
from .fourier import centered_psf
from .groupmean import GroupMeanOperator
from .kernels_io import cubic
from .separable import SeparableOperator

SR_SCALES = (2, 3, 4, 8)


def check_divisible(task: str, size: tuple[int, int], scale: int) -> None:
    """Raise a UserError unless both sides of ``size`` are multiples of ``scale``."""
    if size[0] % scale or size[1] % scale:
        raise UserError(
            f"task '{task}' needs height and width divisible by {scale}, got {size[0]}x{size[1]}; "
            f"crop or pad the image to a multiple of {scale}"
        )


def low_res_shape(x_shape: tuple[int, ...], scale: int) -> tuple[int, ...]:
    """(B, C, H, W) -> (B, C, H/s, W/s)."""
    return (*x_shape[:-2], x_shape[-2] // scale, x_shape[-1] // scale)


class BoxDownsample(GroupMeanOperator):
    """``y = avg_pool(x, s)``: σ = 1/s, V puts the (scaled) block means first (see :mod:`.groupmean`)."""

    def __init__(self, size: tuple[int, int], channels: int, scale: int):
        task = f"sr{scale}"
        check_divisible(task, size, scale)
        self.scale = scale
        height, width = size
        blocks = torch.arange(channels * height * width).reshape(channels, height // scale, scale, width // scale, scale)
        super().__init__(task, size, channels, blocks.permute(2, 4, 0, 1, 3).reshape(scale * scale, -1))

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return low_res_shape(x_shape, self.scale)

    def A(self, x: Tensor) -> Tensor:
        """Mean of each s×s block."""
        self.check_x(x)
        return F.avg_pool2d(x, self.scale)

    def A_adjoint(self, y: Tensor) -> Tensor:
        """Each low-resolution value spread over its block, divided by s²."""
        self.check_y(y)
        return y.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1) / self.scale**2


def bicubic_matrix(n: int, scale: int) -> Tensor:
    """(n/s, n) float64 matrix of bicubic downsampling by s.

    Row m is centred at ``c = (m + ½) s − ½`` with weights ``cubic((j − c)/s)`` normalised to
    sum 1; taps outside [0, n) are mirrored back (symmetric boundary, ``−1 ↦ 0``).
    """
    rows = n // scale
    centre = (torch.arange(rows, dtype=torch.float64) + 0.5) * scale - 0.5
    taps = torch.floor(centre)[:, None] + torch.arange(-2 * scale, 2 * scale + 2, dtype=torch.float64)[None, :]
    weights = cubic((taps - centre[:, None]) / scale)
    period = taps.long() % (2 * n)
    index = torch.where(period < n, period, 2 * n - 1 - period)
    matrix = torch.zeros(rows, n, dtype=torch.float64).scatter_add_(1, index, weights)
    return matrix / matrix.sum(dim=1, keepdim=True)


class BicubicDownsample(SeparableOperator):
    """``srN-bicubic``: per-channel ``Y = R_h X R_wᵀ`` with :func:`bicubic_matrix` rows."""

    def __init__(self, size: tuple[int, int], channels: int, scale: int):
        task = f"sr{scale}-bicubic"
        check_divisible(task, size, scale)
        self.scale = scale
        super().__init__(task, size, channels, bicubic_matrix(size[0], scale), bicubic_matrix(size[1], scale))


class GaussianDownsample(Operator):
    """``y = (k ⊛ x)[::s, ::s]`` with circular convolution ``k ⊛ x = F⁻¹(K̂ ⊙ F x)``; no SVD."""

    def __init__(self, size: tuple[int, int], channels: int, scale: int, kernel: Tensor):
        task = f"sr{scale}-gauss"
        check_divisible(task, size, scale)
        super().__init__(task, size, channels)
        self.scale = scale
        self.consts = TensorCache(otf=torch.fft.fft2(centered_psf(kernel, size)))

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return low_res_shape(x_shape, self.scale)

    def _filter(self, x: Tensor, conjugate: bool) -> Tensor:
        otf = self.consts.get("otf", x)
        return torch.fft.ifft2(torch.fft.fft2(x) * (otf.conj() if conjugate else otf)).real

    def A(self, x: Tensor) -> Tensor:
        """Blur, then keep pixels (s·i, s·j)."""
        self.check_x(x)
        return self._filter(x, conjugate=False)[..., :: self.scale, :: self.scale]

    def A_adjoint(self, y: Tensor) -> Tensor:
        """Zero-filled upsampling, then the adjoint blur ``F⁻¹(conj(K̂) ⊙ F ·)``."""
        self.check_y(y)
        upsampled = y.new_zeros(*y.shape[:-2], *self.size)
        upsampled[..., :: self.scale, :: self.scale] = y
        return self._filter(upsampled, conjugate=True)

    def prox_l2(self, b: Tensor, z: Tensor, mu: Mu) -> Tensor:
        """Zhao et al.'s closed form (:func:`kernels.sr_fft_prox`) on the full 2-D spectrum."""
        atb = self.A_adjoint(b)
        self.check_x(z)
        spectrum = kernels.sr_fft_prox(
            self.consts.get("otf", z), torch.fft.fft2(atb), torch.fft.fft2(z), batch_scalar(mu, z), self.scale
        )
        return torch.fft.ifft2(spectrum).real
