"""Check a built engine against a reference engine (onnxruntime or torch) on random inputs.

Any two :class:`~trt_restore.runtime.engine.Engine` objects of the same component
compare: a TensorRT engine against onnxruntime on the same ONNX graph after a build,
onnxruntime against torch after an export.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from trt_restore.runtime.engine import Engine, torch_dtype
from trt_restore.specs import ComponentSpec


def random_inputs(spec: ComponentSpec, sizes: Mapping[str, int], *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniform [0, 1) floating inputs (integers in [0, 1000)) of the spec's shapes at ``sizes``, on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    for tensor in spec.inputs:
        shape, dtype = tensor.resolve(sizes), torch_dtype(tensor.dtype)
        if dtype.is_floating_point:
            inputs[tensor.name] = torch.rand(shape, generator=generator).to(dtype)
        else:
            inputs[tensor.name] = torch.randint(0, 1000, shape, generator=generator).to(dtype)
    return inputs


def compare_engines(
    reference: Engine, candidate: Engine, sizes: Sequence[Mapping[str, int]], *, seed: int = 0
) -> dict[str, float]:
    """Largest relative error per output, ``max |candidate − reference| / max |reference|``, over ``sizes``.

    An output whose shape differs from the reference's counts as an infinite error.
    """
    errors = {tensor.name: 0.0 for tensor in reference.spec.outputs}
    for index, size in enumerate(sizes):
        inputs = random_inputs(reference.spec, size, seed=seed + index)
        expected, actual = reference(**inputs), candidate(**inputs)
        for name in errors:
            want, got = expected[name].float().cpu(), actual[name].float().cpu()
            if got.shape != want.shape:
                errors[name] = float("inf")
                continue
            scale = want.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
            errors[name] = max(errors[name], ((got - want).abs().max() / scale).item())
    return errors
