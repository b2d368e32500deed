"""An operator on a padded canvas: the original degradation sees only the top-left H × W region.

Networks need image sizes divisible by their downsampling factor. Rather than inventing
observations for the padding, the restoration runs on a larger canvas whose extra rows
and columns are unobserved:

    A_pad x = A (x[:H, :W]),   A_padᵀ y = pad₀(Aᵀ y),
    prox: the inner data step on the region, ``t = z`` on the border.

With an SVD, the border pixels are extra right-singular vectors with singular value 0:
``V_padᵀ x = [Vᵀ x[:H, :W], x_border]``, and U, Σ are the inner ones.
"""

from __future__ import annotations

import torch

from .base import Mu, Operator, SVDOperator, Tensor


class PaddedOperator(SVDOperator):
    """``inner`` applied to the top-left ``inner.size`` region of a (B, C, *size) canvas."""

    def __init__(self, inner: Operator, size: tuple[int, int]):
        super().__init__(inner.task, size, inner.channels)
        self.inner = inner
        self.has_svd = inner.has_svd
        if hasattr(inner, "scale"):
            self.scale = inner.scale
        height, width = inner.size
        canvas = torch.ones(inner.channels, *size, dtype=torch.bool)
        canvas[:, :height, :width] = False
        self.border = canvas.reshape(-1).nonzero().squeeze(1)

    def _crop(self, x: Tensor) -> Tensor:
        return x[..., : self.inner.size[0], : self.inner.size[1]]

    def _embed(self, region: Tensor, canvas: Tensor) -> Tensor:
        """``canvas`` with its top-left region replaced by ``region``."""
        out = canvas.clone()
        out[..., : self.inner.size[0], : self.inner.size[1]] = region
        return out

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.inner.y_shape((x_shape[0], *self.inner.x_shape[1:]))

    def A(self, x: Tensor) -> Tensor:
        self.check_x(x)
        return self.inner.A(self._crop(x))

    def A_adjoint(self, y: Tensor) -> Tensor:
        region = self.inner.A_adjoint(y)
        return self._embed(region, region.new_zeros(region.shape[0], *self.x_shape[1:]))

    def prox_l2(self, b: Tensor, z: Tensor, mu: Mu) -> Tensor:
        self.check_x(z)
        return self._embed(self.inner.prox_l2(b, self._crop(z), mu), z)

    def singular_values(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
        return self.inner.singular_values(dtype, device)

    def V_adjoint(self, x: Tensor) -> Tensor:
        x = self.flat_image(x).reshape(x.shape[0], *self.x_shape[1:])
        border = x.reshape(x.shape[0], -1).index_select(1, self.border.to(x.device))
        return torch.cat([self.inner.V_adjoint(self._crop(x)), border], dim=1)

    def V(self, v: Tensor) -> Tensor:
        n_inner = self.inner.n
        region = self.inner.V(v[:, :n_inner]).reshape(v.shape[0], *self.inner.x_shape[1:])
        canvas = v.new_zeros(v.shape[0], self.n).index_copy_(1, self.border.to(v.device), v[:, n_inner:])
        return self._embed(region, canvas.reshape(v.shape[0], *self.x_shape[1:])).reshape(v.shape[0], -1)

    def U(self, u: Tensor) -> Tensor:
        return self.inner.U(u)

    def U_adjoint(self, y: Tensor) -> Tensor:
        return self.inner.U_adjoint(y)

    @property
    def m(self) -> int:
        return self.inner.m
