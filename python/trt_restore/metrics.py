"""Image quality metrics in torch: PSNR and SSIM, computed in float64, and the seam ratio of a tiled result.

Both match scikit-image (``peak_signal_noise_ratio`` and ``structural_similarity`` with
``channel_axis=0`` and its defaults) to well below 1e-4. Inputs are (C, H, W) or
(B, C, H, W); for a batch the result is the mean of the per-image values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import UserError

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    """``10 log10(R² / MSE(x, y))`` per image (``inf`` when x = y), averaged over the batch."""
    x, y = _as_batches("psnr", x, y)
    mse = (x - y).square().mean(dim=(1, 2, 3))
    return float((10 * torch.log10(data_range**2 / mse)).mean())


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean structural similarity with a 7×7 uniform window, averaged over the batch.

    With local means ``μ``, sample (co)variances ``σ`` (normalised by N − 1, N = 49),
    ``C1 = (K1 R)²`` and ``C2 = (K2 R)²``:
    ``SSIM = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))``,
    averaged over the windows that fit inside the image (scikit-image crops the same
    3-pixel border) and over channels.
    """
    x, y = _as_batches("ssim", x, y)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise UserError(
            f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {x.shape[-1]}x{x.shape[-2]}"
        )
    samples = SSIM_WINDOW**2
    sample_correction = samples / (samples - 1)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, SSIM_WINDOW, stride=1)

    mean_x, mean_y = local_mean(x), local_mean(y)
    var_x = sample_correction * (local_mean(x * x) - mean_x**2)
    var_y = sample_correction * (local_mean(y * y) - mean_y**2)
    cov_xy = sample_correction * (local_mean(x * y) - mean_x * mean_y)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    similarity = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(similarity.mean(dim=(1, 2, 3)).mean())


def seam_ratio(image: torch.Tensor, row_edges: list[int], col_edges: list[int]) -> float:
    """How much sharper an image changes across tile edges than elsewhere:

        mean |x[y] − x[y−1]| over rows y in ``row_edges`` and |x[:, c] − x[:, c−1]| over columns c in ``col_edges``
        ─────────────────────────────────────────────────────────────────────────────────────────────
        the same mean over every other row and column

    1 for a seamless result; a tile-to-tile shift of colour or contrast raises it. ``image`` is
    (C, H, W) or (B, C, H, W); edges are in 1 … size − 1.
    """
    image = image.double() if image.dim() == 4 else image.double()[None]
    down = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=(0, 1, 3))  # across row y: index y − 1
    across = (image[..., 1:] - image[..., :-1]).abs().mean(dim=(0, 1, 2))
    rows, cols = torch.zeros_like(down, dtype=torch.bool), torch.zeros_like(across, dtype=torch.bool)
    rows[[y - 1 for y in row_edges]], cols[[c - 1 for c in col_edges]] = True, True
    if not rows.any() and not cols.any():
        raise UserError("seam_ratio needs at least one tile edge inside the image")
    at_edges = torch.cat((down[rows], across[cols])).mean()
    elsewhere = torch.cat((down[~rows], across[~cols])).mean()
    return float(at_edges / elsewhere)


def _as_batches(metric: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as float64 (B, C, H, W), after the shape checks."""
    if x.shape != y.shape:
        raise UserError(f"{metric} needs two images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() not in (3, 4):
        raise UserError(f"{metric} needs images shaped (C, H, W) or (B, C, H, W), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise UserError(f"{metric} got empty images of shape {tuple(x.shape)}")
    x, y = x.detach().double(), y.detach().double()
    return (x[None], y[None]) if x.dim() == 3 else (x, y)
