"""LDM-SR: supervised latent-diffusion super-resolution (Rombach et al. 2022, CompVis layout).

The UNet denoises a latent ``z_t`` of the high-resolution image conditioned on the
low-resolution image by channel concatenation, ``ε_θ(concat(z_t, 2y − 1), t)`` with
``y`` at the latent's resolution. DDIM (see :meth:`NoiseSchedule.ddim_step`)
runs from ``z_T ~ N(0, I)`` on the scheduler's grid, and the VQ/KL decoder maps ``z_0``
to the image. This is diffusers' ``LDMSuperResolutionPipeline``.

The super-resolution factor is fixed by the autoencoder's downsampling factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from ..operators import Operator
from .base import Pipeline, hyper, pad_to


@dataclass
class LDMSRConfig:
    steps: int = hyper(50, "DDIM steps")
    eta: float = hyper(0.0, "DDIM η (0: deterministic, 1: DDPM-like)")


def ddim_pairs(schedule, steps: int) -> list[tuple[int, int]]:
    """(t, t') pairs of the DDIM grid with ``t' = t − T/steps``, as diffusers' ``DDIMScheduler.step``."""
    timesteps = schedule.ddim_timesteps(steps)
    ratio = schedule.num_train_timesteps // steps
    return [(t, t - ratio) for t in timesteps]


def sr_scale(operator: Operator) -> int | None:
    """The super-resolution factor of an SR operator, else None."""
    return getattr(operator, "scale", None) if operator.task.startswith("sr") else None


def low_resolution_condition(models, operator: Operator, y: torch.Tensor) -> torch.Tensor:
    """The SR UNet's conditioning: y on the latent grid of the (possibly padded) canvas.

    The task's SR factor must equal the autoencoder's downsampling factor.
    """
    factor = models.latent_factor
    if sr_scale(operator) != factor:
        raise UserError(
            f"this SR latent model upscales by {factor}, but task '{operator.task}' asks for x{sr_scale(operator)}; "
            f"use sr{factor} or sr{factor}-bicubic"
        )
    _, _, height, width = operator.x_shape
    return pad_to(y, (height // factor, width // factor))  # a padded canvas (see PaddedOperator)


class LDMSR(Pipeline):
    name = "ldm-sr"
    Config = LDMSRConfig

    @classmethod
    def supports(cls, operator: Operator) -> bool:
        return sr_scale(operator) is not None

    @classmethod
    def task_hint(cls) -> str:
        return "LDM-SR only does super-resolution (srN, srN-bicubic, srN-gauss)"

    def run(self, y, operator, sigma, noise, callback):
        lr = low_resolution_condition(self.models, operator, y)
        schedule = self.models.schedule("sr_unet")
        z = noise.randn(y.shape[0], self.models.latent_channels, *lr.shape[-2:])
        pairs = ddim_pairs(schedule, self.config.steps)
        for step, (t, t_prev) in enumerate(pairs):
            timestep = torch.full((z.shape[0],), float(t), device=z.device)
            out = self.models.call("sr_unet", latent=z, lr_image=lr, timestep=timestep)
            z0, eps = schedule.split_prediction(out, z, t)
            z = schedule.ddim_step(z0, eps, t, t_prev, self.config.eta, noise.like(z) if self.config.eta > 0 else None)
            if callback is not None:
                callback(step + 1, len(pairs), lambda z0=z0: self.models.call("decoder", latent=z0))
        return self.models.call("decoder", latent=z)
