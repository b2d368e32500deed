"""Operators against direct spatial computations, and kernels and masks loaded from files and banks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trt_restore.errors import UserError
from trt_restore.operators import kernel_bank, load_kernel, make_operator
from trt_restore.operators.kernels_io import gaussian_kernel_1d

F64 = torch.float64
BANK_SIZES = {"Levin09": 8, "kernels_12": 12, "kernels_bicubicx234": 3}


def circular_convolution(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``y[i] = Σ_u k[u] x[i − u + c]`` (c = kernel centre) with periodic boundary, in the pixel domain."""
    kh, kw = kernel.shape
    ch, cw = kh // 2, kw // 2
    padded = F.pad(x, (kw - 1 - cw, cw, kh - 1 - ch, ch), mode="circular")
    weight = kernel.flip(0, 1).expand(x.shape[1], 1, kh, kw)
    return F.conv2d(padded, weight, groups=x.shape[1])


def test_circular_convolution_reference_is_centred():
    x = torch.rand(1, 2, 5, 6, dtype=F64)
    delta = torch.zeros(3, 4, dtype=F64)
    delta[1, 2] = 1  # the centre tap
    assert torch.equal(circular_convolution(x, delta), x)
    delta = torch.zeros(3, 4, dtype=F64)
    delta[2, 2] = 1  # one row below the centre shifts the image down
    assert torch.equal(circular_convolution(x, delta), torch.roll(x, 1, dims=2))


@pytest.mark.parametrize("size, kernel_shape", [((7, 9), (3, 4)), ((8, 10), (5, 5)), ((6, 6), (6, 1))])
def test_deblur_motion_is_circular_convolution(size, kernel_shape):
    kernel = torch.rand(*kernel_shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    op = make_operator("deblur-motion", size=size, channels=2, kernel=kernel)
    x = torch.rand(2, 2, *size, dtype=F64)
    assert (op.A(x) - circular_convolution(x, kernel / kernel.sum())).abs().max() < 1e-6


@pytest.mark.parametrize("scale, size", [(2, (8, 12)), (3, (9, 6)), (4, (16, 8))])
def test_sr_gauss_is_circular_convolution_then_decimation(scale, size):
    kernel = torch.rand(5, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    op = make_operator(f"sr{scale}-gauss", size=size, channels=3, kernel=kernel)
    x = torch.rand(1, 3, *size, dtype=F64)
    expected = circular_convolution(x, kernel / kernel.sum())[..., ::scale, ::scale]
    assert (op.A(x) - expected).abs().max() < 1e-6


def test_sr_gauss_default_kernel_is_a_gaussian():
    op = make_operator("sr2-gauss", size=(16, 12), channels=1)  # σ = 1, 7×7
    g = gaussian_kernel_1d(1.0, 7)
    x = torch.rand(1, 1, 16, 12, dtype=F64)
    assert (op.A(x) - circular_convolution(x, torch.outer(g, g))[..., ::2, ::2]).abs().max() < 1e-6


@pytest.mark.parametrize("task, params, taps", [("deblur-gauss", {}, gaussian_kernel_1d(1.6, 25)), ("deblur-uniform", {"kernel_size": 5}, torch.full((5,), 0.2, dtype=F64))])
def test_separable_blur_is_zero_padded_convolution(task, params, taps):
    op = make_operator(task, size=(9, 30), channels=3, **params)
    x = torch.rand(2, 3, 9, 30, dtype=F64)
    kernel = torch.outer(taps, taps).flip(0, 1).expand(3, 1, taps.numel(), taps.numel())
    expected = F.conv2d(x, kernel, padding=taps.numel() // 2, groups=3)
    assert (op.A(x) - expected).abs().max() < 1e-12


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_matches_antialiased_resize_away_from_the_border(scale):
    op = make_operator(f"sr{scale}-bicubic", size=(12 * scale, 12 * scale), channels=3)
    x = torch.rand(1, 3, 12 * scale, 12 * scale, dtype=F64)
    resized = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True)
    assert (op.A(x) - resized)[..., 2:-2, 2:-2].abs().max() < 1e-12
    assert torch.allclose(op.A(torch.ones_like(x)), torch.ones(1, 3, 12, 12, dtype=F64))


def test_every_kernel_bank_loads(data_path):
    folder = data_path("kernels")
    banks = sorted(p.stem for p in folder.glob("*.mat"))
    assert banks, f"no .mat kernel banks in {folder}"
    for bank in banks:
        kernels = kernel_bank(bank)
        assert len(kernels) == BANK_SIZES.get(bank, len(kernels)) > 0
        for kernel in kernels:
            assert kernel.dim() == 2 and kernel.dtype == F64
            assert abs(kernel.sum().item() - 1) < 1e-12


def test_bank_entries_name_kernels(data_path):
    data_path("kernels/Levin09.mat")
    assert torch.equal(load_kernel("Levin09:3"), kernel_bank("Levin09")[3])
    op = make_operator("deblur-motion", size=(32, 32), channels=3, kernel="Levin09:0")
    assert op.A(torch.ones(1, 3, 32, 32)).sub(1).abs().max() < 1e-5  # unit-sum kernel keeps a flat image
    with pytest.raises(UserError, match="has 8 kernels"):
        load_kernel("Levin09:8")
    with pytest.raises(UserError, match="kernel bank 'NoSuchBank' not found"):
        load_kernel("NoSuchBank:0")


def test_kernel_files(tmp_path):
    kernel = np.zeros((5, 3))
    kernel[1:4, 1] = [1, 2, 1]
    np.save(tmp_path / "k.npy", kernel)
    Image.fromarray((kernel * 100).astype(np.uint8)).save(tmp_path / "k.png")
    expected = torch.as_tensor(kernel / kernel.sum())
    assert torch.allclose(load_kernel(tmp_path / "k.npy"), expected)
    assert torch.allclose(load_kernel(str(tmp_path / "k.png")), expected)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read kernel image"):
        load_kernel(tmp_path / "bad.png")


def test_inpaint_masks(tmp_path):
    x = torch.rand(1, 3, 6, 8, dtype=F64)
    boxed = make_operator("inpaint", size=(6, 8), box=(1, 2, 3, 4)).A(x)
    assert boxed[..., 1:4, 2:6].abs().max() == 0
    assert torch.equal(boxed[..., 0, :], x[..., 0, :]) and torch.equal(boxed[..., :, :2], x[..., :, :2])

    random = make_operator("inpaint", size=(6, 8), fraction=0.25, seed=3)
    assert random.singular_values().numel() == 3 * (48 - 12)
    assert torch.equal(random.A(x), make_operator("inpaint", size=(6, 8), fraction=0.25, seed=3).A(x))
    missing = random.A(torch.ones_like(x)) == 0
    assert torch.equal(missing[:, 0], missing[:, 2])  # the same pixels in every channel

    picture = np.zeros((6, 8), dtype=np.uint8)
    picture[:, :3] = 255  # white = observed
    Image.fromarray(picture).save(tmp_path / "mask.png")
    from_file = make_operator("inpaint", size=(6, 8), mask=tmp_path / "mask.png").A(x)
    assert torch.equal(from_file[..., :3], x[..., :3]) and from_file[..., 3:].abs().max() == 0

    per_channel = torch.ones(3, 6, 8, dtype=torch.bool)
    per_channel[1] = False
    assert make_operator("inpaint", size=(6, 8), mask=per_channel).A(x)[:, 1].abs().max() == 0
