"""Training of the three denoising UNets: ``unet`` (latent), ``sr_unet`` (LDM-SR) and ``pixel_unet`` (DDRM).

All three are DDPMs. With ``x₀`` a clean sample, ``t ~ U{0, …, T−1}`` and
``ε ~ N(0, I)``:

    x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε,    L = mean ‖f_θ([x_t, c], t) − target‖²

with ``target = ε`` (ε-prediction) for ``unet`` and ``pixel_unet``, and
``target = v = √ᾱ_t ε − √(1 − ᾱ_t) x₀`` (v-prediction) for ``sr_unet``. Near ``t = T``,
``x_t`` is almost pure noise, so an ε-loss barely depends on ``x₀`` and a conditional
model never learns to read its condition there: sampled from pure noise, the first
ε-trained SR UNet kept the prior's mean colour whatever the low-resolution input was.
The v-loss weights ``x₀`` fully at ``t = T``.

where ``c`` is empty except for the SR UNet, conditioned by concatenation on
``c = 2y − 1``, the low-resolution observation ``y = A x + σ n`` (box or bicubic
downsampling by the autoencoder's factor, ``σ ~ U[0, σ_max]``, clamped to [0, 1]) at the
latent's size. ``x₀`` is the scaled latent ``E(x)`` of a crop for the latent UNets and the
crop in the DDPM range ``2x − 1`` for the pixel UNet. The noise schedules are those of
the public models each role stands in for (``model_sets``).

The latent UNets draw their crops from a fixed bank (``bank_size`` crops, encoded once:
the encoder stays out of the step). The pixel UNet cuts fresh crops every step unless a
bank size is given; on a GPU a bank keeps the CPU's crop cutting out of the step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from trt_restore.errors import UserError
from trt_restore.export.components import Encoder, autoencoder_meta
from trt_restore.export.model_sets import DDPM_SCHEDULE, LDM_SR_SCHEDULE, SD_SCHEDULE
from trt_restore.export.tiny import tiny_pixel_unet, tiny_sr_unet, tiny_unet
from trt_restore.operators import Degradation, make_operator
from trt_restore.pipelines.schedule import NoiseSchedule

from .data import MIN_SCALE, CropSampler, describe_pool, load_pool
from .loop import latent_autoencoder, weights_digest

SR_SIGMA_MAX = 0.05
BANK_SIZE = 2048  # encoded crops the latent UNets draw from


LATENT_CHANNELS = (64, 96, 128)
PIXEL_CHANNELS = (32, 64, 128)  # narrower at full resolution, where the pixel UNet spends its time


def small_unet(in_channels: int, out_channels: int, widths: tuple[int, int, int], attention: bool) -> UNet2DModel:
    """Three resolutions of ``widths`` channels, one ResNet layer each, attention at the middle one if asked."""
    middle = "Attn{}Block2D" if attention else "{}Block2D"
    return UNet2DModel(
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=widths,
        down_block_types=("DownBlock2D", middle.format("Down"), "DownBlock2D"),
        up_block_types=("UpBlock2D", middle.format("Up"), "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=32,
        attention_head_dim=32,
    )


def gaussian_noise(shape: torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn on ``device`` from a seed that the (CPU) ``generator`` draws, so a
    resumed run repeats it and no large tensor crosses from the CPU to a GPU at every step."""
    seed = int(torch.randint(2**62, (), generator=generator))
    return torch.randn(shape, generator=torch.Generator(device).manual_seed(seed), device=device)


class CropBank:
    """A fixed set of augmented crops (uint8 on the training device) and, when an encoder is
    given, their scaled latents ``E(x)``; drawn from in batches."""

    def __init__(self, images: torch.Tensor, latents: torch.Tensor | None = None):
        self.images, self.latents = images, latents

    @classmethod
    @torch.no_grad()
    def build(cls, sampler: CropSampler, count: int, generator: torch.Generator, device: torch.device,
              encoder: Encoder | None = None):
        encoder = encoder.to(device) if encoder is not None else None
        images, latents = [], []
        for start in range(0, count, 32):
            crops = sampler.batch(min(32, count - start), generator)
            images.append((crops * 255).round().to(torch.uint8).to(device))
            if encoder is not None:
                latents.append(encoder(images[-1].float() / 255))
        return cls(torch.cat(images), torch.cat(latents) if encoder is not None else None)

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``size`` random entries: images in [0, 1] and their latents (None without an encoder)."""
        index = torch.randint(len(self.images), (size,), generator=generator).to(self.images.device)
        return self.images[index].float() / 255, None if self.latents is None else self.latents[index]


class DiffusionTask:
    """Training of a ``UNet2DModel`` for its schedule's prediction type (module docstring);
    subclasses give x₀ and c."""

    name: str
    schedule_meta: dict

    def __init__(self, sources: list[str], arch: str, crop: int, min_scale: float = MIN_SCALE, bank_size: int | None = None):
        if bank_size is not None and bank_size < 1:
            raise UserError(f"--bank-size must be at least 1, got {bank_size}")
        self.sources, self.arch, self.crop, self.min_scale, self.bank_size = sources, arch, crop, min_scale, bank_size
        self.device = torch.device("cpu")
        self.alphas_cumprod = NoiseSchedule.from_config(self.schedule_meta).alphas_cumprod.float()
        self.data = ""

    def prepare(self, device: torch.device, generator: torch.Generator) -> None:
        self.device = device
        pool = load_pool(self.sources)
        self.data = describe_pool(pool, self.sources)
        self.sampler = CropSampler(pool, self.crop, self.min_scale)
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        self.bank = None if self.bank_size is None else CropBank.build(self.sampler, self.bank_size, generator, device, self.bank_encoder())

    def bank_encoder(self) -> Encoder | None:
        """The encoder whose latents the bank keeps beside its crops (None: crops only)."""
        return None

    def clean_batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x₀, c)``: clean samples and the conditioning channels (or None)."""
        raise NotImplementedError

    def loss(self, model: UNet2DModel, batch_size: int, generator: torch.Generator):
        x0, condition = self.clean_batch(batch_size, generator)
        steps = torch.randint(len(self.alphas_cumprod), (batch_size,), generator=generator).to(self.device)
        noise = gaussian_noise(x0.shape, generator, self.device)
        alpha = self.alphas_cumprod[steps].view(-1, 1, 1, 1)
        noisy = alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise
        inputs = noisy if condition is None else torch.cat((noisy, condition), dim=1)
        target = noise
        if self.schedule_meta["prediction_type"] == "v_prediction":
            target = alpha.sqrt() * noise - (1 - alpha).sqrt() * x0
        loss = F.mse_loss(model(inputs, steps.float()).sample, target)
        return loss, {}

    def finalize(self, network: UNet2DModel, generator: torch.Generator) -> None:
        """Nothing to adjust: the schedule travels with the model set."""

    def describe(self) -> dict[str, Any]:
        bank = {} if self.bank_size is None else {"bank": self.bank_size}
        return {"data": self.data, "crop": self.crop, "min_scale": self.min_scale, **bank, "schedule": self.schedule_meta}


class PixelDiffusionTask(DiffusionTask):
    """``pixel_unet``: a DDPM on crops in [−1, 1] (DDPM's linear schedule)."""

    name = "pixel_unet"
    schedule_meta = DDPM_SCHEDULE

    def build_model(self) -> UNet2DModel:
        return small_unet(3, 3, PIXEL_CHANNELS, attention=False) if self.arch == "small" else tiny_pixel_unet(3, seed=4)

    def clean_batch(self, size, generator):
        crops = self.sampler.batch(size, generator).to(self.device) if self.bank is None else self.bank.batch(size, generator)[0]
        return 2 * crops - 1, None


class _LatentTask(DiffusionTask):
    """Shared by the latent UNets: a bank of crops encoded by :func:`~.loop.latent_autoencoder`, whose
    :func:`~.loop.weights_digest` the facts keep (a package checks that it ships that autoencoder)."""

    def __init__(self, workdir: Path, sources: list[str], arch: str, crop: int, bank_size: int = BANK_SIZE,
                 min_scale: float = MIN_SCALE, vae_from: Path | None = None):
        self.vae = latent_autoencoder(workdir, vae_from)
        meta = autoencoder_meta(self.vae)
        self.latent_channels, self.factor = meta["latent_channels"], meta["downsample"]
        if crop % self.factor:
            raise UserError(f"--crop must be a multiple of the autoencoder's factor {self.factor}, got {crop}")
        super().__init__(sources, arch, crop, min_scale, bank_size)

    def bank_encoder(self) -> Encoder:
        return Encoder(self.vae)

    def describe(self):
        return {**super().describe(), "latent_size": self.crop // self.factor, "vae": weights_digest(self.vae)}


class LatentDiffusionTask(_LatentTask):
    """``unet``: a DDPM on the scaled latents of the ``vae`` (Stable Diffusion's schedule)."""

    name = "unet"
    schedule_meta = {**SD_SCHEDULE, "timestep_spacing": "trailing"}  # see SRDiffusionTask

    def build_model(self) -> UNet2DModel:
        c = self.latent_channels
        return small_unet(c, c, LATENT_CHANNELS, attention=True) if self.arch == "small" else tiny_unet(c, c, seed=1)

    def clean_batch(self, size, generator):
        return self.bank.batch(size, generator)[1], None


class SRDiffusionTask(_LatentTask):
    """``sr_unet``: LDM-SR on ``concat(z_t, 2y − 1)`` with ``y`` the crop downsampled by the VAE's factor."""

    name = "sr_unet"
    # Trailing timesteps: a few-step DDIM run starts at t = T − 1, as it should from pure noise
    # (there the v-prediction is the network's regression of x₀ from y alone); with leading ones
    # 2 steps start at t = 500.
    schedule_meta = {**LDM_SR_SCHEDULE, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}

    def build_model(self) -> UNet2DModel:
        c = self.latent_channels
        return small_unet(c + 3, c, LATENT_CHANNELS, attention=True) if self.arch == "small" else tiny_sr_unet(c, seed=3)

    def prepare(self, device, generator):
        super().prepare(device, generator)
        size = (self.crop, self.crop)
        self.operators = [make_operator(task, size=size, channels=3) for task in self.tasks]

    @property
    def tasks(self) -> tuple[str, str]:
        return (f"sr{self.factor}", f"sr{self.factor}-bicubic")

    def clean_batch(self, size, generator):
        images, latents = self.bank.batch(size, generator)
        operator = self.operators[int(torch.randint(len(self.operators), (), generator=generator))]
        sigma = SR_SIGMA_MAX * float(torch.rand((), generator=generator))
        seed = int(torch.randint(2**31, (), generator=generator))
        low_res = Degradation(operator, sigma).observe(images, seed).clamp(0, 1)
        return latents, 2 * low_res - 1

    def describe(self):
        return {**super().describe(), "observations": f"{' / '.join(self.tasks)}, sigma ~ U[0, {SR_SIGMA_MAX}]"}
