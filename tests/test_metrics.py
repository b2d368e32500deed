"""PSNR and SSIM against scikit-image, plus their identities and input checks."""

from __future__ import annotations

import math

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from trt_restore.errors import UserError
from trt_restore.metrics import psnr, ssim


def random_pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=generator, dtype=torch.float64)
    noisy = (clean + 0.1 * torch.randn(shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    return clean, noisy


def structured_pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A ramp plus a checkerboard, and a shifted, contrast-reduced, slightly noisy copy."""
    channels, height, width = shape
    rows = torch.arange(height, dtype=torch.float64)[:, None]
    cols = torch.arange(width, dtype=torch.float64)[None, :]
    ramp = (rows / height + cols / width) / 2
    checker = ((rows // 3 + cols // 3) % 2) * 0.3
    clean = torch.stack([(ramp + checker * (c + 1) / channels).clamp(0, 1) for c in range(channels)])
    noise = 0.02 * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    degraded = (0.8 * torch.roll(clean, shifts=1, dims=-1) + 0.1 + noise).clamp(0, 1)
    return clean, degraded


SHAPES = [(1, 7, 7), (1, 17, 23), (3, 16, 16), (3, 31, 9), (3, 40, 33)]


@pytest.mark.parametrize("make_pair", [random_pair, structured_pair], ids=["random", "structured"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_scikit_image(make_pair, shape):
    clean, degraded = make_pair(shape, seed=sum(shape))
    reference_psnr = peak_signal_noise_ratio(clean.numpy(), degraded.numpy(), data_range=1.0)
    reference_ssim = structural_similarity(clean.numpy(), degraded.numpy(), channel_axis=0, data_range=1.0)
    assert psnr(clean, degraded) == pytest.approx(reference_psnr, abs=1e-4)
    assert ssim(clean, degraded) == pytest.approx(reference_ssim, abs=1e-4)
    assert ssim(clean.float(), degraded.float()) == pytest.approx(reference_ssim, abs=1e-4)


def test_batch_is_the_mean_of_per_image_values():
    pairs = [random_pair((3, 12, 15), seed) for seed in range(3)]
    clean = torch.stack([pair[0] for pair in pairs])
    degraded = torch.stack([pair[1] for pair in pairs])
    assert psnr(clean, degraded) == pytest.approx(sum(psnr(*pair) for pair in pairs) / 3, abs=1e-10)
    assert ssim(clean, degraded) == pytest.approx(sum(ssim(*pair) for pair in pairs) / 3, abs=1e-10)


def test_identities():
    clean, degraded = structured_pair((3, 20, 20), seed=0)
    assert psnr(clean, clean) == math.inf
    assert ssim(clean, clean) == pytest.approx(1.0, abs=1e-12)
    assert ssim(clean, degraded) == pytest.approx(ssim(degraded, clean), abs=1e-12)
    assert psnr(255 * clean, 255 * degraded, data_range=255) == pytest.approx(psnr(clean, degraded), abs=1e-9)
    assert ssim(255 * clean, 255 * degraded, data_range=255) == pytest.approx(ssim(clean, degraded), abs=1e-9)
    # A constant error e gives PSNR = −20 log10(e).
    assert psnr(clean * 0.5, clean * 0.5 + 0.1) == pytest.approx(20.0, abs=1e-9)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ((3, 8, 8), (3, 8, 9), "same shape"),
        ((8, 8), (8, 8), r"\(C, H, W\) or \(B, C, H, W\)"),
        ((3, 0, 8), (3, 0, 8), "empty"),
    ],
)
@pytest.mark.parametrize("metric", [psnr, ssim])
def test_bad_shapes_raise_user_errors(metric, first, second, expected):
    with pytest.raises(UserError, match=expected):
        metric(torch.zeros(first), torch.zeros(second))


def test_ssim_needs_a_full_window():
    with pytest.raises(UserError, match="at least 7x7"):
        ssim(torch.zeros(1, 6, 10), torch.zeros(1, 6, 10))
