"""Training of the KL autoencoder behind the ``vae`` and ``sr_vae`` roles.

Loss on a batch of crops ``x ∈ [0, 1]`` with posterior ``q(z|x) = N(μ, σ²)`` and a
reparameterised sample ``z = μ + σ ε``:

    L = mean|x̂ − x| + w_edge · mean|∇x̂ − ∇x| + w_colour · mean|P x̂ − P x| + w_kl · mean KL(q(z|x) ‖ N(0, I)),
    x̂ = (D(z) + 1)/2

with ``∇`` the horizontal and vertical finite differences, ``P`` an 8×8 average pool (the
local mean colour: the term that keeps a colour cast from surviving training) and the KL
averaged over the latent elements. After training, the latent scale is set so that the scaled posterior
means have unit second moment, ``s = 1/√E[μ²]``, the space the latent UNets see.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from trt_restore.export.components import Encoder
from trt_restore.export.tiny import tiny_autoencoder_kl

from .data import MIN_SCALE, CropSampler, describe_pool, load_pool

SCALE_SAMPLES = 256  # crops used to measure the latent scale


COLOUR_POOL = 8  # window of the mean-colour term


def small_autoencoder(widths: tuple[int, int, int] = (64, 128, 128), latent_channels: int = 8) -> AutoencoderKL:
    """KL autoencoder, downsampling 4 (three blocks, two downsamplings)."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=widths,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=32,
    )


ARCHITECTURES = {"small": small_autoencoder, "tiny": lambda: tiny_autoencoder_kl(down=4, latent_channels=4, seed=0)}


def finite_differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical neighbour differences of (B, C, H, W) images."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


class AutoencoderTask:
    """The ``vae`` component: L1 + edge + a little KL on random crops (module docstring)."""

    name = "vae"

    def __init__(
        self,
        sources: list[str],
        arch: str = "small",
        crop: int = 64,
        kl_weight: float = 1e-5,
        edge_weight: float = 0.5,
        colour_weight: float = 1.0,
        min_scale: float = MIN_SCALE,
    ):
        self.sources, self.arch, self.crop = sources, arch, crop
        self.kl_weight, self.edge_weight, self.colour_weight, self.min_scale = kl_weight, edge_weight, colour_weight, min_scale
        self.sampler: CropSampler | None = None
        self.device = torch.device("cpu")
        self.data = ""

    def build_model(self) -> AutoencoderKL:
        return ARCHITECTURES[self.arch]()

    def prepare(self, device: torch.device, generator: torch.Generator) -> None:
        pool = load_pool(self.sources)
        self.data = describe_pool(pool, self.sources)
        self.sampler = CropSampler(pool, self.crop, self.min_scale)
        self.device = device

    def loss(self, model: AutoencoderKL, batch_size: int, generator: torch.Generator):
        x = self.sampler.batch(batch_size, generator).to(self.device)
        posterior = model.encode(2 * x - 1).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(self.device)
        reconstruction = (model.decode(posterior.mean + posterior.std * noise).sample + 1) / 2
        rec = (reconstruction - x).abs().mean()
        edge = sum((a - b).abs().mean() for a, b in zip(finite_differences(reconstruction), finite_differences(x)))
        colour = (F.avg_pool2d(reconstruction, COLOUR_POOL) - F.avg_pool2d(x, COLOUR_POOL)).abs().mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = rec + self.edge_weight * edge + self.colour_weight * colour + self.kl_weight * kl
        return loss, {"l1": rec.item(), "edge": edge.item(), "colour": colour.item(), "kl": kl.item()}

    @torch.no_grad()
    def finalize(self, network: AutoencoderKL, generator: torch.Generator) -> None:
        """Set ``scaling_factor = 1/√E[μ²]`` over :data:`SCALE_SAMPLES` crops."""
        network.register_to_config(scaling_factor=1.0)
        encoder = Encoder(network)
        second_moment = torch.zeros((), dtype=torch.float64)
        chunks = [min(32, SCALE_SAMPLES - start) for start in range(0, SCALE_SAMPLES, 32)]
        for size in chunks:
            latent = encoder(self.sampler.batch(size, generator).to(self.device))
            second_moment += latent.double().square().mean().cpu() * size / SCALE_SAMPLES
        network.register_to_config(scaling_factor=float(second_moment.rsqrt()))

    def describe(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "crop": self.crop,
            "min_scale": self.min_scale,
            "loss": f"L1 + {self.edge_weight:g}·edge L1 + {self.colour_weight:g}·mean-colour L1 + {self.kl_weight:g}·KL",
        }

