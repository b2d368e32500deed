"""The torch reference math of trt_restore.kernels (what every CPU runs), checked against
direct dense or per-entry implementations, and the broadcast layouts the CUDA path uses."""

from __future__ import annotations

import math

import pytest
import torch

from trt_restore import kernels
from trt_restore.errors import UserError


def circular_conv_matrix(psf: torch.Tensor) -> torch.Tensor:
    """Dense (HW, HW) matrix of ``(K x)[p] = Σ_q psf[(p − q) mod (H, W)] x[q]``, built entry by entry."""
    h, w = psf.shape
    rows = torch.arange(h * w)
    ph, pw = (rows // w)[:, None], (rows % w)[:, None]
    qh, qw = (rows // w)[None, :], (rows % w)[None, :]
    return psf[(ph - qh) % h, (pw - qw) % w]


def decimation_matrix(h: int, w: int, scale: int) -> torch.Tensor:
    """Dense (HW/s², HW) matrix keeping pixels (i·s, j·s), as ``x[..., ::s, ::s]``."""
    kept = torch.arange(h * w).reshape(h, w)[::scale, ::scale].reshape(-1)
    return torch.eye(h * w, dtype=torch.float64)[kept]


def dense_prox(a: torch.Tensor, b: torch.Tensor, z: torch.Tensor, mu: float) -> torch.Tensor:
    """argmin ½‖A t − b‖² + (μ/2)‖t − z‖² = (AᵀA + μI)⁻¹ (Aᵀb + μz) by a dense solve."""
    lhs = a.T @ a + mu * torch.eye(a.shape[1], dtype=a.dtype)
    return torch.linalg.solve(lhs, a.T @ b + mu * z)


@pytest.mark.parametrize("size", [(5, 6), (4, 7)])
def test_fft_prox_solves_the_circular_deblurring_problem(size):
    g = torch.Generator().manual_seed(1)
    h, w = size
    psf = torch.rand(size, dtype=torch.float64, generator=g)
    b = torch.randn(2, 3, h, w, dtype=torch.float64, generator=g)
    z = torch.randn(2, 3, h, w, dtype=torch.float64, generator=g)
    mu = torch.tensor([0.05, 0.7], dtype=torch.float64).reshape(2, 1, 1, 1)

    spectrum = kernels.fft_prox(torch.fft.rfft2(psf), torch.fft.rfft2(b), torch.fft.rfft2(z), mu)
    t = torch.fft.irfft2(spectrum, s=size)

    a = circular_conv_matrix(psf)
    for i in range(2):
        for c in range(3):
            expected = dense_prox(a, b[i, c].reshape(-1), z[i, c].reshape(-1), mu[i].item())
            torch.testing.assert_close(t[i, c].reshape(-1), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("size", "scale"), [((6, 9), 3), ((8, 6), 2), ((10, 5), 5), ((4, 4), 1)])
def test_sr_fft_prox_solves_the_blur_and_decimation_problem(size, scale):
    g = torch.Generator().manual_seed(2)
    h, w = size
    psf = torch.rand(size, dtype=torch.float64, generator=g)
    b = torch.randn(2, 1, h // scale, w // scale, dtype=torch.float64, generator=g)
    z = torch.randn(2, 1, h, w, dtype=torch.float64, generator=g)
    mu = torch.tensor([0.1, 2.0], dtype=torch.float64).reshape(2, 1, 1, 1)

    a = decimation_matrix(h, w, scale) @ circular_conv_matrix(psf)
    atb = (b.reshape(2, 1, -1) @ a).reshape(2, 1, h, w)
    spectrum = kernels.sr_fft_prox(torch.fft.fft2(psf), torch.fft.fft2(atb), torch.fft.fft2(z), mu, scale)
    t = torch.fft.ifft2(spectrum)

    assert t.imag.abs().max() < 1e-10
    for i in range(2):
        expected = dense_prox(a, b[i, 0].reshape(-1), z[i, 0].reshape(-1), mu[i].item())
        torch.testing.assert_close(t[i, 0].real.reshape(-1), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("size", "scale"), [((6, 7), 2), ((6, 6), 4), ((6, 6), 0)])
def test_sr_fft_prox_rejects_a_scale_that_does_not_divide_the_image(size, scale):
    spectrum = torch.zeros(1, 1, *size, dtype=torch.complex64)
    with pytest.raises(UserError, match="multiple of the scale"):
        kernels.sr_fft_prox(spectrum, spectrum, spectrum, 0.1, scale)


def ddrm_entry(x0, eps, uty, s, n, sigma_next, sigma_y, eta, eta_b) -> float:
    """Kawar et al.'s three cases for one spectral entry, written out directly."""
    std_next = eta * sigma_next
    tilde_next = math.sqrt(sigma_next**2 - std_next**2)
    if s == 0 or s * sigma_next == sigma_y:
        return x0 + tilde_next * eps + std_next * n
    if s * sigma_next < sigma_y:
        return x0 + tilde_next * (uty - s * x0) / sigma_y + std_next * n
    return eta_b * uty / s + (1 - eta_b) * x0 + math.sqrt(max(sigma_next**2 - (sigma_y * eta_b / s) ** 2, 0)) * n


@pytest.mark.parametrize(
    ("sigma_next", "sigma_y", "eta", "eta_b"),
    [(0.5, 0.25, 0.85, 1.0), (0.75, 0.25, 0.5, 0.7), (0.5, 0.0, 0.85, 1.0), (0.25, 0.5, 1.0, 0.9)],
)
def test_ddrm_spectral_update_matches_the_three_cases_entry_by_entry(sigma_next, sigma_y, eta, eta_b):
    g = torch.Generator().manual_seed(3)
    n = 64
    # Dyadic singular values: zeros, exact ties s σ' = σ_y, and values on both sides of the tie.
    singulars = torch.tensor([0.0, 0.125, 0.5, 1.0, 2.0, 4.0, 0.25, 0.0] * (n // 8), dtype=torch.float64)
    singulars[1::8] = sigma_y / sigma_next
    x0, eps, uty, noise = (torch.randn(3, n, dtype=torch.float64, generator=g) for _ in range(4))
    uty = torch.where(singulars > 0, uty, 0.0)

    out = kernels.ddrm_spectral_update(x0, eps, uty, singulars, noise, sigma_next, sigma_y, eta, eta_b)

    expected = torch.tensor(
        [
            [
                ddrm_entry(x0[b, j].item(), eps[b, j].item(), uty[b, j].item(), singulars[j].item(),
                           noise[b, j].item(), sigma_next, sigma_y, eta, eta_b)
                for j in range(n)
            ]
            for b in range(3)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    product = singulars * sigma_next
    assert (product > sigma_y).any() and (singulars == 0).any()
    if sigma_y > 0:
        assert ((singulars > 0) & (product < sigma_y)).any() and (product == sigma_y).any()


@pytest.mark.parametrize("shape", [(2, 7), (3, 10, 4), (1, 6, 2, 3)])
def test_permute_is_the_permutation_matrix_and_unpermute_its_inverse(shape):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(*shape, dtype=torch.float64, generator=g)
    index = torch.randperm(shape[1], generator=g)
    matrix = torch.zeros(shape[1], shape[1], dtype=torch.float64)
    matrix[torch.arange(shape[1]), index] = 1.0

    gathered = kernels.permute(x, index)

    flat = x.reshape(shape[0], shape[1], -1)
    torch.testing.assert_close(gathered.reshape(flat.shape), torch.einsum("ij,bjk->bik", matrix, flat), rtol=0, atol=0)
    assert torch.equal(kernels.unpermute(gathered, index), x)
    assert torch.equal(kernels.permute(x, torch.argsort(index)), kernels.unpermute(x, index))


@pytest.mark.parametrize(
    ("shape", "out_shape"),
    [
        ((2, 3, 4, 5), (2, 3, 4, 5)),
        ((4, 5), (2, 3, 4, 5)),
        ((1, 1, 4, 5), (2, 3, 4, 5)),
        ((3, 4, 5), (2, 3, 4, 5)),
        ((2, 1, 1, 1), (2, 3, 4, 5)),
        ((1, 3, 1, 1), (2, 3, 4, 5)),
        ((1, 3, 4, 1), (2, 3, 4, 5)),
        ((2, 1, 4, 5), (2, 1, 4, 5)),
        ((), (2, 3)),
        ((7,), (3, 7)),
    ],
)
def test_broadcast_layout_reads_what_expand_reads(shape, out_shape):
    t = torch.arange(math.prod(shape)).reshape(shape)
    inner, period = kernels.broadcast_layout(shape, out_shape)
    i = torch.arange(math.prod(out_shape))
    assert torch.equal(t.reshape(-1)[(i // inner) % period], t.expand(out_shape).reshape(-1))


@pytest.mark.parametrize(("shape", "out_shape"), [((2, 1, 4, 5), (2, 3, 4, 5)), ((3, 1, 2), (3, 4, 2))])
def test_broadcast_layout_refuses_split_runs(shape, out_shape):
    assert kernels.broadcast_layout(shape, out_shape) is None
