"""DDRM: Denoising Diffusion Restoration Models (Kawar et al. 2022), in the pixel space.

The degradation ``H = U Σ Vᵀ`` (the operator's SVD) decouples the problem: with
``x̄ = Vᵀ x`` and ``ȳ = Σ⁻¹ Uᵀ y``, every spectral coefficient is either unobserved
(s = 0), observed with less noise than the diffusion state (``s σ_t < σ_y``) or with
more (``s σ_t ≥ σ_y``). The sampler is ``efficient_generalized_steps`` of the
reference code:

- grid ``τ = 0, 1000/T, 2000/T, …`` visited in reverse, ᾱ at −1 equal to 1;
- init ``x̄_T = [ȳ · 1(sσ_T > σ_y) + √(σ_T² − (σ_y/s)² 1(sσ_T > σ_y)) n] / σ_T``;
- each step: ``x̂₀ = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t``, the three-case update of
  :func:`trt_restore.kernels.ddrm_spectral_update` with ``η_A = η_C = eta`` and ``η_B = eta_b``,
  then ``x_{t'} = √ᾱ_{t'} V x̄_{t'}``.

Images are mapped to the model's [−1, 1] range: ``x_m = 2x − 1``, so ``y_m = 2y − A1`` and
``σ_y = 2σ``. Singular values that are numerically zero are treated as unobserved, by the
one rule of :meth:`~trt_restore.operators.base.SVDOperator.observed_singular_values`
(``s_i ≤ s_max·√ε`` counts as 0); the torch update and the CUDA kernel both read them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import kernels
from ..operators import Operator
from ..runtime.graphs import CudaGraphs, LoopGraphs, step_table
from .base import Noise, Pipeline, StepCallback, TaskDefault, cuda_graphs_setting, hyper, stage
from .schedule import NoiseSchedule


@dataclass
class DDRMConfig:
    steps: int = hyper(20, "number of DDRM steps T (grid 0, 1000/T, …)")
    eta: float = hyper(0.85, "η (η_A = η_C): stochasticity of the unobserved and less-noisy coefficients")
    eta_b: float = hyper(1.0, "η_B: weight of the observation on the noisier-than-y coefficients")
    cuda_graphs: CudaGraphs = cuda_graphs_setting()


class SpectralProblem:
    """An observation expressed in the operator's SVD basis, zero-padded to the image dimension N."""

    def __init__(self, operator: Operator, y_model: torch.Tensor, image_shape: torch.Size):
        batch = y_model.shape[0]
        self.operator = operator
        self.image_shape = image_shape
        n = math.prod(image_shape[1:])
        s = operator.observed_singular_values(y_model.dtype, y_model.device)
        k = s.numel()
        self.singulars = torch.zeros(n, device=y_model.device, dtype=y_model.dtype)
        self.singulars[:k] = s
        self.ut_y = torch.zeros(batch, n, device=y_model.device, dtype=y_model.dtype)
        self.ut_y[:, :k] = operator.U_adjoint(y_model)[:, :k]

    @classmethod
    def from_observation(cls, operator: Operator, y: torch.Tensor) -> SpectralProblem:
        """From ``y`` in [0, 1], mapped to the model's range: ``y_m = 2y − A1`` (so that ``y_m = A(2x − 1)``)."""
        ones = torch.ones(operator.x_shape, device=y.device, dtype=y.dtype)
        return cls(operator, 2 * y - operator.A(ones), torch.Size((y.shape[0], *operator.x_shape[1:])))

    def to_spectral(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator.V_adjoint(x)

    def to_image(self, v: torch.Tensor) -> torch.Tensor:
        return self.operator.V(v).reshape(v.shape[0], *self.image_shape[1:])

    def initial_state(self, sigma_t: float, sigma_y: float, noise: torch.Tensor) -> torch.Tensor:
        """DDRM's ``x_T``: sample p(x̄_T | y) where the observation is informative, prior noise elsewhere."""
        s = self.singulars
        informative = s * sigma_t > sigma_y
        safe_s = torch.where(informative, s, torch.ones_like(s))
        y_bar = torch.where(informative, self.ut_y / safe_s, torch.zeros_like(self.ut_y))
        inv = torch.where(informative, sigma_y / safe_s, torch.zeros_like(s))
        remaining = (sigma_t**2 - inv**2).clamp_min(0).sqrt()
        return self.to_image((y_bar + remaining * self.to_spectral(noise)) / sigma_t)


def ddrm_sample(
    problem: SpectralProblem,
    predict_x0_eps,
    schedule: NoiseSchedule,
    config: DDRMConfig,
    sigma_y: float,
    noise: Noise,
    graphs: LoopGraphs,
    timings,
    callback: StepCallback | None = None,
    draw_shapes: Sequence[tuple[int, ...]] = (),
) -> torch.Tensor:
    """Run the DDRM sampler in the model's range; returns the final x̂₀ (B, C, H, W) in [−1, 1].

    ``predict_x0_eps(x_t, t, √ᾱ_t, √(1−ᾱ_t), *draws) -> (x̂₀, ε̂)`` is the clean-image
    predictor (a pixel UNet for DDRM, the SR latent diffusion model for DDRM-LDM); the
    step's scalars come as 0-dim tensors and ``draws`` are fresh Gaussian noise of
    ``draw_shapes``, so that ``graphs`` can capture the predictor and the Vᵀ projections as
    one CUDA graph. The spectral update and V run after it, eagerly.

    Args:
        problem: the observation in the operator's SVD basis, in the model's range (``y_m = 2y − A1``).
        predict_x0_eps: the clean-image predictor above; x_t, x̂₀ and ε̂ are (B, C, H, W) in the model's range.
        schedule: the predictor's noise schedule; its T training steps set the grid ``0, T // steps, 2 (T // steps), …``.
        config: ``steps`` (1 ≤ steps ≤ T), ``eta`` (η_A = η_C) and ``eta_b`` (η_B), each η in [0, 1].
        sigma_y: noise std of the observation in the model's range (2σ for σ on the [0, 1] scale), ≥ 0.
        noise: the seeded source of the initial state's, the updates' and the predictor's noise.
        graphs: captures each step as a CUDA graph where the loop allows it; else the loop runs eagerly.
        timings: stage name to its durations in seconds (``Models.timings``), appended to.
        callback: ``callback(step, total_steps, estimate)`` after each step; ``estimate()`` is x̂₀ in [0, 1].
        draw_shapes: shapes of the extra Gaussian draws handed to the predictor at each step
            (DDRM-LDM's latent noise); none for DDRM.
    """
    total = schedule.num_train_timesteps
    schedule.check_steps(config.steps)
    grid = list(range(0, total, total // config.steps))  # as the reference: T // steps may leave a few extra steps
    pairs = list(zip(reversed(grid), reversed([-1] + grid[:-1])))
    batch = problem.ut_y.shape[0]
    table = step_table(
        [(t, math.sqrt(schedule.alpha(t)), math.sqrt(1 - schedule.alpha(t))) for t, _ in pairs], problem.ut_y.device
    )

    def project(x_t: torch.Tensor, scalars: torch.Tensor, *draws: torch.Tensor):
        x0, eps = predict_x0_eps(x_t, *scalars.unbind(), *draws)
        with stage(timings, "svd projections"):
            return problem.to_spectral(x0), problem.to_spectral(eps), x0

    def sample() -> torch.Tensor:
        x = problem.initial_state(schedule.sigma(grid[-1]), sigma_y, noise.randn(batch, *problem.image_shape[1:]))
        step = graphs.step(project, len(pairs))
        for k, (_, t_next) in enumerate(pairs):
            vt_x0, vt_eps, x0 = step(x, table[k], *(noise.randn(*shape) for shape in draw_shapes))
            with stage(timings, "data step"):
                vt_next = kernels.ddrm_spectral_update(
                    vt_x0,
                    vt_eps,
                    problem.ut_y,
                    problem.singulars,
                    noise.like(vt_x0),
                    schedule.sigma(t_next) if t_next >= 0 else 0.0,
                    sigma_y,
                    config.eta,
                    config.eta_b,
                )
            with stage(timings, "svd projections"):
                x = math.sqrt(schedule.alpha(t_next)) * problem.to_image(vt_next)
            if callback is not None:
                callback(k + 1, len(pairs), lambda x0=x0: (x0 + 1) / 2)
        # The last step lands on ᾱ = 1 with σ' = 0, so x is the final denoised estimate.
        return x

    return graphs.run(sample, noise.generator)


class DDRM(Pipeline):
    name = "ddrm"
    Config = DDRMConfig

    @classmethod
    def supports(cls, operator: Operator) -> bool:
        return operator.has_svd

    @classmethod
    def task_hint(cls) -> str:
        return "DDRM needs an operator with an SVD (every task but srN-gauss)"

    # η = 0 for denoising and super-resolution (50 steps for SR); η 0.95, 50 steps for Gaussian
    # deblurring. Measured on held-out images (skimage's astronaut, coffee and chelsea at 128 px),
    # PSNR against the Config's defaults (η 0.85, 20 steps): denoise σ 25/255 26.7 → 28.5 dB;
    # sr4-bicubic 23.1 → 24.5 dB (23.5 with η 0 at 20 steps); deblur-gauss 26.9 → 27.4 dB (η 0 there: 26.0).
    TASK_DEFAULTS = (
        TaskDefault("denoise", "denoise", {"eta": 0.0}),
        TaskDefault(r"sr\d+(-bicubic)?", "SR (srN, srN-bicubic)", {"eta": 0.0, "steps": 50}),
        TaskDefault("deblur-gauss", "deblur-gauss", {"eta": 0.95, "steps": 50}),
    )

    def run(self, y, operator, sigma, noise, callback):
        schedule = self.models.schedule("pixel_unet")
        problem = SpectralProblem.from_observation(operator, y)

        def predict(x_t, t, sa, sb):
            out = self.models.call("pixel_unet", sample=x_t, timestep=t.expand(x_t.shape[0]))
            return schedule.split_with(out, x_t, sa, sb)

        graphs = LoopGraphs(self.models, self.config.cuda_graphs, y.device)
        x = ddrm_sample(
            problem, predict, schedule, self.config, 2 * sigma, noise, graphs, self.models.timings, callback
        )
        return (x + 1) / 2
