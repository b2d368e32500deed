"""A real orthonormal Fourier basis of (H, W) images, and kernel placement for circular convolution.

With ``X = rfft2(x, norm="ortho")``, each frequency k is paired with −k (``X[−k] = conj X[k]``).
The real coefficients of ``x`` are, for one representative k of every pair,

    √2 Re X[k] and √2 Im X[k]      (k ≠ −k),
    Re X[k]                         (self-conjugate k: k_h, k_w ∈ {0, n/2}),

H·W numbers in all; the map is orthogonal because the unitary DFT preserves
norms. Each coefficient's frequency is :attr:`RealFourierBasis.coef_bin`.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from .base import Tensor, TensorCache


def centered_psf(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """The kernel zero-padded to ``size`` and rolled so its centre ``(kh//2, kw//2)`` sits at the origin.

    Its DFT is the transfer function of the circular convolution
    ``y[i] = Σ_u k[u] x[i − u + c]`` with c the kernel centre.
    """
    kh, kw = kernel.shape
    if kh > size[0] or kw > size[1]:
        raise UserError(
            f"the {kh}x{kw} blur kernel is larger than the {size[0]}x{size[1]} image; use a larger image or a smaller kernel"
        )
    padded = torch.zeros(size, dtype=kernel.dtype)
    padded[:kh, :kw] = kernel
    return torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))


class RealFourierBasis:
    """Analysis and synthesis in the real orthonormal Fourier basis of (H, W) images.

    Both are one rfft2/irfft2 plus one gather with per-entry scale, so they run on any device.
    ``coef_bin`` (the rfft2 bin of each coefficient), ``self_conjugate`` and ``real_part``
    (whether a coefficient is a real part) describe the coefficients.
    """

    def __init__(self, size: tuple[int, int]):
        height, width = size
        self.size = size
        half = width // 2 + 1
        h = torch.arange(height)[:, None].expand(height, half).reshape(-1)
        w = torch.arange(half)[None, :].expand(height, half).reshape(-1)
        partner_h, partner_w = (-h) % height, (-w) % width
        in_plane = partner_w < half
        self_conjugate = in_plane & (partner_h == h) & (partner_w == w)
        representative = ~in_plane | (~self_conjugate & (h < partner_h))
        counts = self_conjugate.long() + 2 * representative.long()
        start = torch.cumsum(counts, 0) - counts
        bins = torch.arange(h.numel())
        self.coef_bin = torch.repeat_interleave(bins, counts)
        part = torch.arange(self.coef_bin.numel()) - start[self.coef_bin]
        self.self_conjugate = self_conjugate[self.coef_bin]
        self.real_part = part == 0
        one = torch.ones((), dtype=torch.float64)
        # Synthesis: each (bin, Re/Im) slot of the half spectrum copies one coefficient (index
        # `zero` reads an appended 0) with scale 1 (self-conjugate), ±1/√2 (pairs).
        zero = self.coef_bin.numel()
        source_bin = torch.where(representative | self_conjugate, bins, partner_h * half + partner_w)
        re_index = start[source_bin]
        im_index = torch.where(self_conjugate, zero, start[source_bin] + 1)
        pair = one / math.sqrt(2)
        re_scale = torch.where(self_conjugate, one, pair)
        im_scale = torch.where(self_conjugate, 0 * one, torch.where(representative, pair, -pair))
        self.consts = TensorCache(
            # Analysis: coefficient j reads Re or Im (part) of its bin in the view_as_real layout.
            analysis_index=2 * self.coef_bin + part,
            analysis_scale=torch.where(self.self_conjugate, one, math.sqrt(2) * one),
            synthesis_index=torch.stack([re_index, im_index], dim=1).reshape(-1),
            synthesis_scale=torch.stack([re_scale, im_scale], dim=1).reshape(-1),
        )

    def analysis(self, x: Tensor) -> Tensor:
        """(…, H, W) images -> (…, H·W) real coefficients."""
        spectrum = torch.view_as_real(torch.fft.rfft2(x, norm="ortho")).reshape(*x.shape[:-2], -1)
        return spectrum.index_select(-1, self.consts.get("analysis_index", x)) * self.consts.get("analysis_scale", x)

    def synthesis(self, coeffs: Tensor) -> Tensor:
        """(…, H·W) real coefficients -> (…, H, W) images, the inverse (and transpose) of :meth:`analysis`."""
        padded = torch.cat([coeffs, coeffs.new_zeros(*coeffs.shape[:-1], 1)], dim=-1)
        index, scale = self.consts.get("synthesis_index", coeffs), self.consts.get("synthesis_scale", coeffs)
        slots = (padded.index_select(-1, index) * scale).reshape(*coeffs.shape[:-1], self.size[0], -1, 2)
        return torch.fft.irfft2(torch.view_as_complex(slots), s=self.size, norm="ortho")
