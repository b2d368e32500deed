"""``--sigma auto``: the estimator's accuracy, the per-task defaults, parsing, and its use by the API, CLI and summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from trt_restore import restore
from trt_restore.api import load_models
from trt_restore.bench.noise_level import (
    COMBINATIONS,
    auto_sigma_quality,
    estimator_errors,
    noise_level_markdown,
)
from trt_restore.cli import main
from trt_restore.data import dataset_images
from trt_restore.errors import UserError
from trt_restore.io import read_image, write_image
from trt_restore.jobs.request import RestoreRequest
from trt_restore.jobs.values import BadValue, observed_noise_level
from trt_restore.noise_level import AUTO, estimate_noise_sigma, given_noise_level
from trt_restore.operators import Degradation, make_operator


@pytest.fixture(scope="module")
def tiny():
    """restore()'s options for the tiny random DDRM model, loaded once, in two steps: enough to see the σ it was given."""
    _, models = load_models("ddrm", model_set="tiny", backend="torch")
    with models:
        yield {"method": "ddrm", "models": models, "config": {"steps": 2}}


def smooth_image(channels: int, size: int = 128, seed: int = 0) -> torch.Tensor:
    """A photo-like test image with little fine detail: a few low-frequency waves per channel."""
    generator = torch.Generator().manual_seed(seed)
    axis = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    phase = torch.rand(channels, 1, 1, generator=generator)
    return 0.5 + 0.3 * torch.sin(2 * math.pi * (xx + 0.5 * yy + phase))


def noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    operator = make_operator("denoise", size=tuple(x.shape[-2:]), channels=x.shape[0])
    return Degradation(operator, sigma).observe(x[None], seed=seed)[0]


@pytest.mark.parametrize("level", [5, 15, 25, 50])
def test_estimate_on_set5_and_set14_within_2_of_255(level):
    sigma = level / 255
    for name in ("test/Set5", "test/Set14"):
        try:
            paths = dataset_images(name)
        except UserError as error:
            pytest.skip(f"{name} is not available: {error}")
        errors = [abs(estimate_noise_sigma(noisy(read_image(p).data, sigma, seed=k)) - sigma) for k, p in enumerate(paths)]
        assert np.mean(errors) * 255 <= 2.0, (name, level, np.round(np.array(errors) * 255, 2))


@pytest.mark.parametrize("channels", [1, 3])
def test_estimate_of_white_noise_on_a_smooth_image(channels):
    for sigma in (0.01, 0.1):
        assert estimate_noise_sigma(noisy(smooth_image(channels, 256), sigma)) == pytest.approx(sigma, rel=0.05)


def test_noise_identical_in_every_channel_is_not_missed():
    """A gray photo saved as RGB: the chroma channels hold no noise, the luminance √3 σ."""
    gray = noisy(smooth_image(1, 256), 0.05)
    assert estimate_noise_sigma(gray.expand(3, -1, -1)) == pytest.approx(estimate_noise_sigma(gray), rel=1e-6)
    assert estimate_noise_sigma(gray.expand(3, -1, -1)) == pytest.approx(0.05, rel=0.05)


def test_a_flat_image_has_no_noise():
    assert estimate_noise_sigma(torch.full((3, 16, 16), 0.4)) < 1e-12
    assert estimate_noise_sigma(torch.zeros(1, 16, 16)) == 0.0


def test_sigma_values_and_task_defaults():
    assert observed_noise_level("auto") == AUTO and observed_noise_level("AUTO") == AUTO
    assert observed_noise_level("25/255") == pytest.approx(25 / 255)
    with pytest.raises(BadValue, match="or auto"):
        observed_noise_level("loud")
    assert given_noise_level("sr4", None) == 0.0
    assert given_noise_level("denoise", 0.1) == 0.1 and given_noise_level("denoise", AUTO) == AUTO
    with pytest.raises(UserError, match="--sigma auto"):
        given_noise_level("denoise", None)
    with pytest.raises(UserError, match="'auto'"):
        given_noise_level("sr4", -0.1)
    with pytest.raises(UserError, match="needs the noise level"):
        RestoreRequest("ddrm", "denoise", None, 0, {}, {})


def test_restore_with_auto_uses_the_estimate_as_a_given_sigma(tiny):
    y = noisy(smooth_image(3, 16), 0.1)
    estimate = estimate_noise_sigma(y)
    assert torch.equal(restore(y, task="denoise", sigma=AUTO, **tiny), restore(y, task="denoise", sigma=estimate, **tiny))
    assert not torch.equal(restore(y, task="denoise", sigma=AUTO, **tiny), restore(y, task="denoise", sigma=0.01, **tiny))
    batch = torch.stack([y, noisy(smooth_image(3, 16, seed=1), 0.02, seed=1)])
    each = torch.stack([restore(image, task="denoise", sigma=AUTO, **tiny) for image in batch])
    assert torch.equal(restore(batch, task="denoise", sigma=AUTO, **tiny), each)  # σ̂ per image
    with pytest.raises(UserError, match="needs the noise level"):
        restore(y, task="denoise", **tiny)
    assert torch.equal(restore(y, task="sr2", **tiny), restore(y, task="sr2", sigma=0.0, **tiny))


def hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy()


def unit_chw(image) -> torch.Tensor:
    """An image of any of the API's types as a float64 (C, H, W) tensor (the first of a batch) in [0, 1], by its dtype."""
    values = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.array(image))
    if not isinstance(image, torch.Tensor):
        values = values[None] if values.dim() == 2 else values.permute(2, 0, 1)
    values = values[0] if values.dim() == 4 else values
    full = 1.0 if values.is_floating_point() else float(torch.iinfo(values.dtype).max)
    return values.double() / full


@pytest.mark.parametrize(
    ("make", "check"),
    [
        (lambda x: np.round(hwc(x) * 255).astype(np.uint8), lambda out: out.dtype == np.uint8 and out.shape[2:] == (3,)),
        (lambda x: np.round(hwc(x) * 65535).astype(np.uint16), lambda out: out.dtype == np.uint16 and out.max() > 255),
        (lambda x: hwc(x).astype(np.float32), lambda out: out.dtype == np.float32 and out.shape[2:] == (3,)),
        (lambda x: hwc(x).astype(np.float64)[..., 0], lambda out: out.dtype == np.float64 and out.ndim == 2),
        (lambda x: PILImage.fromarray(np.round(hwc(x) * 255).astype(np.uint8)), lambda out: out.mode == "RGB"),
        (lambda x: PILImage.fromarray(np.round(hwc(x)[..., 0] * 255).astype(np.uint8)), lambda out: out.mode == "L"),
        (lambda x: x.double(), lambda out: out.dtype == torch.float64 and out.dim() == 3),
        (lambda x: (x * 255).round().to(torch.uint8)[None], lambda out: out.dtype == torch.uint8 and out.dim() == 4),
    ],
    ids=["numpy-uint8", "numpy-uint16", "numpy-float32", "numpy-gray-float64", "pil-rgb", "pil-l", "torch-float64", "torch-uint8-batch"],
)
def test_restore_returns_the_callers_type_layout_dtype_and_range(tiny, make, check):
    image = make(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)))
    out = restore(image, task="sr2", **tiny)
    assert type(out) is type(image) and check(out)
    restored = unit_chw(out)
    assert restored.shape[-2:] == (32, 32) and 0 <= restored.min() <= restored.max() <= 1
    # the same pixels as a float (C, H, W) tensor gives, up to the rounding of the caller's dtype
    reference = restore(unit_chw(image).float(), task="sr2", **tiny)
    assert (restored - reference.double()).abs().max() <= 0.5 / 255 + 1e-6


def test_cli_denoise_without_sigma_is_a_one_line_error(tmp_path, capsys):
    source = tmp_path / "in.png"
    write_image(source, smooth_image(3, 16))
    assert main(["restore", "--task", "denoise", "--model-set", "tiny", str(source), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--sigma auto" in err and "25/255" in err
    assert main(["restore", "--task", "denoise", "--sigma", "loud", str(source), "-o", str(tmp_path / "o.png")]) == 2
    assert "or auto" in capsys.readouterr().err
    assert main(["degrade", "--task", "denoise", "--sigma", "auto", str(source), "-o", str(tmp_path / "d.png")]) == 2
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "d.png").exists()


def test_cli_sigma_auto_is_logged_and_recorded_per_image(tmp_path, caplog):
    caplog.set_level("INFO", logger="trt_restore")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for seed, sigma in enumerate((0.02, 0.1)):
        write_image(inputs / f"{seed}.png", noisy(smooth_image(3, 32, seed), sigma, seed).clamp(0, 1))
    flags = ["--method", "ddrm", "--task", "denoise", "--sigma", "auto", "--model-set", "tiny", "--steps", "2", "-q"]
    assert main(["-v", "restore", *flags, str(inputs), "-o", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "restore_summary.json").read_text())
    assert summary["sigma"] == AUTO
    estimates = {f["input"]: f["sigma"] for f in summary["files"]}
    for path in inputs.iterdir():
        expected = estimate_noise_sigma(read_image(path).data)
        assert estimates[str(path)] == pytest.approx(expected, rel=1e-9)
        assert any(f"{path}: estimated noise sigma {expected:.4f}" in r.getMessage() for r in caplog.records)
    assert estimates[str(inputs / "0.png")] < estimates[str(inputs / "1.png")]


def test_benchmark_of_the_estimator_and_of_restoring_with_it(tmp_path):
    for seed in range(2):
        write_image(tmp_path / f"{seed}.png", smooth_image(3, 64, seed), bit_depth=16)
    rows = estimator_errors([str(tmp_path)], ["denoise"], [0.02, 0.05], combinations=list(COMBINATIONS))
    assert [(r["sigma"], r["combination"]) for r in rows] == [(s, c) for s in (0.02, 0.05) for c in COMBINATIONS]
    shipped = rows[0]
    assert shipped["images"] == 2 and shipped["max_error"] >= shipped["mae"] >= abs(shipped["bias"])
    assert shipped["mae"] < 0.005  # white noise on smooth images: within 10 %
    saved = estimator_errors([str(tmp_path)], ["denoise"], [0.05], saved=True)
    assert saved[0]["observation"] == "8-bit" and saved[0]["mae"] < 0.005
    quality = auto_sigma_quality(["ddrm"], str(tmp_path), 0.1, model_set="tiny", limit=1, crop=32, steps=2)
    assert (quality[0]["crop"], quality[0]["images"]) == (32, 1) and quality[0]["estimated_sigma_mean"] == pytest.approx(0.1, rel=0.15)
    assert quality[0]["psnr_difference"] == pytest.approx(quality[0]["psnr_auto_sigma"] - quality[0]["psnr_true_sigma"])
    text = noise_level_markdown({"estimator": rows + saved, "combinations": rows, "quality": quality})
    assert "| ddrm |" in text and "centre 32×32" in text and "(12.75/255)" in text
