"""DDRM-LDM: DDRM whose clean-image predictor is the super-resolution latent diffusion model.

The DDRM sampler of :mod:`.ddrm` runs unchanged in the pixel space (spectral update on the
operator's SVD, images in [−1, 1]); only the prediction ``x̂₀(x_t, t)`` differs:

1. encode the current estimate ``x_t / √ᾱ_t`` (clamped to the image range): ``z_e = E(·)``;
2. noise it to the same diffusion step in the latent space, ``z_t = √ᾱ_t z_e + √(1−ᾱ_t) n``,
   so the SR UNet sees the Gaussian corruption it was trained on;
3. predict the clean latent with the SR UNet conditioned on the low-resolution observation,
   ``ẑ₀ = pred(ε_θ(concat(z_t, 2y − 1), t))``, and decode it: ``x̂₀ = 2 D(ẑ₀) − 1``;
4. ``ε̂ = (x_t − √ᾱ_t x̂₀) / √(1 − ᾱ_t)`` for DDRM's unobserved coefficients.

The low-resolution conditioning must be y itself, so the task's SR factor must equal the
autoencoder's downsampling factor.
"""

from __future__ import annotations

import math

import torch

from .base import Pipeline
from .ddrm import DDRMConfig, SpectralProblem, ddrm_sample
from .ldm_sr import low_resolution_condition, sr_scale


class DDRMLDM(Pipeline):
    name = "ddrm-ldm"
    Config = DDRMConfig

    @classmethod
    def supports(cls, operator) -> bool:
        return operator.has_svd and sr_scale(operator) is not None

    @classmethod
    def task_hint(cls) -> str:
        return "DDRM-LDM does super-resolution with an SVD operator (srN, srN-bicubic)"

    def run(self, y, operator, sigma, noise, callback):
        lr = low_resolution_condition(self.models, operator, y)
        schedule = self.models.schedule("sr_unet")
        problem = SpectralProblem.from_observation(operator, y)

        def predict(x_t, t):
            a = schedule.alpha(t)
            estimate = ((x_t / math.sqrt(a) + 1) / 2).clamp(0, 1)
            z_e = self.models.call("encoder", image=estimate)
            z_t = schedule.add_noise(z_e, noise.like(z_e), t)
            timestep = torch.full((x_t.shape[0],), float(t), device=x_t.device)
            out = self.models.call("sr_unet", latent=z_t, lr_image=lr, timestep=timestep)
            z0, _ = schedule.split_prediction(out, z_t, t)
            x0 = 2 * self.models.call("decoder", latent=z0) - 1
            return x0, schedule.epsilon_from_x0(x0, x_t, t)

        x = ddrm_sample(problem, predict, schedule, self.config, 2 * sigma, noise, self.models.timings, callback)
        return (x + 1) / 2
