"""DDRM against the exact law of its output for a Gaussian prior.

With a prior ``x_m ~ N(m, s_p² I)`` on the model's [−1, 1] range the MMSE denoiser of every
diffusion step is known in closed form, and every DDRM update is affine in ``y`` and in
fresh Gaussian noise. So for each singular value the output law, ``out | y ~ N(α y + β, v)``,
follows from a scalar recursion (:func:`ddrm_output_law`), independent of the SVD machinery,
the spectral kernel and the engine. The pipeline's per-pixel regression of ``out`` on ``y``
must reproduce α, β and v.

DDRM is not an exact posterior sampler even with the exact denoiser (its η-parameterised
updates are a variational approximation), so α and v differ from the closed-form
posterior ``κ = s_p²/(s_p² + σ_y²)``, ``κ σ_y²``; :func:`test_ddrm_approaches_posterior_mean`
checks the part of the posterior it does reproduce.
"""

import math

import pytest
import torch
from torch import nn
from trt_restore.operators import make_operator
from trt_restore.pipelines import Models
from trt_restore.pipelines.ddrm import DDRM, DDRMConfig
from trt_restore.pipelines.schedule import NoiseSchedule
from trt_restore.runtime.torch_backend import TorchEngine
from trt_restore.specs import ComponentSpec, TensorSpec

PRIOR_MEAN, PRIOR_STD = 0.1, 0.25
SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


class GaussianPriorDenoiser(nn.Module):
    """ε̂(x_t, t) of the exact MMSE x̂₀ under the prior N(m, s²)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("alphas", NoiseSchedule.from_config(SCHEDULER).alphas_cumprod.float())

    def forward(self, sample, timestep):
        a = self.alphas[timestep.long()].view(-1, 1, 1, 1)
        x0 = PRIOR_MEAN + a.sqrt() * PRIOR_STD**2 / (a * PRIOR_STD**2 + 1 - a) * (sample - a.sqrt() * PRIOR_MEAN)
        return (sample - a.sqrt() * x0) / (1 - a).sqrt()


def gaussian_models() -> Models:
    spec = ComponentSpec(
        "pixel_unet",
        inputs=(TensorSpec("sample", ("B", 3, "H", "W")), TensorSpec("timestep", ("B",))),
        outputs=(TensorSpec("model_output", ("B", 3, "H", "W")),),
        meta={"scheduler": SCHEDULER},
    )
    return Models({"pixel_unet": TorchEngine(GaussianPriorDenoiser(), spec)})


def ddrm_output_law(config, sigma_y, s=1.0):
    """(α, β, v) of one spectral coefficient's output ``α ȳ + β + N(0, v)`` with ȳ = (Uᵀy)/s.

    Each quantity is tracked as (coefficient of ȳ, constant, noise variance); x̂₀ and ε̂ are
    affine in x_t and so share its noise.
    """
    schedule = NoiseSchedule.from_config(SCHEDULER)
    grid = list(range(0, 1000, 1000 // config.steps))
    t_last = grid[-1]
    sig_t = schedule.sigma(t_last)
    informative = s * sig_t > sigma_y
    state = (1.0 / sig_t, 0.0, (sig_t**2 - sigma_y**2 / s**2) / sig_t**2) if informative else (0.0, 0.0, 1.0)

    def affine(k, c, q):  # k·q + c for a tracked quantity q
        return (k * q[0], k * q[1] + c, k * k * q[2])

    for t, t_next in zip(reversed(grid), reversed([-1] + grid[:-1])):
        a = schedule.alpha(t)
        gain = math.sqrt(a) * PRIOR_STD**2 / (a * PRIOR_STD**2 + 1 - a)
        x0 = affine(gain, PRIOR_MEAN - gain * math.sqrt(a) * PRIOR_MEAN, state)
        sig_next = schedule.sigma(t_next) if t_next >= 0 else 0.0
        std = config.eta * sig_next
        tilde = math.sqrt(sig_next**2 - std**2)
        if s > 0 and s * sig_next > sigma_y:  # noisier than y
            diff2 = sig_next**2 - (sigma_y * config.eta_b / s) ** 2
            nxt = (config.eta_b + (1 - config.eta_b) * x0[0], (1 - config.eta_b) * x0[1], (1 - config.eta_b) ** 2 * x0[2] + diff2)
        elif s > 0 and s * sig_next < sigma_y:  # less noisy than y: x̂₀ + tilde (s ȳ − s x̂₀)/σ_y + std n
            k = 1 - tilde * s / sigma_y
            nxt = (k * x0[0] + tilde * s / sigma_y, k * x0[1], k * k * x0[2] + std**2)
        else:  # unobserved: x̂₀ + tilde ε̂ + std n with ε̂ = (x_t − √a x̂₀)/√(1−a), affine in x_t
            k_x = gain + tilde * (1 - math.sqrt(a) * gain) / math.sqrt(1 - a)
            c = PRIOR_MEAN - gain * math.sqrt(a) * PRIOR_MEAN
            nxt = (k_x * state[0], k_x * state[1] + c * (1 - tilde * math.sqrt(a) / math.sqrt(1 - a)), k_x**2 * state[2] + std**2)
        state = affine(math.sqrt(schedule.alpha(t_next)), 0.0, nxt)
    return state


def sample_problem(operator, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_model = PRIOR_MEAN + PRIOR_STD * torch.randn(operator.x_shape, generator=g)
    y = operator.A((x_model + 1) / 2) + sigma * torch.randn(operator.y_shape(operator.x_shape), generator=g)
    return x_model, y


def regression(out_model, y_model):
    """Slope, intercept and residual variance of ``out ~ y`` over pixels."""
    yc = y_model - y_model.mean()
    slope = float((yc * (out_model - out_model.mean())).sum() / (yc * yc).sum())
    intercept = float(out_model.mean() - slope * y_model.mean())
    residual = out_model - (intercept + slope * y_model)
    return slope, intercept, float(residual.var())


@pytest.mark.parametrize("sigma, steps, eta", [(0.05, 20, 0.85), (0.15, 20, 0.85), (0.05, 50, 1.0)])
def test_ddrm_denoise_output_follows_the_exact_law(sigma, steps, eta):
    config = DDRMConfig(steps=steps, eta=eta, eta_b=1.0)
    operator = make_operator("denoise", size=(96, 96), channels=3)
    _, y = sample_problem(operator, sigma)
    out = DDRM(gaussian_models(), config)(y, operator, sigma, seed=1)
    alpha, beta, var = ddrm_output_law(config, 2 * sigma)
    slope, intercept, residual = regression(2 * out - 1, 2 * y - 1)
    assert slope == pytest.approx(alpha, abs=0.015)
    assert intercept == pytest.approx(beta, abs=0.005)
    assert residual == pytest.approx(var, rel=0.06)


def test_ddrm_approaches_posterior_mean():
    """Deterministic DDRM (η = 0) with many steps lands within a few percent of the posterior mean's slope κ."""
    sigma = 0.05
    operator = make_operator("denoise", size=(64, 64), channels=3)
    _, y = sample_problem(operator, sigma)
    out = DDRM(gaussian_models(), DDRMConfig(steps=100, eta=0.0))(y, operator, sigma, seed=1)
    kappa = PRIOR_STD**2 / (PRIOR_STD**2 + (2 * sigma) ** 2)
    slope, intercept, _ = regression(2 * out - 1, 2 * y - 1)
    assert slope == pytest.approx(kappa, rel=0.07)
    assert intercept == pytest.approx(PRIOR_MEAN * (1 - slope), abs=0.005)


def test_ddrm_inpaint_observed_and_missing_pixels_follow_the_exact_law():
    sigma = 0.05
    config = DDRMConfig()
    operator = make_operator("inpaint", size=(96, 96), channels=3, fraction=0.5, seed=3)
    _, y = sample_problem(operator, sigma)
    out = 2 * DDRM(gaussian_models(), config)(y, operator, sigma, seed=2) - 1
    mask = operator.A(torch.ones(operator.x_shape)).bool()
    _, beta_missing, var_missing = ddrm_output_law(config, 2 * sigma, s=0.0)
    missing = out[~mask]
    assert float(missing.mean()) == pytest.approx(beta_missing, abs=0.01)
    assert float(missing.var()) == pytest.approx(var_missing, rel=0.06)
    alpha, beta, var = ddrm_output_law(config, 2 * sigma)
    slope, intercept, residual = regression(out[mask], (2 * y - 1)[mask])
    assert slope == pytest.approx(alpha, abs=0.02)
    assert intercept == pytest.approx(beta, abs=0.005)
    assert residual == pytest.approx(var, rel=0.08)


def test_ddrm_rejects_operator_without_svd():
    operator = make_operator("sr2-gauss", size=(32, 32), channels=3)
    with pytest.raises(Exception, match="SVD"):
        DDRM(gaussian_models())(torch.zeros(1, 3, 16, 16), operator, 0.0)
