"""Separable operators ``Y = R_h X R_wᵀ`` per channel, with the SVD built from the two 1-D matrices.

With ``R_h = U_h S_h V_hᵀ`` (m_h × H) and ``R_w = U_w S_w V_wᵀ`` (m_w × W):

    Vᵀ x = sort(V_hᵀ X V_w),   Σ = sort(s_h[i] · s_w[j]) for i < m_h, j < m_w,   Uᵀ y = sort(U_hᵀ Y U_w),

where ``sort`` lists the coefficients by descending singular value (channels
interleaved, so K = C·m_h·m_w values stay sorted) and, in Vᵀ, appends the
null-space coefficients (i ≥ m_h or j ≥ m_w).
"""

from __future__ import annotations

import torch

from .. import kernels
from .base import SVDOperator, Tensor, TensorCache, interleave_channels


class SeparableOperator(SVDOperator):
    """Per-channel ``Y = R_h X R_wᵀ`` for float64 matrices ``rows`` (m_h, H) and ``cols`` (m_w, W), m ≤ size."""

    def __init__(self, task: str, size: tuple[int, int], channels: int, rows: Tensor, cols: Tensor):
        super().__init__(task, size, channels)
        height, width = self.size
        self.out_size = (rows.shape[0], cols.shape[0])
        u_h, s_h, vt_h = torch.linalg.svd(rows)
        u_w, s_w, vt_w = torch.linalg.svd(cols)
        singular, order = torch.sort((s_h[:, None] * s_w[None, :]).reshape(-1), descending=True, stable=True)
        m_h, m_w = self.out_size
        i, j = order // m_w, order % m_w
        in_range = torch.zeros(height, width, dtype=torch.bool)
        in_range[:m_h, :m_w] = True
        v_order = torch.cat([i * width + j, torch.nonzero(~in_range.reshape(-1)).reshape(-1)])
        self.consts = TensorCache(
            rows=rows,
            cols=cols,
            u_h=u_h,
            u_w=u_w,
            v_h=vt_h.T.contiguous(),
            v_w=vt_w.T.contiguous(),
            v_index=interleave_channels(v_order, channels, height * width),
            u_index=interleave_channels(order, channels, m_h * m_w),
            singular_values=singular.repeat_interleave(channels),
        )

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (x_shape[0], x_shape[1], *self.out_size)

    def _sandwich(self, left: str, x: Tensor, right: str, transpose: bool) -> Tensor:
        """``L X Rᵀ`` (or ``Lᵀ X R`` when ``transpose``) on every channel of ``x``."""
        lhs, rhs = self.consts.get(left, x), self.consts.get(right, x)
        return (lhs.T @ x @ rhs) if transpose else (lhs @ x @ rhs.T)

    def A(self, x: Tensor) -> Tensor:
        """``R_h X R_wᵀ``."""
        self.check_x(x)
        return self._sandwich("rows", x, "cols", transpose=False)

    def A_adjoint(self, y: Tensor) -> Tensor:
        """``R_hᵀ Y R_w``."""
        self.check_y(y)
        return self._sandwich("rows", y, "cols", transpose=True)

    def V_adjoint(self, x: Tensor) -> Tensor:
        image = self.flat_image(x).reshape(-1, *self.x_shape[1:])
        coeffs = self._sandwich("v_h", image, "v_w", transpose=True).reshape(image.shape[0], -1)
        return kernels.permute(coeffs, self.consts.get("v_index", coeffs))

    def V(self, v: Tensor) -> Tensor:
        flat = self.flat_image(v)
        coeffs = kernels.unpermute(flat, self.consts.get("v_index", flat)).reshape(-1, *self.x_shape[1:])
        return self._sandwich("v_h", coeffs, "v_w", transpose=False).reshape(flat.shape[0], -1)

    def U_adjoint(self, y: Tensor) -> Tensor:
        flat = self.flat_observation(y)
        image = flat.reshape(flat.shape[0], self.channels, *self.out_size)
        coeffs = self._sandwich("u_h", image, "u_w", transpose=True).reshape(flat.shape[0], -1)
        return kernels.permute(coeffs, self.consts.get("u_index", coeffs))

    def U(self, u: Tensor) -> Tensor:
        flat = self.flat_observation(u)
        coeffs = kernels.unpermute(flat, self.consts.get("u_index", flat))
        image = coeffs.reshape(flat.shape[0], self.channels, *self.out_size)
        return self._sandwich("u_h", image, "u_w", transpose=False).reshape(flat.shape[0], -1)
