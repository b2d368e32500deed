"""Diffusion noise schedule: ᾱ_t, prediction conversions and the DDIM step.

Forward process: ``x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε`` with ``ᾱ_t = ∏_{i≤t} (1 − β_i)``.
The network predicts ε (``epsilon``), v = √ᾱ ε − √(1−ᾱ) x₀ (``v_prediction``) or x₀
(``sample``). The conventions (timestep spacing, steps offset, ᾱ at t = −1) follow
diffusers' ``DDIMScheduler`` so that a model trained with it samples identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import UserError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

Scalar = float | torch.Tensor


def _betas(schedule: str, start: float, end: float, steps: int) -> torch.Tensor:
    if schedule == "linear":
        return torch.linspace(start, end, steps, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
    if schedule == "squaredcos_cap_v2":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor(
            [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
            dtype=torch.float64,
        )
    raise UserError(f"unknown beta schedule '{schedule}'; use linear, scaled_linear or squaredcos_cap_v2")


@dataclass(frozen=True)
class NoiseSchedule:
    """ᾱ_t on the training grid plus the sampling conventions of a scheduler config."""

    alphas_cumprod: torch.Tensor  # float64, CPU, shape [T]
    prediction_type: str = "epsilon"
    final_alpha_cumprod: float = 1.0
    timestep_spacing: str = "leading"
    steps_offset: int = 0

    @classmethod
    def from_config(cls, config: dict) -> NoiseSchedule:
        """From a diffusers scheduler config (``DDPMScheduler``/``DDIMScheduler`` keys)."""
        steps = int(config.get("num_train_timesteps", 1000))
        if config.get("trained_betas") is not None:
            betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
        else:
            betas = _betas(
                config.get("beta_schedule", "linear"),
                float(config.get("beta_start", 1e-4)),
                float(config.get("beta_end", 2e-2)),
                steps,
            )
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise UserError(f"unsupported prediction type '{prediction_type}'; expected one of {PREDICTION_TYPES}")
        return cls(
            alphas_cumprod=alphas_cumprod,
            prediction_type=prediction_type,
            final_alpha_cumprod=1.0 if config.get("set_alpha_to_one", True) else float(alphas_cumprod[0]),
            timestep_spacing=config.get("timestep_spacing", "leading"),
            steps_offset=int(config.get("steps_offset", 0)),
        )

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    def alpha(self, t: int) -> float:
        """ᾱ_t, with ᾱ_{t<0} = the final value (1 unless the config says otherwise)."""
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha_cumprod

    def sigma(self, t: int) -> float:
        """Variance-exploding noise level σ_t = √(1 − ᾱ_t) / √ᾱ_t of ``x_t / √ᾱ_t``."""
        a = self.alpha(t)
        return math.sqrt((1 - a) / a)

    def timestep_for_sigma(self, sigma: float) -> int:
        """The training timestep whose σ_t is closest to ``sigma`` (σ_t grows with t)."""
        sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        return int(torch.argmin((sigmas - sigma).abs()))

    def check_steps(self, steps: int) -> None:
        """A clear error unless 1 ≤ steps ≤ T."""
        if not 1 <= steps <= self.num_train_timesteps:
            raise UserError(f"steps must be between 1 and {self.num_train_timesteps}, got {steps}")

    def ddim_timesteps(self, steps: int) -> list[int]:
        """Descending sampling grid, as ``DDIMScheduler.set_timesteps``."""
        total = self.num_train_timesteps
        self.check_steps(steps)
        if self.timestep_spacing == "leading":
            ratio = total // steps
            return [i * ratio + self.steps_offset for i in reversed(range(steps))]
        if self.timestep_spacing == "trailing":
            ratio = total / steps
            return [round(total - i * ratio) - 1 for i in range(steps)]
        if self.timestep_spacing == "linspace":
            return [round(i * (total - 1) / (steps - 1)) if steps > 1 else 0 for i in reversed(range(steps))]
        raise UserError(f"unknown timestep spacing '{self.timestep_spacing}'")

    def split_prediction(self, model_output: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂₀, ε̂) from the network output at step t."""
        a = self.alpha(t)
        return self.split_with(model_output, x_t, math.sqrt(a), math.sqrt(1 - a))

    def split_with(
        self, model_output: torch.Tensor, x_t: torch.Tensor, sa: Scalar, sb: Scalar
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂₀, ε̂) given ``sa = √ᾱ_t`` and ``sb = √(1 − ᾱ_t)``, floats or 0-dim tensors (a captured step's)."""
        if self.prediction_type == "epsilon":
            return (x_t - sb * model_output) / sa, model_output
        if self.prediction_type == "v_prediction":
            return sa * x_t - sb * model_output, sa * model_output + sb * x_t
        return model_output, (x_t - sa * model_output) / sb

    def epsilon_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """ε implied by x_t and a (corrected) x̂₀: ``ε = (x_t − √ᾱ_t x̂₀) / √(1 − ᾱ_t)``."""
        a = self.alpha(t)
        return (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """``x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε``."""
        a = self.alpha(t)
        return math.sqrt(a) * x0 + math.sqrt(1 - a) * noise

    def ddim_step(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        t: int,
        t_prev: int,
        eta: float,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """DDIM (Song et al. 2021, eq. 12):

        ``x_{t'} = √ᾱ_{t'} x̂₀ + √(1 − ᾱ_{t'} − s²) ε̂ + s z`` with
        ``s = η √((1 − ᾱ_{t'})/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'})``.
        """
        x0_weight, eps_weight, std = self.ddim_coefficients(t, t_prev, eta)
        out = x0_weight * x0 + eps_weight * eps
        if std > 0:
            out = out + std * noise
        return out

    def ddim_coefficients(self, t: int, t_prev: int, eta: float) -> tuple[float, float, float]:
        """``(√ᾱ_{t'}, √(1 − ᾱ_{t'} − s²), s)``, the weights of x̂₀, ε̂ and the noise in :meth:`ddim_step`."""
        a, a_prev = self.alpha(t), self.alpha(t_prev)
        std = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        return math.sqrt(a_prev), math.sqrt(max(1 - a_prev - std**2, 0.0)), std
