"""Tiny random-initialised instances of every architecture, for tests and smoke runs.

Each factory is seeded and deterministic (the global torch RNG is left untouched),
builds in well under a second and stays below about a million parameters. The
architectures are diffusers' own classes (and the project's :class:`WaveletINN`);
only their sizes are small.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DModel, VQModel

from .inn import WaveletINN

_M = TypeVar("_M", bound=torch.nn.Module)


def _seeded(seed: int, build: Callable[[], _M]) -> _M:
    """``build()`` under ``torch.manual_seed(seed)`` without disturbing the caller's RNG, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def _num_blocks(down: int) -> int:
    """Blocks of a diffusers VAE with downsampling factor ``down`` (one fewer downsamplers than blocks)."""
    if down not in (2, 4, 8, 16):
        raise ValueError(f"downsampling factor must be 2, 4, 8 or 16, got {down}")
    return down.bit_length()


def tiny_autoencoder_kl(down: int = 8, latent_channels: int = 4, seed: int = 0) -> AutoencoderKL:
    """A KL autoencoder (Stable Diffusion layout, mid-block attention) with downsampling factor ``down``."""
    blocks = _num_blocks(down)
    return _seeded(
        seed,
        lambda: AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks,
            block_out_channels=(16, 32, 32, 32, 32)[:blocks],
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=8,
        ),
    )


def tiny_vq(down: int = 4, latent_channels: int = 3, num_vq_embeddings: int = 64, seed: int = 0) -> VQModel:
    """A VQ autoencoder (LDM-SR layout: f4, 3 latent channels) with ``num_vq_embeddings`` codes."""
    blocks = _num_blocks(down)
    return _seeded(
        seed,
        lambda: VQModel(
            down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks,
            block_out_channels=(16, 32, 32, 32, 32)[:blocks],
            layers_per_block=1,
            latent_channels=latent_channels,
            vq_embed_dim=latent_channels,
            num_vq_embeddings=num_vq_embeddings,
            norm_num_groups=8,
        ),
    )


def tiny_autoencoder_tiny(down: int = 8, latent_channels: int = 4, seed: int = 0) -> AutoencoderTiny:
    """A TAESD-style ``AutoencoderTiny`` with downsampling factor ``down``."""
    blocks = _num_blocks(down)
    return _seeded(
        seed,
        lambda: AutoencoderTiny(
            encoder_block_out_channels=(16,) * blocks,
            decoder_block_out_channels=(16,) * blocks,
            num_encoder_blocks=(1,) * blocks,
            num_decoder_blocks=(1,) * blocks,
            latent_channels=latent_channels,
        ),
    )


def _tiny_unet2d(in_channels: int, out_channels: int, seed: int) -> UNet2DModel:
    """Three resolutions (so inputs must be multiples of 4), attention at the middle one."""
    return _seeded(
        seed,
        lambda: UNet2DModel(
            in_channels=in_channels,
            out_channels=out_channels,
            block_out_channels=(16, 32, 32),
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            layers_per_block=1,
            norm_num_groups=8,
            attention_head_dim=8,
        ),
    )


def tiny_unet(in_ch: int = 4, out_ch: int = 4, seed: int = 0) -> UNet2DModel:
    """A latent denoiser: ``UNet2DModel`` from ``in_ch`` latent channels to ``out_ch`` outputs."""
    return _tiny_unet2d(in_ch, out_ch, seed)


def tiny_sr_unet(latent_channels: int = 3, image_channels: int = 3, seed: int = 0) -> UNet2DModel:
    """An LDM-SR UNet on ``concat(latent, LR image)``: latent plus image channels in, latent channels out."""
    return _tiny_unet2d(latent_channels + image_channels, latent_channels, seed)


def tiny_pixel_unet(channels: int = 3, seed: int = 0) -> UNet2DModel:
    """A pixel-space DDPM UNet (google/ddpm-* layout), ``channels`` in and out."""
    return _tiny_unet2d(channels, channels, seed)


def tiny_inn(channels: int = 3, levels: int = 2, seed: int = 0) -> WaveletINN:
    """A wavelet INN whose couplings are random (not identity) so that every path is exercised."""
    return _seeded(
        seed,
        lambda: WaveletINN(channels=channels, levels=levels, steps=2, hidden=16, identity_init=False),
    )
