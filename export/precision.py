"""Half precision for export: an fp16 copy of a component with its fragile parts kept in fp32.

Kept in fp32 (inputs cast up, outputs cast back):

- normalisations (``GroupNorm``, ``LayerNorm``): their variance overflows or loses all
  precision in fp16, the classic NaN source;
- the VQ quantiser: the nearest-code search is a distance comparison, and a code flipped
  by rounding changes the decoded image far more than rounding the code itself;
- attention scores and softmax (diffusers' ``upcast_attention`` / ``upcast_softmax``, which
  only the plain ``AttnProcessor`` honours, so attention is switched to it, or to the explicit
  form of :class:`.attention_context.WholeImageAttention`, which computes them in float32);
- the timestep embedding: timesteps stay float32 at the boundary and diffusers computes
  the sinusoidal embedding in float32 before casting to the model dtype.

Everything else (convolutions, matmuls, activations) runs in fp16. The graph traced from
the result is strongly typed: every tensor has a fixed type and the casts are explicit.
"""

from __future__ import annotations

import copy

import torch
from diffusers.models.autoencoders.vae import VectorQuantizer
from torch import nn

from trt_restore.specs import ComponentSpec

from .attention_context import explicit_attention
from .components import Component

FP32_MODULES: tuple[type[nn.Module], ...] = (nn.GroupNorm, nn.LayerNorm, VectorQuantizer)


def _cast(value, dtype: torch.dtype):
    """``value`` with every floating-point tensor in it (nested tuples and lists too) cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


class Fp32Island(nn.Module):
    """Runs ``module`` in fp32 inside a half-precision model, returning the caller's dtype."""

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.float16):
        super().__init__()
        self.module = module.float()
        self.dtype = dtype

    def forward(self, *args, **kwargs):
        args, kwargs = _cast(args, torch.float32), {k: _cast(v, torch.float32) for k, v in kwargs.items()}
        return _cast(self.module(*args, **kwargs), self.dtype)


def _wrap_fp32_modules(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, FP32_MODULES):
            setattr(module, name, Fp32Island(child))
        else:
            _wrap_fp32_modules(child)


def half_precision(module: nn.Module, fused_attention: bool = False) -> nn.Module:
    """An fp16 deep copy of ``module`` with :data:`FP32_MODULES` and attention softmax in fp32.

    ``fused_attention`` keeps the module's attention processors (torch's fused
    scaled-dot-product attention, whose kernels accumulate the softmax in fp32 without
    materialising the score matrix): for running under torch; an exported graph needs the
    explicit, upcast form.
    """
    model = copy.deepcopy(module).half()
    if not fused_attention:
        explicit_attention(model)
    _wrap_fp32_modules(model)
    return model


class HalfPrecision(Component):
    """A component run in fp16 with float32 at the boundary: inputs other than
    ``fp32_inputs`` are cast to fp16 on entry, every output back to float32
    (``fused_attention``: see :func:`half_precision`)."""

    def __init__(self, component: Component, fused_attention: bool = False):
        super().__init__()
        self.inner = half_precision(component, fused_attention)
        self.spec: ComponentSpec = component.spec
        self.fp32_inputs = component.fp32_inputs
        self.unit_range_inputs = component.unit_range_inputs

    def forward(self, *inputs: torch.Tensor):
        names = [spec.name for spec in self.spec.inputs]
        cast = [x if name in self.fp32_inputs else x.to(torch.float16) for name, x in zip(names, inputs, strict=True)]
        return _cast(self.inner(*cast), torch.float32)
