"""LDM-SR: supervised latent-diffusion super-resolution (Rombach et al. 2022, CompVis layout).

The UNet denoises a latent ``z_t`` of the high-resolution image conditioned on the
low-resolution image by channel concatenation, ``ε_θ(concat(z_t, 2y − 1), t)`` with
``y`` at the latent's resolution. DDIM (see :meth:`NoiseSchedule.ddim_step`)
runs from ``z_T ~ N(0, I)`` on the scheduler's grid, and the VQ/KL decoder maps ``z_0``
to the image. This is diffusers' ``LDMSuperResolutionPipeline``.

The Stable Diffusion x4 upscaler (``StableDiffusionUpscalePipeline``) is the same loop with
a noise-augmented condition: ``y_l = √ᾱ_l (2y − 1) + √(1 − ᾱ_l) n`` (``n`` drawn once,
before ``z_T``; ᾱ_l of its ``low_res_scheduler`` at noise level ``l``, also the UNet's class
label) and the stored empty-prompt embedding as its text condition, i.e. the pipeline at
guidance scale 1 (:class:`~trt_restore.export.components.LowResNoise` in the SR UNet's graph).

The super-resolution factor is fixed by the autoencoder's downsampling factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import UserError
from ..operators import Operator
from ..runtime.graphs import CudaGraphs, LoopGraphs, step_table
from .base import Pipeline, cuda_graphs_setting, hyper, pad_to


@dataclass
class LDMSRConfig:
    steps: int = hyper(50, "DDIM steps")
    eta: float = hyper(0.0, "DDIM η (0: deterministic, 1: DDPM-like)")
    cuda_graphs: CudaGraphs = cuda_graphs_setting()


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


def low_resolution_inputs(models, lr: torch.Tensor, noise) -> dict[str, torch.Tensor]:
    """The SR UNet's conditioning inputs: ``lr_image``, plus for the Stable Diffusion x4 upscaler the
    ``lr_noise`` of its noise augmentation, drawn once per image (before the initial latent, as
    diffusers' ``StableDiffusionUpscalePipeline`` draws it)."""
    inputs = {"lr_image": lr}
    if any(tensor.name == "lr_noise" for tensor in models.engine("sr_unet").spec.inputs):
        inputs["lr_noise"] = noise.like(lr)
    return inputs


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
        lr = low_resolution_inputs(self.models, low_resolution_condition(self.models, operator, y), noise)
        schedule = self.models.schedule("sr_unet")
        pairs = schedule.ddim_pairs(self.config.steps)
        eta = self.config.eta
        rows = []
        for t, t_prev in pairs:
            a = schedule.alpha(t)
            rows.append((t, math.sqrt(a), math.sqrt(1 - a), *schedule.ddim_coefficients(t, t_prev, eta)))
        table = step_table(rows, y.device)

        def ddim(z, scalars, *draws):
            """One DDIM step with the step's scalars as tensors (:meth:`NoiseSchedule.ddim_step`)."""
            t, sa, sb, x0_weight, eps_weight, std = scalars.unbind()
            out = self.models.call("sr_unet", latent=z, timestep=t.expand(z.shape[0]), **lr)
            z0, eps = schedule.split_with(out, z, sa, sb)
            z_next = x0_weight * z0 + eps_weight * eps
            return (z_next + std * draws[0] if draws else z_next), z0

        def sample():
            z = noise.randn(y.shape[0], self.models.latent_channels, *lr["lr_image"].shape[-2:])
            step = graphs.step(ddim, len(pairs))
            for k in range(len(pairs)):
                z, z0 = step(z, table[k], *((noise.like(z),) if eta > 0 else ()))
                if callback is not None:
                    callback(k + 1, len(pairs), lambda z0=z0: self.models.call("decoder", latent=z0))
            return z.clone()  # a captured step's output buffer is the graph's

        graphs = LoopGraphs(self.models, self.config.cuda_graphs, y.device)
        return self.models.call("decoder", latent=graphs.run(sample, noise.generator))
