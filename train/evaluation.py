"""Quality of the trained networks on held-out images, for the model cards.

The held-out images are the demo images (:data:`trt_restore.demo.DEMO_IMAGES`), which no
training source yields. Every measurement uses fixed seeds, so it is reproducible:

- autoencoder: PSNR of ``D(E(x))`` against ``x``;
- denoising UNets: PSNR of the one-step clean estimate ``x̂₀`` (decoded for latent
  UNets) from ``x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε`` at a few steps ``t``, next to the PSNR of the
  plain rescaled input ``x_t/√ᾱ_t``; the SR UNet is conditioned on the box-downsampled image;
- INNs: PSNR of ``coarse(G(x, e))`` against the coarse target of the noiseless observation
  (``σ = 0``), per standard degradation, next to the identity (untrained) INN, which gives
  the box average.
"""

from __future__ import annotations

import torch

from trt_restore.demo import DEMO_IMAGES, demo_image
from trt_restore.export.components import Decoder, Encoder, SRDenoiser
from trt_restore.export.inn import WaveletINN
from trt_restore.export.model_sets import ModelSet
from trt_restore.metrics import psnr
from trt_restore.operators import make_operator
from trt_restore.pipelines.schedule import NoiseSchedule

from .inn import STANDARD_DEGRADATIONS, coarse_and_target

EVAL_SIZE = 128
EVAL_STEPS = (100, 400)
EVAL_SIGMA = 0.0  # noiseless observations: the noise floor would hide the differences
SEED = 0


def held_out_images(size: int = EVAL_SIZE) -> torch.Tensor:
    """The demo images as one (N, 3, size, size) batch."""
    return torch.stack([demo_image(name, size) for name in DEMO_IMAGES])


def _noise_like(x: torch.Tensor) -> torch.Tensor:
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED))


@torch.no_grad()
def autoencoder_quality(vae, images: torch.Tensor) -> dict[str, float]:
    """PSNR of the reconstruction ``D(E(x))`` per held-out image (clamped to [0, 1])."""
    reconstruction = Decoder(vae)(Encoder(vae)(images)).clamp(0, 1)
    return {name: psnr(reconstruction[i], images[i]) for i, name in enumerate(DEMO_IMAGES)}


@torch.no_grad()
def denoising_quality(model_set: ModelSet, role: str, images: torch.Tensor) -> dict[str, float]:
    """Mean PSNR of ``x̂₀`` and of the rescaled noisy input at each step of :data:`EVAL_STEPS`."""
    results = {}
    for step in EVAL_STEPS:
        if role == "pixel_unet":
            denoiser = model_set.wrapper("pixel_unet")
            clean, decode = 2 * images - 1, lambda x: (x + 1) / 2
        else:
            method = "ldm-sr" if role == "sr_unet" else "reld"
            denoiser = model_set.wrapper(role, method)
            decoder = model_set.wrapper("decoder", method)
            clean, decode = model_set.wrapper("encoder", method)(images), decoder
        schedule = NoiseSchedule.from_config(denoiser.spec.meta["scheduler"])
        noisy = schedule.add_noise(clean, _noise_like(clean), step)
        timestep = torch.full((len(images),), float(step))
        if isinstance(denoiser, SRDenoiser):
            low_res = make_operator(f"sr{denoiser.spec.meta['downsample']}", size=images.shape[-2:], channels=3).A(images)
            output = denoiser(noisy, low_res, timestep)
        else:
            output = denoiser(noisy, timestep)
        estimate, _ = schedule.split_prediction(output, noisy, step)
        results[f"x0 t={step}"] = psnr(decode(estimate).clamp(0, 1), images)
        results[f"input t={step}"] = psnr(decode(noisy / schedule.alpha(step) ** 0.5).clamp(0, 1), images)
    return results


@torch.no_grad()
def inn_quality(inn: WaveletINN, images: torch.Tensor, encoder: Encoder | None = None) -> dict[str, tuple[float, float]]:
    """Per degradation: (trained, identity) PSNR of the coarse part against the coarse target.

    ``encoder`` selects the latent variant (``images`` are then encoded); latents are
    compared with a peak of 1 like images, so only the difference between the two numbers matters there.
    """
    identity = WaveletINN.from_config({**inn.config, "identity_init": True}).eval()
    results = {}
    for index, (task, params) in enumerate(STANDARD_DEGRADATIONS):
        if task in results:  # several random masks of one task: the first stands for them
            continue
        operator = make_operator(task, size=tuple(images.shape[-2:]), channels=3, **params)
        scores = [psnr(*coarse_and_target(net, images, operator, EVAL_SIGMA, SEED + index, encoder)) for net in (inn, identity)]
        results[task] = (scores[0], scores[1])
    return results
