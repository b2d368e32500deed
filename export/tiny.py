"""Tiny random-initialised instances of every architecture, for tests and smoke runs.

Each factory is seeded and deterministic (the global torch RNG is left untouched),
builds in well under a second and stays below about a million parameters. The
architectures are diffusers' own classes (and the project's :class:`WaveletINN`);
only their sizes are small.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel, UNet2DModel, VQModel

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


def tiny_autoencoder_kl(
    down: int = 8, latent_channels: int = 4, seed: int = 0, scaling_factor: float = 0.18215
) -> AutoencoderKL:
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
            scaling_factor=scaling_factor,
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


# Stable Diffusion folders at small widths, with the public checkpoints' classes and config keys.
TEXT_WIDTH = 32
_CLIP_VOCAB = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}


def tiny_text_encoder(seed: int = 0):
    """A CLIP tokenizer on a six-token vocabulary (no merges) and a two-layer ``CLIPTextModel`` of
    width :data:`TEXT_WIDTH` (transformers, the ``sd`` extra)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps(_CLIP_VOCAB))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    config = CLIPTextConfig(
        vocab_size=len(_CLIP_VOCAB), hidden_size=TEXT_WIDTH, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    return tokenizer, _seeded(seed, lambda: CLIPTextModel(config))


def tiny_condition_unet(in_channels: int = 4, num_class_embeds: int | None = None, seed: int = 0) -> UNet2DConditionModel:
    """Stable Diffusion's ``UNet2DConditionModel`` layout (cross-attention blocks, linear projections;
    the x4 upscaler's with ``num_class_embeds``) at small widths, 4 latent channels out."""
    return _seeded(
        seed,
        lambda: UNet2DConditionModel(
            in_channels=in_channels, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_WIDTH, norm_num_groups=8,
            attention_head_dim=(2, 4), use_linear_projection=True, num_class_embeds=num_class_embeds,
        ),
    )


def tiny_sd_folder(folder: Path, version: str = "1", seed: int = 0) -> Path:
    """A ``StableDiffusionPipeline`` folder: version ``"1"`` (SD 1.x: PNDMScheduler config, ε
    prediction) or ``"2-v"`` (SD 2.x 768: DDIMScheduler, v prediction); f8 VAE with scaling 0.18215."""
    from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline

    schedule = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "set_alpha_to_one": False,
                "steps_offset": 1}
    schedulers = {
        "1": lambda: PNDMScheduler(**schedule, skip_prk_steps=True),
        "2-v": lambda: DDIMScheduler(**schedule, clip_sample=False, prediction_type="v_prediction"),
    }
    if version not in schedulers:
        raise ValueError(f"version must be one of {', '.join(schedulers)}, not {version}")
    tokenizer, text_encoder = tiny_text_encoder(seed)
    vae = tiny_autoencoder_kl(8, 4, seed + 1)
    StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=tiny_condition_unet(4, seed=seed + 2),
        scheduler=schedulers[version](), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


def tiny_sd_upscaler_folder(folder: Path, seed: int = 0) -> Path:
    """A ``StableDiffusionUpscalePipeline`` folder (x4 upscaler layout): f4 VAE with scaling 0.08333,
    a UNet on 4 + 3 channels with 1000 class embeddings, DDPM ``low_res_scheduler``, DDIM with v
    prediction, ``max_noise_level`` 350."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline

    tokenizer, text_encoder = tiny_text_encoder(seed)
    vae = tiny_autoencoder_kl(4, 4, seed + 1, scaling_factor=0.08333)
    StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=tiny_condition_unet(7, 1000, seed + 2),
        low_res_scheduler=DDPMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction"),
        max_noise_level=350,
    ).save_pretrained(folder)
    return folder


def tiny_guided_diffusion_checkpoint(path: Path, seed: int = 0) -> Path:
    """An OpenAI guided-diffusion UNet state dict (``256x256_diffusion_uncond.pt`` layout: the real
    weight names, learned variance with 6 outputs, ``resblock_updown``, scale-shift norm, 64-channel
    heads) at widths 32/64/128 with attention on the last two levels (one and two heads), saved to ``path``."""
    from .guided_diffusion import from_diffusers, unet_layout

    layout = unet_layout(3, 6, [32, 128], layers_per_block=1, attention=[False, True])
    torch.save(from_diffusers(_seeded(seed, lambda: UNet2DModel(**layout))), path)
    return path
