"""RELD: regularisation by a latent denoising diffusion model, solved with Half-Quadratic Splitting.

Objective, with decoder D, encoder E and the latent v:

    min_{t,v}  ½‖A t − b‖² + (μ/2)‖t − D(v)‖² + λ R(v),   ∇R(v) = v − Den(v; p)   (RED)

``Den(v; p)`` noises v to diffusion step p (``v_p = √ᾱ_p v + √(1−ᾱ_p) ε``) and returns the
latent UNet's clean estimate. HQS alternates

- t-update (closed form, :meth:`Operator.prox_l2`): ``t = (AᵀA + μI)⁻¹ (Aᵀb + μ D(v))``;
- v-update (one gradient step): ``v ← v − Π_ρ(η [λ (v − Den(v; p)) + μ J_Dᵀ (D(v) − t)])``,
  with Π_ρ the trust region below.

``J_Dᵀ r`` is the decoder's vector-Jacobian product (its own exported graph). With
``--v-grad encoder`` it is replaced by the cheaper approximation ``J_Dᵀ (D(v) − t) ≈ v − E(t)``,
which assumes E inverts D and J_D is close to an isometry: it needs no VJP graph but is
not the gradient of the objective.

Choices the paper leaves open, made here:
- ``μ = (max(σ, σ_min) / τ)²``: the ratio of the observation noise to the prior's pixel
  tolerance τ, so the t-update is the MAP estimate for noise σ and a Gaussian of width τ
  around D(v);
- the step is normalised by the local curvature of the v-objective, ``η = step / (λ + μ L)``
  per latent position, with ``L ≈ ‖J_Dᵀ J_D‖`` around that position from a few block power
  iterations at the warm start (J_D u by a finite difference of D, J_Dᵀ by the VJP graph; see
  :meth:`RELD.decoder_curvature`); the encoder approximation has curvature 1;
- each latent position's step (a vector over the latent channels) is shortened to at most
  ``trust_radius``: a trust region. The autoencoder's decoder attends over the whole image, so
  one position can gather the residual of every pixel into its gradient and its curvature can
  grow by orders of magnitude as it moves, far beyond the warm start's estimate; unbounded,
  such a position ran away and the decoded image collapsed (Set14's baboon, 500 × 480,
  denoising: 22.5 dB to 12 dB within three iterations). The radius, 0.5, is about 10× the
  99th percentile of the steps there, so it binds only at such positions;
- p decreases linearly from ``p_start`` to ``p_end`` over the iterations (coarse to fine);
- warm start ``v₀ = E(x₀)`` with ``x₀ = (AᵀA + μ₀I)⁻¹(Aᵀb + μ₀·½)``, a regularised
  least-squares image that exists for every operator;
- the output is one last t-update with its own weight,
  ``x̂ = (AᵀA + μ_out I)⁻¹(Aᵀb + μ_out D(v))`` with ``μ_out = (max(σ, σ_min)/τ_out)²``: the MAP
  image given the final D(v) with pixel error τ_out. τ sets how closely t follows the
  observation while v is fitted, τ_out how far the output trusts the fitted D(v); a small
  τ_out returns about D(v), which on denoising keeps little of the noise that t carries
  (a fraction 1/(1 + μ) of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import Pipeline, TaskDefault, hyper, stage

VGradient = Literal["vjp", "encoder"]
"""How the v-update gets ``J_Dᵀ(D(v) − t)``: the decoder VJP graph, or the encoder approximation ``v − E(t)``."""
V_GRADIENTS: tuple[VGradient, ...] = get_args(VGradient)


@dataclass
class RELDConfig:
    iterations: int = hyper(30, "HQS iterations")
    tau: float = hyper(0.04, "prior pixel tolerance τ; μ = (max(σ, σ_min)/τ)²")
    tau_out: float = hyper(0.04, "pixel tolerance τ_out of the final D(v) in the output's t-update; μ_out = (max(σ, σ_min)/τ_out)²")
    sigma_min: float = hyper(0.005, "σ floor used for μ on noiseless problems")
    lam: float = hyper(1.0, "λ: weight of the diffusion regulariser relative to μ = 1")
    step: float = hyper(0.8, "v-update step, normalised by the curvature: η = step / (λ + μL)")
    p_start: int = hyper(400, "diffusion step of Den at the first iteration")
    p_end: int = hyper(40, "diffusion step of Den at the last iteration")
    v_grad: VGradient = hyper("vjp", "vjp: exact J_Dᵀ(D(v) − t); encoder: the approximation v − E(t)")
    trust_radius: float = hyper(0.5, "largest change of the latent per position and iteration (2-norm over its channels)")


def noise_levels(start: int, end: int, iterations: int) -> list[int]:
    """Den's diffusion steps, decreasing linearly from ``start`` to ``end``."""
    if iterations == 1:
        return [end]
    return [round(start + (end - start) * k / (iterations - 1)) for k in range(iterations)]


CURVATURE_BLOCK = 8
"""Side, in latent positions, of the blocks of RELD's local curvature map (32 pixels with an f4 autoencoder)."""


def block_norms(u: torch.Tensor, block: int = CURVATURE_BLOCK) -> torch.Tensor:
    """The 2-norm of u over channels and each ``block × block`` square of positions, (B, 1, ⌈h/block⌉, ⌈w/block⌉)."""
    height, width = u.shape[-2:]
    energy = F.pad(u.pow(2).sum(1, keepdim=True), (0, -width % block, 0, -height % block))
    return (F.avg_pool2d(energy, block) * block**2).sqrt()


def expand_blocks(values: torch.Tensor, size, block: int = CURVATURE_BLOCK) -> torch.Tensor:
    """Per-block values back at every position of a latent of spatial ``size``, (B, 1, h, w)."""
    expanded = values.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return expanded[..., : size[0], : size[1]]


def within_trust_region(step: torch.Tensor, radius: float) -> torch.Tensor:
    """``step`` with each latent position's vector (over channels) shortened to at most ``radius``."""
    norms = step.norm(dim=1, keepdim=True)
    return step * (radius / norms.clamp_min(radius))


class RELD(Pipeline):
    name = "reld"
    Config = RELDConfig

    # Measured on held-out images (skimage's astronaut, coffee and chelsea at 128 px), gain in dB over
    # the degraded input with the bundled models:
    # - denoise σ 25/255 (noisy 20.6 dB): τ 0.1 with the output at τ_out = τ +4.06 (the previous default);
    #   the output D(v) itself (τ_out → 0) with τ 0.1 +5.59, 0.13 +6.29, 0.2 +6.96, 0.3 +7.24, 0.5 +7.38,
    #   1.0 +7.43; at τ 0.5, τ_out 0.02 +7.47, 0.04 +7.38, 0.06 +6.64; λ 0 there +7.02.
    # - deblur-gauss σ 0.01 (blurred 23.3 dB): τ = τ_out 0.04 +6.31 (λ 0: +6.35); τ 0.1 with τ_out 0.04
    #   +6.60 (λ 0: +5.40), τ_out 0.03 +6.60, 0.06 +6.48; τ 0.2 +5.58. τ 0.04 → 0.1 on the other kernels:
    #   deblur-uniform +7.16 → +7.71, deblur-motion (Levin09:2) +9.07 → +9.48.
    # - sr4-bicubic: τ 0.1 (+1.18) does not beat the default (+1.21).
    TASK_DEFAULTS = (
        TaskDefault("denoise", "denoise", {"tau": 0.5, "tau_out": 0.02}),
        TaskDefault("deblur-.*", "deblur (every kernel)", {"tau": 0.1}),
    )

    def run(self, y, operator, sigma, noise, callback):
        cfg = self.config
        if cfg.iterations < 1:
            raise UserError(f"--iterations must be at least 1, got {cfg.iterations}")
        if cfg.v_grad not in V_GRADIENTS:
            raise UserError(f"--v-grad must be one of {', '.join(V_GRADIENTS)}, got '{cfg.v_grad}'")
        if not (cfg.sigma_min > 0 and cfg.tau > 0 and cfg.tau_out > 0):  # μ > 0 keeps (AᵀA + μI) invertible at σ = 0
            raise UserError(
                f"--sigma-min, --tau and --tau-out must be positive, got {cfg.sigma_min:g}, {cfg.tau:g} and {cfg.tau_out:g}"
            )
        if not cfg.trust_radius > 0:
            raise UserError(f"--trust-radius must be positive, got {cfg.trust_radius:g}")
        timings = self.models.timings
        mu = (max(sigma, cfg.sigma_min) / cfg.tau) ** 2
        mu_out = (max(sigma, cfg.sigma_min) / cfg.tau_out) ** 2
        image_shape = (y.shape[0], *operator.x_shape[1:])

        with stage(timings, "data step"):
            t = operator.prox_l2(y, torch.full(image_shape, 0.5, device=y.device, dtype=y.dtype), mu)
        v = self.models.call("encoder", image=t)
        curvature = self.decoder_curvature(v, noise) if cfg.v_grad == "vjp" else 1.0
        levels = noise_levels(cfg.p_start, cfg.p_end, cfg.iterations)
        for k, level in enumerate(levels):
            decoded = self.models.call("decoder", latent=v)
            with stage(timings, "data step"):
                t = operator.prox_l2(y, decoded, mu)
            v = self.v_update(v, t, decoded, mu, curvature, noise, level)
            if callback is not None:
                callback(k + 1, len(levels), lambda t=t: t)
        decoded = self.models.call("decoder", latent=v)
        with stage(timings, "data step"):
            return operator.prox_l2(y, decoded, mu_out)

    def v_update(self, v, t, decoded, mu: float, curvature, noise, level: int):
        """``v − Π_ρ(η [λ (v − Den(v; p)) + μ g])`` with ``g = J_Dᵀ(D(v) − t)`` (or ``v − E(t)``), ``decoded = D(v)``
        and Π_ρ the trust region: each position's step shortened to at most ρ = ``trust_radius``.

        Args:
            v: the latent, (B, c, H/f, W/f) for the autoencoder's factor f and latent channels c.
            t: the t-update's image, (B, C, H, W), about [0, 1].
            decoded: ``D(v)``, (B, C, H, W), as the t-update computed it.
            mu: the splitting weight μ = (max(σ, σ_min)/τ)² > 0; the regulariser's weight is λ = ``lam`` · μ.
            curvature: L ≈ ‖J_Dᵀ J_D‖ around each latent position at the warm start, (B, 1, H/f, W/f)
                (1 with the encoder approximation); η = step / (λ + μL), position by position.
            noise: the seeded source of Den's noise.
            level: Den's diffusion step p, in [0, T) for the UNet's T training steps.
        """
        cfg = self.config
        lam = cfg.lam * mu
        eta = cfg.step / (lam + mu * curvature)
        if cfg.v_grad == "vjp":
            data_grad = self.models.call("decoder_vjp", latent=v, cotangent=decoded - t)
        else:
            data_grad = v - self.models.call("encoder", image=t)
        gradient = mu * data_grad if lam == 0 else lam * (v - self.denoise(v, level, noise)) + mu * data_grad
        return v - within_trust_region(eta * gradient, cfg.trust_radius)

    def decoder_curvature(self, v, noise, iterations: int = 4, epsilon: float = 1e-3) -> torch.Tensor:
        """Local ``‖J_Dᵀ J_D‖`` around each latent position, (B, 1, h, w), by a block power iteration.

        The latent is cut into blocks of :data:`CURVATURE_BLOCK` positions a side, and
        ``u ← J_Dᵀ J_D u`` is normalised block by block, so that each block's gain
        ``‖(J_Dᵀ J_D u)_b‖ / ‖u_b‖`` tends to the largest curvature of the decoder there;
        each position takes the largest gain of its block and the 8 around it. One number
        for the whole latent is about an average over its blocks after a few iterations, too
        large a step where the decoder is steeper than average (Set14's baboon: 2.0, against
        1.5–2.6 block by block). A tiled decoder's ``J_D u`` is taken at its statistics at v,
        as its VJP is.
        """
        decoded = self.models.call("decoder", latent=v)
        u = noise.like(v)
        with self.models.statistics_of("decoder", latent=v):
            for _ in range(iterations):
                u = u / expand_blocks(block_norms(u), v.shape[-2:]).clamp_min(torch.finfo(u.dtype).tiny)
                jvp = (self.models.call("decoder", latent=v + epsilon * u) - decoded) / epsilon
                u = self.models.call("decoder_vjp", latent=v, cotangent=jvp)
        return expand_blocks(F.max_pool2d(block_norms(u), 3, stride=1, padding=1), v.shape[-2:])

    def denoise(self, v, level: int, noise):
        """``Den(v; p)``: noise v to step p and return the UNet's clean-latent estimate."""
        schedule = self.models.schedule("unet")
        v_p = schedule.add_noise(v, noise.like(v), level)
        timestep = torch.full((v.shape[0],), float(level), device=v.device)
        denoised, _ = schedule.split_prediction(self.models.call("unet", latent=v_p, timestep=timestep), v_p, level)
        return denoised
