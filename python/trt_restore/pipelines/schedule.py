"""Diffusion noise schedule: ᾱ_t, prediction conversions and the DDIM step.

Forward process: ``x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε`` with ``ᾱ_t = ∏_{i≤t} (1 − β_i)``.
The network predicts ε (``epsilon``), v = √ᾱ ε − √(1−ᾱ) x₀ (``v_prediction``) or x₀
(``sample``). Every field of a diffusers ``DDPMScheduler``/``DDIMScheduler`` config that
changes the timesteps, the alphas or the update is honoured, with the conventions of
diffusers' ``DDIMScheduler`` (:data:`SCHEDULER_DEFAULTS`): a model trained with it samples
identically here. A field this module does not know is refused, never dropped.

- betas: ``beta_schedule`` (linear, scaled_linear, squaredcos_cap_v2) from ``beta_start``
  and ``beta_end``, or ``trained_betas``; ``rescale_betas_zero_snr`` rescales them to a
  zero terminal SNR (Lin et al. 2024), ``√ᾱ ← (√ᾱ − √ᾱ_T) √ᾱ_0 / (√ᾱ_0 − √ᾱ_T)``;
- grid: ``timestep_spacing`` (leading + ``steps_offset``, trailing, linspace), and
  ``set_alpha_to_one`` for ᾱ after the last step;
- x̂₀: ``thresholding`` (dynamic: clamp to the per-sample ``dynamic_thresholding_ratio``
  quantile ``s`` of ``|x̂₀|``, ``s ∈ [1, sample_max_value]``, then divide by ``s``) or else
  ``clip_sample`` (clamp to ``±clip_sample_range``); ε̂ keeps the unclipped prediction, as
  in ``DDIMScheduler.step``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
# Every sampling field of a DDPMScheduler/DDIMScheduler config, with DDIMScheduler's defaults.
SCHEDULER_DEFAULTS: dict[str, object] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "trained_betas": None,
    "prediction_type": "epsilon",
    "steps_offset": 0,
    "set_alpha_to_one": True,
    "timestep_spacing": "leading",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
    "rescale_betas_zero_snr": False,
}
# Keys that change nothing in DDIM sampling: bookkeeping, the variance of DDPM's ancestral
# sampler (DDIM's own variance comes from η) and PNDM's choice of Runge-Kutta warm-up steps
# (Stable Diffusion 1.x folders name PNDMScheduler; DDIM has no warm-up).
NON_SAMPLING_FIELDS = ("_class_name", "_diffusers_version", "variance_type", "skip_prk_steps")
# Defaults of the scheduler classes whose sampler differs from DDIM's: PNDM never clips x̂₀.
CLASS_DEFAULTS: dict[str, dict[str, object]] = {"PNDMScheduler": {"clip_sample": False}}
_CHOICES = {"prediction_type": PREDICTION_TYPES, "beta_schedule": BETA_SCHEDULES, "timestep_spacing": TIMESTEP_SPACINGS}
_FLAGS = ("set_alpha_to_one", "clip_sample", "thresholding", "rescale_betas_zero_snr")

Scalar = float | torch.Tensor


def scheduler_config(config: Mapping[str, object], source: Path | str = "scheduler config") -> dict:
    """The complete, validated sampling config: every field of :data:`SCHEDULER_DEFAULTS`, JSON-able.

    Missing fields take diffusers' ``DDIMScheduler`` defaults (:data:`CLASS_DEFAULTS` where the
    config's class samples otherwise); unknown fields and values are
    refused with a one-line :class:`UserError` naming them, so that nothing is silently dropped.
    """
    unknown = sorted(set(config) - set(SCHEDULER_DEFAULTS) - set(NON_SAMPLING_FIELDS))
    if unknown:
        raise UserError(
            f"{source}: scheduler field(s) {', '.join(unknown)} are not supported; "
            f"the supported fields are {', '.join(SCHEDULER_DEFAULTS)}"
        )
    defaults = {**SCHEDULER_DEFAULTS, **CLASS_DEFAULTS.get(str(config.get("_class_name")), {})}
    full = {key: config.get(key, default) for key, default in defaults.items()}
    for key, choices in _CHOICES.items():
        if full[key] not in choices:
            raise UserError(f"{source}: {key} '{full[key]}' is not supported; use one of {', '.join(choices)}")
    for key in _FLAGS:
        if not isinstance(full[key], bool):
            raise UserError(f"{source}: {key} must be true or false, got {full[key]!r}")
    try:
        for key in ("num_train_timesteps", "steps_offset"):
            full[key] = int(full[key])
        for key in ("beta_start", "beta_end", "clip_sample_range", "dynamic_thresholding_ratio", "sample_max_value"):
            full[key] = float(full[key])
        if full["trained_betas"] is not None:
            full["trained_betas"] = [float(beta) for beta in full["trained_betas"]]
    except (TypeError, ValueError) as error:
        raise UserError(f"{source}: a scheduler field has a value of the wrong type ({error})") from None
    if full["num_train_timesteps"] < 1 or (full["trained_betas"] is not None and len(full["trained_betas"]) != full["num_train_timesteps"]):
        raise UserError(f"{source}: num_train_timesteps must be positive and match trained_betas' length")
    if full["rescale_betas_zero_snr"] and full["prediction_type"] == "epsilon":
        raise UserError(
            f"{source}: rescale_betas_zero_snr gives ᾱ_T = 0, where an epsilon-prediction model cannot recover x₀; "
            "use it with prediction_type v_prediction or sample"
        )
    if not 0 < full["dynamic_thresholding_ratio"] <= 1:
        raise UserError(f"{source}: dynamic_thresholding_ratio must be in (0, 1], got {full['dynamic_thresholding_ratio']}")
    return full


def _betas(schedule: str, start: float, end: float, steps: int) -> torch.Tensor:
    if schedule == "linear":
        return torch.linspace(start, end, steps, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2

    def alpha_bar(t: float) -> float:  # squaredcos_cap_v2 (the GLIDE / improved-DDPM cosine schedule)
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor(
        [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
        dtype=torch.float64,
    )


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Betas whose ᾱ ends at exactly 0 (module docstring), as diffusers' ``rescale_zero_terminal_snr``."""
    root = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alphas_cumprod = root.square()
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1 - alphas


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen's dynamic thresholding of x̂₀ per sample (module docstring)."""
    flat = x0.reshape(x0.shape[0], -1).float()
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(1, max_value)[:, None]
    return (flat.clamp(-s, s) / s).reshape(x0.shape).to(x0.dtype)


@dataclass(frozen=True)
class NoiseSchedule:
    """ᾱ_t on the training grid plus the sampling conventions of a scheduler config."""

    alphas_cumprod: torch.Tensor  # float64, CPU, shape [T]
    prediction_type: str = "epsilon"
    final_alpha_cumprod: float = 1.0
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    clip_range: float | None = None  # clamp x̂₀ to ±clip_range (clip_sample)
    threshold: tuple[float, float] | None = None  # (ratio, max value) of dynamic thresholding

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> NoiseSchedule:
        """From a diffusers scheduler config (every field of :func:`scheduler_config`)."""
        config = scheduler_config(config)
        steps = config["num_train_timesteps"]
        if config["trained_betas"] is not None:
            betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
        else:
            betas = _betas(config["beta_schedule"], config["beta_start"], config["beta_end"], steps)
        if config["rescale_betas_zero_snr"]:
            betas = rescale_zero_terminal_snr(betas)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        return cls(
            alphas_cumprod=alphas_cumprod,
            prediction_type=config["prediction_type"],
            final_alpha_cumprod=1.0 if config["set_alpha_to_one"] else float(alphas_cumprod[0]),
            timestep_spacing=config["timestep_spacing"],
            steps_offset=config["steps_offset"],
            clip_range=config["clip_sample_range"] if config["clip_sample"] and not config["thresholding"] else None,
            threshold=(config["dynamic_thresholding_ratio"], config["sample_max_value"]) if config["thresholding"] else None,
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

    def ddim_pairs(self, steps: int) -> list[tuple[int, int]]:
        """(t, t') pairs of the DDIM grid with ``t' = t − T // steps``, as diffusers' ``DDIMScheduler.step``
        (t' < 0 stands for the final ᾱ)."""
        ratio = self.num_train_timesteps // steps
        return [(t, t - ratio) for t in self.ddim_timesteps(steps)]

    def split_prediction(self, model_output: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂₀, ε̂) from the network output at step t."""
        a = self.alpha(t)
        return self.split_with(model_output, x_t, math.sqrt(a), math.sqrt(1 - a))

    def split_with(
        self, model_output: torch.Tensor, x_t: torch.Tensor, sa: Scalar, sb: Scalar
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂₀, ε̂) given ``sa = √ᾱ_t`` and ``sb = √(1 − ᾱ_t)``, floats or 0-dim tensors (a captured step's).

        x̂₀ is thresholded or clipped as the config says; ε̂ comes from the raw prediction.
        """
        if self.prediction_type == "epsilon":
            x0, eps = (x_t - sb * model_output) / sa, model_output
        elif self.prediction_type == "v_prediction":
            x0, eps = sa * x_t - sb * model_output, sa * model_output + sb * x_t
        else:
            x0, eps = model_output, (x_t - sa * model_output) / sb
        if self.threshold is not None:
            x0 = dynamic_threshold(x0, *self.threshold)
        elif self.clip_range is not None:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        return x0, eps

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
