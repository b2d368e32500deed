"""The noise level σ of an observation: given, estimated from the image (``auto``), or the task's default.

Estimation (``sigma="auto"``) follows Donoho and Johnstone's wavelet rule, as scikit-image's
``estimate_sigma`` implements it: the finest diagonal (HH) detail band ``d`` of a one-level
Daubechies-2 transform is mostly noise, so

    σ̂ = median(|d|) / Φ⁻¹(0.75) ≈ median(|d|) / 0.6745

(D. L. Donoho and I. M. Johnstone, "Ideal spatial adaptation by wavelet shrinkage",
Biometrika 81(3), 1994, §4.2). Texture in the HH band only adds to ``|d|``, so the rule
over-estimates σ on detailed images at low noise.

It runs on the observation y exactly as the operator sees it (the low-resolution image
for SR, the blurred one for deblurring), per channel, then combined. An RGB image is first
turned into opponent channels by the orthonormal transform

    Q = [[1, 1, 1]/√3, [1, −1, 0]/√2, [1, 1, −2]/√6],

which maps white noise of std σ per channel to white noise of the same σ in each of
``lum = Q₀·y``, ``c₁``, ``c₂`` (Q is orthonormal), while image texture gathers in ``lum``.
The combined estimate is

    σ̂ = max(median(σ̂_lum, σ̂_c₁, σ̂_c₂), σ̂_lum / √3).

The median is exact for noise independent across channels (the model ``n ~ N(0, σ²I)``)
and discards the texture-inflated luminance; ``σ̂_lum / √3`` is exact for noise identical
in the three channels (a gray photo saved as RGB, camera noise left only in the luminance),
where the chroma channels hold none. For channels that are neither, both terms are lower
bounds of σ, the larger within 23 % of it (at a channel correlation of 0.4). Other channel
counts take the mean of the per-channel estimates. ``benchmarks/noise_level.py`` measures
this combination against the mean and the RMS of the RGB channels' estimates on held-out images.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from .errors import UserError

if TYPE_CHECKING:
    import torch

AUTO = "auto"
NoiseLevel = float | Literal["auto"]
"""σ on the [0, 1] scale, or ``"auto"``: estimated from each image."""

SIGMA_REQUIRED_TASKS = ("denoise",)
"""Tasks that have no default σ: the noise is the degradation, so it must be given or estimated.
Every other task defaults to σ = 0 (a noise-free observation)."""

SIGMA_HELP = (
    f"a number (0.05, 25/255) or {AUTO} (estimated from each image); "
    f"required for {', '.join(SIGMA_REQUIRED_TASKS)}, default 0 for the other tasks"
)
"""What σ accepts and defaults to, for the help of every flag or parameter that takes it."""


def given_noise_level(task: str, sigma: NoiseLevel | None) -> NoiseLevel:
    """``sigma`` as given; left out (None), the task's default: 0, or an error for the tasks of
    :data:`SIGMA_REQUIRED_TASKS`. A number must be finite and ≥ 0."""
    if sigma is None:
        if task in SIGMA_REQUIRED_TASKS:
            raise UserError(
                f"task '{task}' needs the noise level: --sigma {AUTO} (sigma={AUTO}) estimates it from the image, "
                "or give it, e.g. --sigma 25/255"
            )
        return 0.0
    if sigma == AUTO:
        return AUTO
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma >= 0):
        raise UserError(f"sigma must be a number >= 0 on the [0, 1] scale (25/255 for level 25) or '{AUTO}', got {sigma!r}")
    return float(sigma)


def noise_level_of(task: str, sigma: NoiseLevel | None, y: torch.Tensor) -> float:
    """The σ to restore the observation ``y`` (C, H, W) with: the given number, the task's
    default, or for ``auto`` :func:`estimate_noise_sigma` of ``y``."""
    sigma = given_noise_level(task, sigma)
    return estimate_noise_sigma(y) if sigma == AUTO else sigma


def estimate_noise_sigma(y: torch.Tensor) -> float:
    """σ̂ of white Gaussian noise in the image ``y`` (C, H, W) on the [0, 1] scale, as the module docstring says."""
    import numpy as np

    channels = y.detach().cpu().double().numpy()
    if channels.ndim != 3:
        raise UserError(f"the noise level is estimated on one (C, H, W) image, got shape {tuple(channels.shape)}")
    if channels.shape[0] != 3:
        return float(np.mean(_channel_sigmas(channels)))
    opponent = np.tensordot(_opponent_transform(), channels, axes=1)
    sigmas = _channel_sigmas(opponent)
    return float(max(np.median(sigmas), sigmas[0] / math.sqrt(3)))


def _channel_sigmas(channels) -> list[float]:
    """scikit-image's ``estimate_sigma`` of each channel (0 for a channel without detail, e.g. a constant one)."""
    import warnings

    import numpy as np
    from skimage.restoration import estimate_sigma

    with warnings.catch_warnings():  # a flat channel (the median of no coefficients) or a narrow one
        warnings.simplefilter("ignore")
        sigmas = estimate_sigma(channels, channel_axis=0)
    return [float(np.nan_to_num(sigma)) for sigma in sigmas]


def _opponent_transform():
    """Q of the module docstring: rows lum, c₁, c₂."""
    import numpy as np

    rows = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [1.0, 1.0, -2.0]])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)
