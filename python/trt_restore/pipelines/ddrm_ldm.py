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

from ..runtime.graphs import LoopGraphs
from .base import Pipeline
from .ddrm import DDRMConfig, SpectralProblem, ddrm_sample
from .ldm_sr import low_resolution_condition, low_resolution_inputs, sr_scale


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
        lr = low_resolution_inputs(self.models, low_resolution_condition(self.models, operator, y), noise)
        schedule = self.models.schedule("sr_unet")
        problem = SpectralProblem.from_observation(operator, y)

        def predict(x_t, t, sa, sb, latent_noise):
            estimate = ((x_t / sa + 1) / 2).clamp(0, 1)
            z_e = self.models.call("encoder", image=estimate)
            z_t = sa * z_e + sb * latent_noise  # NoiseSchedule.add_noise with the step's √ᾱ_t, √(1 − ᾱ_t)
            out = self.models.call("sr_unet", latent=z_t, timestep=t.expand(x_t.shape[0]), **lr)
            z0, _ = schedule.split_with(out, z_t, sa, sb)
            x0 = 2 * self.models.call("decoder", latent=z0) - 1
            return x0, (x_t - sa * x0) / sb  # NoiseSchedule.epsilon_from_x0

        batch, _, height, width = problem.image_shape
        factor = self.models.latent_factor
        latent_shape = (batch, self.models.latent_channels, height // factor, width // factor)
        graphs = LoopGraphs(self.models, self.config.cuda_graphs, y.device)
        timings = self.models.timings
        x = ddrm_sample(
            problem, predict, schedule, self.config, 2 * sigma, noise, graphs, timings, callback, [latent_shape]
        )
        return (x + 1) / 2
