"""Every method on the GPU path (CUDA kernels, CUDA graphs where the method captures its step)
against the CPU reference with the same seed: the restored images agree to ≥ 40 dB PSNR."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from trt_restore import restore
from trt_restore.api import load_models
from trt_restore.metrics import psnr
from trt_restore.operators import Degradation, make_operator

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# (method, task, σ): every method once, and each CUDA kernel family on some path.
CASES = [
    ("reld", "deblur-gauss", 0.01),  # fft_prox
    ("reld", "sr4", 0.0),  # sr_fft_prox
    ("ddrm", "sr4", 0.02),  # ddrm_spectral_update + permute / unpermute
    ("ddrm", "deblur-gauss", 0.02),
    ("ldm-sr", "sr4", 0.0),
    ("ddrm-ldm", "sr4-bicubic", 0.0),
    ("indigo-pixel", "denoise", 25 / 255),
    ("indigo-latent", "sr4-bicubic", 0.0),
]
SIZE = 64
STEPS = {"reld": {"iterations": 6}, "ddrm": {"steps": 6}, "ldm-sr": {"steps": 6}, "ddrm-ldm": {"steps": 6},
         "indigo-pixel": {"steps": 6}, "indigo-latent": {"steps": 6}}


def observation(task: str, sigma: float) -> torch.Tensor:
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    x = nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
    return Degradation(make_operator(task, size=(SIZE, SIZE), channels=3), sigma).observe(x, seed=0)


@pytest.mark.parametrize("method, task, sigma", CASES)
def test_gpu_path_matches_the_cpu_reference(method, task, sigma):
    y = observation(task, sigma)
    results = {}
    for device in ("cpu", "cuda"):
        models = load_models(method, backend="torch", device=device)[1]
        out = restore(y.to(device), method=method, task=task, sigma=sigma, models=models, config=STEPS[method], seed=3)
        results[device] = out.float().cpu()
    assert psnr(results["cuda"].clamp(0, 1), results["cpu"].clamp(0, 1)) >= 40.0


def test_device_noise_is_seeded_and_is_another_stream_than_the_host():
    y = observation("sr4", 0.02).cuda()
    models = load_models("ddrm", backend="torch", device="cuda")[1]

    def run(noise, seed=3):
        return restore(y, method="ddrm", task="sr4", sigma=0.02, models=models, config=STEPS["ddrm"], seed=seed, noise=noise)

    on_device = run("device")
    assert torch.equal(on_device, run("device"))
    assert not torch.equal(on_device, run("device", seed=4))
    assert not torch.equal(on_device, run("host"))
