"""Fused elementwise steps between network calls.

Each public function here has a torch implementation, which is the reference
and what runs on the CPU. On a CUDA device the same math runs in the custom
kernels of ``kernels/*.cu`` (compiled with NVRTC, launched on torch's current
stream) where they are available.
"""

from __future__ import annotations

import torch


def fft_prox(k_hat: torch.Tensor, b_hat: torch.Tensor, z_hat: torch.Tensor, mu: float) -> torch.Tensor:
    """FFT-domain solve of ``(KᵀK + μI) t = Kᵀ b + μ z`` for a circular convolution K.

    ``t̂ = (conj(K̂) B̂ + μ Ẑ) / (|K̂|² + μ)``, elementwise over broadcastable complex spectra.
    """
    return (k_hat.conj() * b_hat + mu * z_hat) / (k_hat.abs().square() + mu)


def _block_mean(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean over the s×s tiling of a (…, H, W) spectrum into blocks of size (H/s, W/s)."""
    *lead, h, w = x.shape
    blocks = x.reshape(*lead, scale, h // scale, scale, w // scale)
    return blocks.mean(dim=(-4, -2))


def sr_fft_prox(
    k_hat: torch.Tensor, atb_hat: torch.Tensor, z_hat: torch.Tensor, mu: float, scale: int
) -> torch.Tensor:
    """Closed-form data step for blur + s-fold decimation (Zhao et al. 2016, as in USRNet).

    Solves ``(AᵀA + μI) t = Aᵀb + μ z`` with ``A = S_s K`` (circular blur K, then keep
    every s-th pixel), all in the full 2-D Fourier domain:

        R̂ = F(Aᵀb) + μ Ẑ
        t̂ = (R̂ − conj(K̂) ⊙ ⇑[ mean_s(K̂ ⊙ R̂) / (mean_s(|K̂|²) + μ) ]) / μ

    where ``mean_s`` averages the s×s spectral blocks and ``⇑`` tiles the result back.
    """
    r_hat = atb_hat + mu * z_hat
    num = _block_mean(k_hat * r_hat, scale)
    den = _block_mean(k_hat.abs().square(), scale) + mu
    correction = k_hat.conj() * (num / den).repeat(*([1] * (num.dim() - 2)), scale, scale)
    return (r_hat - correction) / mu


def ddrm_spectral_update(
    vt_x0: torch.Tensor,
    vt_eps: torch.Tensor,
    ut_y: torch.Tensor,
    singulars: torch.Tensor,
    noise: torch.Tensor,
    sigma_next: float,
    sigma_y: float,
    eta: float,
    eta_b: float,
) -> torch.Tensor:
    """One DDRM step in the spectral space (Kawar et al. 2022, ``efficient_generalized_steps``).

    All tensors are (B, N) in the V basis; ``singulars`` and ``ut_y`` are zero-padded to N.
    With ``s`` the singular value, ``σ'`` = sigma_next, ``σ_y`` the observation noise on
    the model's scale and ``ȳ = (Uᵀy)/s``:

    - ``s = 0`` (missing):  ``x̄ = x̄₀ + √(σ'² − (ησ')²) ε̄ + ησ' n``
    - ``s σ' < σ_y``:       ``x̄ = x̄₀ + √(σ'² − (ησ')²) (Uᵀy − s x̄₀)/σ_y + ησ' n``
    - ``s σ' > σ_y``:       ``x̄ = η_b ȳ + (1 − η_b) x̄₀ + √(σ'² − σ_y² η_b² / s²) n``

    (``s σ' = σ_y`` exactly falls in the first case, as in the reference code.)
    """
    std_next = eta * sigma_next
    tilde_next = (sigma_next**2 - std_next**2) ** 0.5
    nonzero = singulars > 0
    before = nonzero & (singulars * sigma_next > sigma_y)
    after = nonzero & (singulars * sigma_next < sigma_y)
    safe_s = torch.where(nonzero, singulars, torch.ones_like(singulars))

    missing = vt_x0 + tilde_next * vt_eps + std_next * noise
    residual = (ut_y - singulars * vt_x0) / (sigma_y if sigma_y > 0 else 1.0)
    less_noisy = vt_x0 + tilde_next * residual + std_next * noise
    y_bar = ut_y / safe_s
    diff = (sigma_next**2 - (sigma_y * eta_b / safe_s) ** 2).clamp_min(0).sqrt()
    noisier = eta_b * y_bar + (1 - eta_b) * vt_x0 + diff * noise
    return torch.where(before, noisier, torch.where(after, less_noisy, missing))


def permute(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather ``out[:, i] = x[:, index[i]]`` on (B, N) vectors (Vᵀ of a permutation basis)."""
    return x.index_select(1, index)


def unpermute(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Scatter ``out[:, index[i]] = x[:, i]``, the inverse of :func:`permute` (V of a permutation basis)."""
    return torch.empty_like(x).index_copy_(1, index, x)
