"""Linear degradation operators: the base classes.

An :class:`Operator` is a linear map ``A`` from images ``x`` of shape (B, C, H, W) to
observations ``y``. It gives ``A``, ``Aᵀ`` and the proximal data step
``prox_l2(b, z, μ) = argmin_t ½‖A t − b‖² + (μ/2)‖t − z‖² = (AᵀA + μI)⁻¹ (Aᵀb + μz)``,
by default through conjugate gradients, and checks of its own identities (``adjointness_error``,
``prox_error``), each a relative error that is 0 in exact arithmetic.

An :class:`SVDOperator` also exposes ``A = U Σ Vᵀ`` on flattened vectors (DDRM's
``H_functions`` contract) and solves the data step in closed form in that basis; it checks
the factorisation with ``svd_error`` and ``orthogonality_error``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import UserError

Tensor = torch.Tensor
Mu = float | Tensor


class TensorCache:
    """An operator's constant tensors: float64 (or complex128, or integer) masters on the CPU,
    cast on first use to the data's dtype and device and kept per (dtype, device)."""

    def __init__(self, **masters: Tensor):
        self._masters = masters
        self._copies: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}

    def get(self, name: str, like: Tensor) -> Tensor:
        """The constant ``name`` in ``like``'s real dtype (complex counterpart for spectra) on its device."""
        key = (name, like.dtype, like.device)
        if key not in self._copies:
            master = self._masters[name]
            if master.is_complex():
                dtype = like.dtype.to_complex()
            elif master.is_floating_point():
                dtype = like.dtype
            else:
                dtype = master.dtype
            self._copies[key] = master.to(device=like.device, dtype=dtype)
        return self._copies[key]


def batch_scalar(mu: Mu, like: Tensor) -> float | Tensor:
    """μ as a float, or as a per-item tensor shaped (B, 1, …) to broadcast against ``like``."""
    if isinstance(mu, (int, float)):
        if not mu > 0:
            raise UserError(f"prox_l2 needs mu > 0, got {mu}")
        return float(mu)
    mu = torch.as_tensor(mu, dtype=like.dtype, device=like.device)
    if mu.numel() not in (1, like.shape[0]):
        raise UserError(
            f"prox_l2's mu must be a float or hold one value per batch item ({like.shape[0]}), got shape {tuple(mu.shape)}"
        )
    return mu.reshape(-1, *([1] * (like.dim() - 1)))


def standard_normal(shape: tuple[int, ...], seed: int, like: Tensor | None = None) -> Tensor:
    """Seeded standard normal draws: float64 on the CPU, or in ``like``'s dtype on its device."""
    draw = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return draw if like is None else draw.to(like)


def relative_error(estimate: Tensor, reference: Tensor) -> float:
    """``‖estimate − reference‖ / ‖reference‖``."""
    return float((estimate - reference).norm() / reference.norm())


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor],
    rhs: Tensor,
    x0: Tensor | None = None,
    *,
    tol: float | None = None,
    max_iter: int = 1000,
) -> Tensor:
    """Solve ``apply(x) = rhs`` for a symmetric positive definite ``apply``, batched over dim 0.

    Standard CG: ``α = rᵀr / pᵀAp``, ``x += αp``, ``r −= αAp``, ``p = r + (r'ᵀr' / rᵀr) p``.
    Stops once ``‖rhs − apply(x)‖ ≤ tol ‖rhs‖`` for every item; ``tol`` defaults to ``eps^¾``
    of the dtype (about 2e-12 in float64, 6e-6 in float32).
    """
    if tol is None:
        tol = torch.finfo(rhs.dtype).eps ** 0.75
    dims = tuple(range(1, rhs.dim()))

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum(dim=dims, keepdim=True)

    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - apply(x)
    p = r.clone()
    rr = dot(r, r)
    threshold = tol**2 * dot(rhs, rhs)
    for _ in range(max_iter):
        if bool((rr <= threshold).all()):
            break
        ap = apply(p)
        pap = dot(p, ap)
        alpha = torch.where(pap > 0, rr / pap.clamp_min(torch.finfo(rhs.dtype).tiny), torch.zeros_like(pap))
        x = x + alpha * p
        r = r - alpha * ap
        rr_next = dot(r, r)
        beta = torch.where(rr > 0, rr_next / rr.clamp_min(torch.finfo(rhs.dtype).tiny), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_next
    return x


class Operator:
    """A linear degradation ``y = A x`` on (B, C, H, W) images of one size.

    Subclasses implement :meth:`A`, :meth:`A_adjoint` and :meth:`y_shape`; they override
    :meth:`prox_l2` where a closed form exists.
    """

    has_svd: bool = False

    def __init__(self, task: str, size: tuple[int, int], channels: int):
        self.task = task
        self.size = (int(size[0]), int(size[1]))
        self.channels = int(channels)

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        """Shape of a one-image batch, (1, C, H, W)."""
        return (1, self.channels, *self.size)

    @property
    def n(self) -> int:
        """Image dimension N = C·H·W."""
        return self.channels * self.size[0] * self.size[1]

    def y_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``A x`` for ``x`` of shape ``x_shape`` (B, C, H, W)."""
        raise NotImplementedError

    def A(self, x: Tensor) -> Tensor:
        """The degradation ``y = A x``."""
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:
        """The adjoint ``Aᵀ y``, an image (B, C, H, W)."""
        raise NotImplementedError

    def prox_l2(self, b: Tensor, z: Tensor, mu: Mu) -> Tensor:
        """``(AᵀA + μI)⁻¹ (Aᵀb + μz)`` by conjugate gradients started at ``z``."""
        self.check_y(b)
        self.check_x(z)
        mu = batch_scalar(mu, z)
        return conjugate_gradient(lambda t: self.A_adjoint(self.A(t)) + mu * t, self.A_adjoint(b) + mu * z, z)

    def adjointness_error(self, x: Tensor | None = None, y: Tensor | None = None, seed: int = 0) -> float:
        """``|⟨A x, y⟩ − ⟨x, Aᵀ y⟩| / (‖A x‖ ‖y‖)``, 0 when ``A_adjoint`` is the adjoint of ``A``.

        ``x`` (an image batch) and ``y`` (an observation batch) are drawn where not given:
        seeded standard normals, a batch of 2 in float64 unless the other one is given.
        """
        x, y = self._inputs(x, y, seed)
        ax = self.A(x)
        return float(((ax * y).sum() - (x * self.A_adjoint(y)).sum()).abs() / (ax.norm() * y.norm()))

    def prox_error(self, b: Tensor | None = None, z: Tensor | None = None, mu: Mu = 0.5, seed: int = 0) -> float:
        """``‖Aᵀ(A t − b) + μ (t − z)‖ / ‖Aᵀb + μ z‖`` at ``t = prox_l2(b, z, μ)``, 0 at the minimiser.

        ``b`` and ``z`` are drawn where not given, as ``y`` and ``x`` in :meth:`adjointness_error`.
        """
        z, b = self._inputs(z, b, seed)
        t = self.prox_l2(b, z, mu)
        mu = batch_scalar(mu, z)
        return relative_error(self.A_adjoint(self.A(t)) + mu * t, self.A_adjoint(b) + mu * z)

    def _inputs(self, x: Tensor | None, y: Tensor | None, seed: int) -> tuple[Tensor, Tensor]:
        """An image batch ``x`` and an observation batch ``y`` for the checks, each drawn where ``None``."""
        if x is None:
            x = standard_normal((2 if y is None else y.shape[0], *self.x_shape[1:]), seed, y)
        if y is None:
            y = standard_normal(self.y_shape(tuple(x.shape)), seed + 1, x)
        return x, y

    def check_x(self, x: Tensor) -> None:
        """Raise a UserError unless ``x`` is a float image batch of this operator's size."""
        self._check(x, self.x_shape[1:], "image")

    def check_y(self, y: Tensor) -> None:
        """Raise a UserError unless ``y`` is a float observation batch of this operator's size."""
        self._check(y, self.y_shape(self.x_shape)[1:], "observation")

    def _check(self, t: Tensor, expected: tuple[int, ...], what: str) -> None:
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise UserError(f"task '{self.task}' needs a float torch tensor as its {what}, got {type(t).__name__}")
        if tuple(t.shape[1:]) != tuple(expected):
            raise UserError(
                f"task '{self.task}' was made for {what}s of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(t.shape)}; make the operator with size= and channels= matching the image"
            )

    def _no_svd(self) -> UserError:
        return UserError(f"task '{self.task}' has no SVD; use a method that does not need one (e.g. reld)")

    def V(self, v: Tensor) -> Tensor:
        raise self._no_svd()

    def V_adjoint(self, x: Tensor) -> Tensor:
        raise self._no_svd()

    def U(self, u: Tensor) -> Tensor:
        raise self._no_svd()

    def U_adjoint(self, y: Tensor) -> Tensor:
        raise self._no_svd()

    def singular_values(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
        raise self._no_svd()

    def svd_error(self, x: Tensor | None = None, seed: int = 0) -> float:
        raise self._no_svd()

    def orthogonality_error(self, x: Tensor | None = None, y: Tensor | None = None, seed: int = 0) -> float:
        raise self._no_svd()


class SVDOperator(Operator):
    """An operator with a real SVD ``A = U Σ Vᵀ``, on flattened vectors as in DDRM's ``H_functions``.

    ``V_adjoint``: (B, N) or (B, C, H, W) -> (B, N); ``V``: (B, N) -> (B, N);
    ``U_adjoint``: y (B, …) flattened to (B, M) -> (B, M); ``U``: (B, M) -> (B, M).
    ``singular_values()`` has K ≤ min(M, N) entries sorted descending, and
    ``A(x).reshape(B, -1) = U(pad_M(Σ ⊙ V_adjoint(x)[:, :K]))``.

    Subclasses store the float64 singular values as the ``"singular_values"`` constant.
    """

    has_svd = True
    consts: TensorCache

    def singular_values(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
        """The K singular values, sorted descending."""
        return self.consts.get("singular_values", torch.empty(0, dtype=dtype, device=device))

    def observed_singular_values(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
        """The K singular values in ``dtype`` with the numerically zero ones set to exactly 0.

        The one rule for what the observation determines: ``s_i`` counts only when
        ``s_i > s_max · √ε`` (ε the machine epsilon of ``dtype``). Dividing ``Uᵀy`` by ``s_i``
        amplifies y's rounding error (≈ ε relative) by ``1/s_i``; at the bound the result is
        still accurate to ≈ √ε of the image scale (3e-4 in float32, below 8-bit quantisation).
        Below it, e.g. the 1e-33 tail of a separable blur's spectrum, the coefficient is noise
        and is treated as unobserved. Every consumer that divides by ``s`` (DDRM's spectral
        update, in torch and in the CUDA kernel) reads these values.
        """
        s = self.singular_values(torch.float64, device)
        floor = float(s.max()) * math.sqrt(torch.finfo(dtype).eps) if s.numel() else 0.0
        return torch.where(s > floor, s, torch.zeros_like(s)).to(dtype)

    @property
    def m(self) -> int:
        """Observation dimension M."""
        return math.prod(self.y_shape(self.x_shape)[1:])

    def prox_l2(self, b: Tensor, z: Tensor, mu: Mu) -> Tensor:
        """``V (Σ² + μ)⁻¹ (Σ Uᵀb + μ Vᵀz)``; entries of ``Vᵀz`` beyond the K singular values are kept."""
        self.check_y(b)
        self.check_x(z)
        s = self.consts.get("singular_values", z)
        k = s.numel()
        mu = batch_scalar(mu, z.reshape(z.shape[0], -1))
        vt_z = self.V_adjoint(z)
        head = (s * self.U_adjoint(b)[:, :k] + mu * vt_z[:, :k]) / (s * s + mu)
        return self.V(torch.cat([head, vt_z[:, k:]], dim=1)).reshape(z.shape)

    def svd_error(self, x: Tensor | None = None, seed: int = 0) -> float:
        """``‖A x − U pad_M(Σ ⊙ (Vᵀx)[:K])‖ / ‖A x‖``, 0 when ``A = U Σ Vᵀ``;
        ``x`` as in :meth:`adjointness_error`."""
        x, _ = self._inputs(x, None, seed)
        vt_x = self.V_adjoint(x)
        s = self.singular_values(vt_x.dtype, vt_x.device)
        sigma_vt_x = torch.nn.functional.pad(s * vt_x[:, : s.numel()], (0, self.m - s.numel()))
        return relative_error(self.U(sigma_vt_x), self.A(x).flatten(1))

    def orthogonality_error(self, x: Tensor | None = None, y: Tensor | None = None, seed: int = 0) -> float:
        """The largest of ``‖V Vᵀ x − x‖/‖x‖``, ``‖Vᵀ V x − x‖/‖x‖``, ``‖U Uᵀ y − y‖/‖y‖`` and
        ``‖Uᵀ U y − y‖/‖y‖``, 0 when V and U are orthogonal; ``x`` and ``y`` as in :meth:`adjointness_error`."""
        x, y = self._inputs(x, y, seed)
        x, y = self.flat_image(x), self.flat_observation(y)
        return max(
            relative_error(self.V(self.V_adjoint(x)), x),
            relative_error(self.V_adjoint(self.V(x)), x),
            relative_error(self.U(self.U_adjoint(y)), y),
            relative_error(self.U_adjoint(self.U(y)), y),
        )

    def flat_image(self, x: Tensor) -> Tensor:
        """A (B, N) vector or a (B, C, H, W) image as a (B, N) vector."""
        if x.dim() != 4 and (x.dim() != 2 or x.shape[1] != self.n):
            raise UserError(f"task '{self.task}' expects (B, {self.n}) vectors or (B, C, H, W) images, got {tuple(x.shape)}")
        if x.dim() == 4:
            self.check_x(x)
        return x.reshape(x.shape[0], -1)

    def flat_observation(self, y: Tensor) -> Tensor:
        """Any tensor with batch first and M entries per item as a (B, M) vector."""
        flat = y.reshape(y.shape[0], -1)
        if flat.shape[1] != self.m:
            raise UserError(f"task '{self.task}' expects observations with {self.m} entries per item, got {tuple(y.shape)}")
        return flat


def interleave_channels(order: Tensor, channels: int, plane: int) -> Tensor:
    """Gather index over (C, plane)-flattened vectors that lists ``order`` channel-interleaved:
    ``index[r·C + c] = c·plane + order[r]``, so equal per-channel singular values stay adjacent."""
    return (order[:, None] + plane * torch.arange(channels)[None, :]).reshape(-1)
