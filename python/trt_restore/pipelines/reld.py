"""RELD: regularisation by a latent denoising diffusion model, solved with Half-Quadratic Splitting.

Objective, with decoder D, encoder E and the latent v:

    min_{t,v}  ½‖A t − b‖² + (μ/2)‖t − D(v)‖² + λ R(v),   ∇R(v) = v − Den(v; p)   (RED)

``Den(v; p)`` noises v to diffusion step p (``v_p = √ᾱ_p v + √(1−ᾱ_p) ε``) and returns the
latent UNet's clean estimate. HQS alternates

- t-update (closed form, :meth:`Operator.prox_l2`): ``t = (AᵀA + μI)⁻¹ (Aᵀb + μ D(v))``;
- v-update (one gradient step): ``v ← v − η [λ (v − Den(v; p)) + μ J_Dᵀ (D(v) − t)]``.

``J_Dᵀ r`` is the decoder's vector-Jacobian product (its own exported graph). With
``--v-grad encoder`` it is replaced by the cheaper approximation ``J_Dᵀ (D(v) − t) ≈ v − E(t)``,
which assumes E inverts D and J_D is close to an isometry: it needs no VJP graph but is
not the gradient of the objective.

Choices the paper leaves open, made here:
- ``μ = (max(σ, σ_min) / τ)²``: the ratio of the observation noise to the prior's pixel
  tolerance τ, so the t-update is the MAP estimate for noise σ and a Gaussian of width τ
  around D(v);
- the step is normalised by the curvature of the v-objective, ``η = step / (λ + μ)``;
- p decreases linearly from ``p_start`` to ``p_end`` over the iterations (coarse to fine);
- warm start ``v₀ = E(x₀)`` with ``x₀ = (AᵀA + μ₀I)⁻¹(Aᵀb + μ₀·½)``, a regularised
  least-squares image that exists for every operator; the output is the final t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from .base import Pipeline, hyper, stage

V_GRADIENTS = ("vjp", "encoder")


@dataclass
class RELDConfig:
    iterations: int = hyper(30, "HQS iterations")
    tau: float = hyper(0.04, "prior pixel tolerance τ; μ = (max(σ, σ_min)/τ)²")
    sigma_min: float = hyper(0.005, "σ floor used for μ on noiseless problems")
    lam: float = hyper(1.0, "λ: weight of the diffusion regulariser relative to μ = 1")
    step: float = hyper(0.8, "v-update step, normalised: η = step / (λ + μ)")
    p_start: int = hyper(400, "diffusion step of Den at the first iteration")
    p_end: int = hyper(40, "diffusion step of Den at the last iteration")
    v_grad: str = hyper("vjp", "vjp: exact J_Dᵀ(D(v) − t); encoder: the approximation v − E(t)")


def noise_levels(start: int, end: int, iterations: int) -> list[int]:
    """Den's diffusion steps, decreasing linearly from ``start`` to ``end``."""
    if iterations == 1:
        return [end]
    return [round(start + (end - start) * k / (iterations - 1)) for k in range(iterations)]


class RELD(Pipeline):
    name = "reld"
    Config = RELDConfig

    def run(self, y, operator, sigma, noise, callback):
        cfg = self.config
        if cfg.v_grad not in V_GRADIENTS:
            raise UserError(f"--v-grad must be one of {', '.join(V_GRADIENTS)}, got '{cfg.v_grad}'")
        timings = self.models.timings
        mu = (max(sigma, cfg.sigma_min) / cfg.tau) ** 2
        lam = cfg.lam * mu
        eta = cfg.step / (lam + mu)
        schedule = self.models.schedule("unet")
        image_shape = (y.shape[0], *operator.x_shape[1:])

        with stage(timings, "data step"):
            x_init = operator.prox_l2(y, torch.full(image_shape, 0.5, device=y.device, dtype=y.dtype), mu)
        v = self.models.call("encoder", image=x_init)
        t = x_init
        levels = noise_levels(cfg.p_start, cfg.p_end, cfg.iterations)
        for k, p in enumerate(levels):
            decoded = self.models.call("decoder", latent=v)
            with stage(timings, "data step"):
                t = operator.prox_l2(y, decoded, mu)
            v_p = schedule.add_noise(v, noise.like(v), p)
            timestep = torch.full((v.shape[0],), float(p), device=v.device)
            denoised, _ = schedule.split_prediction(self.models.call("unet", latent=v_p, timestep=timestep), v_p, p)
            if cfg.v_grad == "vjp":
                data_grad = self.models.call("decoder_vjp", latent=v, cotangent=decoded - t)
            else:
                data_grad = v - self.models.call("encoder", image=t)
            v = v - eta * (lam * (v - denoised) + mu * data_grad)
            if callback is not None:
                callback(k + 1, len(levels), lambda: t)
        decoded = self.models.call("decoder", latent=v)
        with stage(timings, "data step"):
            return operator.prox_l2(y, decoded, mu)
