"""The restoration methods and the network components each one runs on, and the backends and noise sources.

These tables are the single source of truth shared by export, the bundle builder,
the pipelines and the command line.
"""

from __future__ import annotations

from typing import Literal, get_args

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
NoiseSource = Literal["host", "device"]
"""Where the sampling noise is drawn (:class:`~trt_restore.pipelines.base.Noise`)."""
NOISE_SOURCES: tuple[NoiseSource, ...] = get_args(NoiseSource)
Backend = Literal["auto", "torch", "onnxruntime", "openvino", "tensorrt"]
"""What runs the networks (:func:`~trt_restore.api.load_models`); ``auto``: a bundle's backend, else torch."""
BACKENDS: tuple[Backend, ...] = get_args(Backend)
BundleBackend = Literal["tensorrt", "onnxruntime", "openvino"]
"""What a ``.plan`` bundle holds: TensorRT engines, or ONNX graphs for onnxruntime or OpenVINO."""
BUNDLE_BACKENDS: tuple[BundleBackend, ...] = get_args(BundleBackend)
InferencePrecision = Literal["auto", "fp32", "bf16"]
"""The arithmetic of the openvino backend: ``auto`` is bf16 where the CPU has native bf16 (AVX512-BF16, AMX), else fp32."""
INFERENCE_PRECISIONS: tuple[InferencePrecision, ...] = get_args(InferencePrecision)


def components_for(method: str) -> tuple[str, ...]:
    """Components that ``method`` needs, or a clear error for an unknown method."""
    try:
        return METHOD_COMPONENTS[method]
    except KeyError:
        raise UserError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}") from None
