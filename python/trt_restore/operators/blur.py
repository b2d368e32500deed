"""Deblurring operators.

- Separable kernels with zero boundary (deblur-gauss, deblur-uniform): ``Y = R_h X R_wᵀ`` with
  the 1-D convolution matrices ``R[i, j] = k[i − j + r]`` (r = half the kernel length), as
  in DDRM's ``Deblurring``; the SVD comes from the two 1-D matrices.
- Any 2-D kernel with circular boundary (deblur-motion): ``y = F⁻¹(K̂ ⊙ F x)`` with a real SVD
  in the real Fourier basis.
"""

from __future__ import annotations

import torch

from .. import kernels
from .base import Mu, SVDOperator, Tensor, TensorCache, batch_scalar, interleave_channels
from .fourier import RealFourierBasis, centered_psf
from .separable import SeparableOperator


def conv_matrix(kernel: Tensor, n: int) -> Tensor:
    """(n, n) matrix of the zero-boundary "same" convolution with an odd-length 1-D kernel:
    ``(R x)[i] = Σ_u k[u] x[i − u + r]``, i.e. ``R[i, j] = k[i − j + r]``."""
    radius = kernel.numel() // 2
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :] + radius
    inside = (offset >= 0) & (offset < kernel.numel())
    return torch.where(inside, kernel[offset.clamp(0, kernel.numel() - 1)], torch.zeros((), dtype=kernel.dtype))


def separable_blur(task: str, size: tuple[int, int], channels: int, kernel: Tensor) -> SeparableOperator:
    """Zero-boundary blur with the separable kernel ``k kᵀ`` for a float64 odd-length 1-D ``kernel``."""
    return SeparableOperator(task, size, channels, conv_matrix(kernel, size[0]), conv_matrix(kernel, size[1]))


class CircularBlur(SVDOperator):
    """Circular convolution ``y = F⁻¹(K̂ ⊙ F x)`` with any 2-D kernel (see :func:`centered_psf`).

    SVD in the real Fourier basis (:class:`RealFourierBasis`): Vᵀ gives the real coefficients,
    ``Σ = |K̂(k)|`` and U is the same basis rotated by the phase of K̂ (a 2×2 rotation on each
    (√2 Re, √2 Im) pair, a sign on self-conjugate bins; phase 1 where K̂ = 0), so that
    ``Uᵀ y`` holds the real coefficients of ``conj(K̂/|K̂|) F y``. Coefficients are sorted by
    descending ``|K̂|``, channels interleaved.
    """

    def __init__(self, size: tuple[int, int], channels: int, kernel: Tensor):
        super().__init__("deblur-motion", size, channels)
        otf = torch.fft.rfft2(centered_psf(kernel, size))
        self.basis = RealFourierBasis(size)
        response = otf.reshape(-1)[self.basis.coef_bin]
        # A self-conjugate bin's transfer is real (the inverse real FFT reads only its real part).
        response = torch.where(self.basis.self_conjugate, response.real.to(response.dtype), response)
        gain = response.abs()
        phase = torch.where(gain > 0, response / gain.clamp_min(torch.finfo(gain.dtype).tiny), torch.ones_like(response))
        is_re = self.basis.real_part
        coef = torch.arange(gain.numel())
        singular, order = torch.sort(gain, descending=True, stable=True)
        self.consts = TensorCache(
            otf=otf,
            index=interleave_channels(order, channels, gain.numel()),
            rotation_partner=torch.where(self.basis.self_conjugate, coef, torch.where(is_re, coef + 1, coef - 1)),
            rotation_diagonal=phase.real,
            rotation_off=torch.where(self.basis.self_conjugate, 0.0, torch.where(is_re, -phase.imag, phase.imag)),
            singular_values=singular.repeat_interleave(channels),
        )

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(x_shape)

    def _filter(self, x: Tensor, conjugate: bool) -> Tensor:
        otf = self.consts.get("otf", x)
        spectrum = torch.fft.rfft2(x) * (otf.conj() if conjugate else otf)
        return torch.fft.irfft2(spectrum, s=self.size)

    def A(self, x: Tensor) -> Tensor:
        """``F⁻¹(K̂ ⊙ F x)``."""
        self.check_x(x)
        return self._filter(x, conjugate=False)

    def A_adjoint(self, y: Tensor) -> Tensor:
        """``F⁻¹(conj(K̂) ⊙ F y)``."""
        self.check_y(y)
        return self._filter(y, conjugate=True)

    def prox_l2(self, b: Tensor, z: Tensor, mu: Mu) -> Tensor:
        """``F⁻¹[(conj(K̂) B̂ + μ Ẑ) / (|K̂|² + μ)]`` (:func:`kernels.fft_prox`)."""
        self.check_y(b)
        self.check_x(z)
        spectrum = kernels.fft_prox(self.consts.get("otf", z), torch.fft.rfft2(b), torch.fft.rfft2(z), batch_scalar(mu, z))
        return torch.fft.irfft2(spectrum, s=self.size)

    def _rotate(self, coeffs: Tensor, transpose: bool) -> Tensor:
        """Rotate each (Re, Im) coefficient pair by the phase of K̂ (by its inverse when ``transpose``)."""
        off = self.consts.get("rotation_off", coeffs)
        partner = coeffs.index_select(-1, self.consts.get("rotation_partner", coeffs))
        return coeffs * self.consts.get("rotation_diagonal", coeffs) + partner * (-off if transpose else off)

    def _sorted(self, coeffs: Tensor) -> Tensor:
        flat = coeffs.reshape(coeffs.shape[0], -1)
        return kernels.permute(flat, self.consts.get("index", flat))

    def _unsorted(self, flat: Tensor) -> Tensor:
        return kernels.unpermute(flat, self.consts.get("index", flat)).reshape(flat.shape[0], self.channels, -1)

    def V_adjoint(self, x: Tensor) -> Tensor:
        flat = self.flat_image(x)
        return self._sorted(self.basis.analysis(flat.reshape(-1, *self.x_shape[1:])))

    def V(self, v: Tensor) -> Tensor:
        return self.basis.synthesis(self._unsorted(self.flat_image(v))).reshape(v.shape[0], -1)

    def U_adjoint(self, y: Tensor) -> Tensor:
        flat = self.flat_observation(y)
        return self._sorted(self._rotate(self.basis.analysis(flat.reshape(-1, *self.x_shape[1:])), transpose=True))

    def U(self, u: Tensor) -> Tensor:
        coeffs = self._rotate(self._unsorted(self.flat_observation(u)), transpose=False)
        return self.basis.synthesis(coeffs).reshape(u.shape[0], -1)
