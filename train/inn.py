"""Training of the wavelet INNs of LatentINDIGO (``inn_pixel`` and ``inn_latent``).

The INN ``G`` must map a clean signal to a coarse part that matches the observation on
the coarse grid, as :mod:`trt_restore.pipelines.indigo` uses it. For a crop ``x``, a
standard degradation ``A`` (one per batch, from :data:`STANDARD_DEGRADATIONS`),
``σ ~ U[0, σ_max]``, ``y = clamp(A x + σ n, 0, 1)`` and ``e`` the degradation embedding:

    pixel:   L = mean ‖coarse(G(x, e)) − c(y)‖²,          c = pipelines.indigo.coarse_target
    latent:  L = mean ‖coarse(G(E(x), e)) − avgpool_f(E(ỹ))‖²,  ỹ = full_size_observation(y)

with ``E`` the trained ``vae``'s encoder and ``f = 2^L`` the INN's factor. The couplings
start at the identity (the plain Haar transform), so training starts from the box
average.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trt_restore.errors import UserError
from trt_restore.export.components import Encoder, autoencoder_meta
from trt_restore.export.inn import WaveletINN
from trt_restore.export.tiny import tiny_inn
from trt_restore.inn_condition import degradation_embedding
from trt_restore.operators import Degradation, Operator, make_operator
from trt_restore.pipelines.indigo import coarse_target, full_size_observation

from .data import MIN_SCALE, CropSampler, describe_pool, load_pool
from .loop import latent_autoencoder, weights_digest

INN_SIGMA_MAX = 0.1
# (task, operator parameters): the degradations the demo and benchmarks use, with their default settings.
STANDARD_DEGRADATIONS: tuple[tuple[str, dict], ...] = (
    ("denoise", {}),
    ("sr2", {}),
    ("sr4", {}),
    ("sr4-bicubic", {}),
    ("deblur-gauss", {}),
    ("deblur-uniform", {}),
    *(("inpaint", {"fraction": 0.5, "seed": seed}) for seed in range(4)),
    ("colorize", {}),
)
LEVELS = {"pixel": 2, "latent": 1}


def identity_inn(space: str, channels: int) -> WaveletINN:
    """The INN that training starts from: the plain Haar lifting over ``channels`` (module docstring).

    Its hidden weights are drawn from a fixed seed, so packaging the identity INN gives the same file every time.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return WaveletINN(channels=channels, levels=LEVELS[space], steps=2, hidden=32, identity_init=True)


def standard_operators(size: int, channels: int = 3) -> list[Operator]:
    """One operator per entry of :data:`STANDARD_DEGRADATIONS` on ``size × size`` images."""
    return [make_operator(task, size=(size, size), channels=channels, **params) for task, params in STANDARD_DEGRADATIONS]


def observe(operator: Operator, x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """``clamp(A x + σ n, 0, 1)``: an observation as an image file would hold it."""
    return Degradation(operator, sigma).observe(x, seed).clamp(0, 1)


def coarse_and_target(
    inn: WaveletINN, x: torch.Tensor, operator: Operator, sigma: float, seed: int, encoder: Encoder | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(coarse(G(signal, e)), target)`` for clean images ``x`` and one degradation (module docstring).

    Without ``encoder`` the pixel variant; with it the latent one, where the target is
    ``avgpool_f(E(ỹ))`` as in ``IndigoLatent._target``.
    """
    y = observe(operator, x, sigma, seed)
    condition = degradation_embedding(operator.task, sigma, x.shape[0]).to(x.device)
    if encoder is None:
        return inn(x, condition)[0], coarse_target(y, operator, inn.factor, x.shape[1])
    with torch.no_grad():
        signal = encoder(x)
        target = F.avg_pool2d(encoder(full_size_observation(y, operator)), inn.factor)
    return inn(signal, condition)[0], target


class INNTask:
    """``inn_pixel`` or ``inn_latent``: fit the coarse part to the observation (module docstring)."""

    def __init__(self, space: str, workdir: Path, sources: list[str], arch: str = "small", crop: int = 64,
                 min_scale: float = MIN_SCALE, vae_from: Path | None = None):
        if space not in LEVELS:
            raise UserError(f"INN space must be one of {', '.join(LEVELS)}, got {space!r}")
        self.space, self.sources, self.arch, self.crop, self.min_scale = space, sources, arch, crop, min_scale
        self.name = f"inn_{space}"
        self.encoder = Encoder(latent_autoencoder(workdir, vae_from)) if space == "latent" else None
        meta = autoencoder_meta(self.encoder.vae) if self.encoder is not None else {"latent_channels": 3, "downsample": 1}
        self.channels, self.latent_factor = meta["latent_channels"], meta["downsample"]
        multiple = math.lcm(self.latent_factor * 2 ** LEVELS[space], 4)  # the coarse grid and the x4 SR tasks
        if crop % multiple:
            raise UserError(f"--crop for {self.name} must be a multiple of {multiple}, got {crop}")
        self.device = torch.device("cpu")
        self.data = ""

    def build_model(self) -> WaveletINN:
        if self.arch == "tiny":
            return tiny_inn(self.channels, levels=LEVELS[self.space], seed=5)
        return identity_inn(self.space, self.channels)

    def prepare(self, device: torch.device, generator: torch.Generator) -> None:
        self.device = device
        pool = load_pool(self.sources)
        self.data = describe_pool(pool, self.sources)
        self.sampler = CropSampler(pool, self.crop, self.min_scale)
        self.operators = standard_operators(self.crop)
        if self.encoder is not None:
            self.encoder = self.encoder.to(device)

    def loss(self, model: WaveletINN, batch_size: int, generator: torch.Generator):
        x = self.sampler.batch(batch_size, generator).to(self.device)
        operator = self.operators[int(torch.randint(len(self.operators), (), generator=generator))]
        sigma = INN_SIGMA_MAX * float(torch.rand((), generator=generator))
        seed = int(torch.randint(2**31, (), generator=generator))
        coarse, target = coarse_and_target(model, x, operator, sigma, seed, self.encoder)
        return F.mse_loss(coarse, target), {}

    def finalize(self, network: WaveletINN, generator: torch.Generator) -> None:
        """Nothing to adjust."""

    def describe(self) -> dict[str, Any]:
        tasks = sorted({task for task, _ in STANDARD_DEGRADATIONS})
        return {
            "data": self.data,
            "crop": self.crop,
            "min_scale": self.min_scale,
            "observations": f"{', '.join(tasks)} (inpaint: 4 random masks of 50%), sigma ~ U[0, {INN_SIGMA_MAX}]",
            **({} if self.encoder is None else {"vae": weights_digest(self.encoder.vae)}),
        }
