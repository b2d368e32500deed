"""The restoration methods and the network components each one runs on.

This table is the single source of truth shared by export, the bundle builder
and the pipelines.
"""

from __future__ import annotations

from .errors import UserError

COMPONENTS = (
    "encoder",
    "decoder",
    "decoder_vjp",
    "unet",
    "sr_unet",
    "pixel_unet",
    "inn_forward",
    "inn_inverse",
)

METHOD_COMPONENTS: dict[str, tuple[str, ...]] = {
    "reld": ("encoder", "decoder", "decoder_vjp", "unet"),
    "ddrm": ("pixel_unet",),
    "ldm-sr": ("decoder", "sr_unet"),
    "ddrm-ldm": ("encoder", "decoder", "sr_unet"),
    "indigo-pixel": ("encoder", "decoder", "unet", "inn_forward", "inn_inverse"),
    "indigo-latent": ("encoder", "decoder", "unet", "inn_forward", "inn_inverse"),
}

METHODS = tuple(METHOD_COMPONENTS)
DEFAULT_METHOD = "reld"
NOISE_SOURCES = ("host", "device")  # where the sampling noise is drawn (pipelines.base.Noise)


def components_for(method: str) -> tuple[str, ...]:
    """Components that ``method`` needs, or a clear error for an unknown method."""
    try:
        return METHOD_COMPONENTS[method]
    except KeyError:
        raise UserError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}") from None
