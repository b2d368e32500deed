"""The trainable components, in training order, and the default recipe of each
(minutes on one CPU thread, batch, learning rate, crop)."""

from __future__ import annotations

from dataclasses import dataclass

COMPONENTS = ("vae", "unet", "sr_unet", "pixel_unet", "inn_pixel", "inn_latent")
LATENT_COMPONENTS = ("unet", "sr_unet", "inn_latent")  # trained on the autoencoder's latents


@dataclass(frozen=True)
class Defaults:
    minutes: float
    batch_size: int
    lr: float
    crop: int


DEFAULTS: dict[str, Defaults] = {
    "vae": Defaults(minutes=50, batch_size=8, lr=8e-4, crop=48),
    "unet": Defaults(minutes=20, batch_size=16, lr=2e-4, crop=96),
    "sr_unet": Defaults(minutes=20, batch_size=16, lr=2e-4, crop=96),
    "pixel_unet": Defaults(minutes=25, batch_size=16, lr=2e-4, crop=32),
    "inn_pixel": Defaults(minutes=4, batch_size=16, lr=1e-3, crop=64),
    "inn_latent": Defaults(minutes=4, batch_size=16, lr=1e-3, crop=64),
}
