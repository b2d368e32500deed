"""Component and method export to ONNX.

Graphs with dynamic batch, height and width go through torch's TorchScript-based
exporter (``dynamo=False``): it traces the diffusers models at a fraction of the dynamo
exporter's cost, and ``dynamic_axes`` keeps every ``B``/``H``/``W`` axis symbolic, so the
graph runs at any size divisible by ``spec.multiple``. The decoder VJP (static shapes)
goes through :mod:`.vjp`. Every graph is then cleaned (:func:`.graph.clean`: constant
folding with onnx-graphsurgeon), saved as a single file with embedded weights and
checked with ``onnx.checker``; its spec is stored in the file's metadata.

``precision="fp16"`` exports :class:`.precision.HalfPrecision`: fp16 weights and
activations, normalisations, the VQ quantiser, softmax and timestep embeddings in fp32,
float32 inputs and outputs.
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from trt_restore.errors import UserError
from trt_restore.methods import components_for
from trt_restore.specs import CONTEXT_SYMBOL, CONTEXT_TOKENS, ComponentSpec, TensorSpec

from . import graph
from .components import Component
from .model_sets import ModelSet
from .precision import HalfPrecision
from .vjp import vjp_to_onnx

PRECISIONS = ("fp32", "fp16")
MIN_OPSET = 17
# Dynamic graphs are traced at batch 2, so no axis that should stay symbolic has size 1.
TRACE_BATCH = 2


def _torchscript_to_onnx(module: Component, inputs: tuple[torch.Tensor, ...], opset: int) -> onnx.ModelProto:
    spec = module.spec
    dynamic_axes = {t.name: t.dynamic_axes for t in (*spec.inputs, *spec.outputs)}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks and the exporter's deprecation notice
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            module,
            inputs,
            str(path),
            dynamo=False,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
        )
        return onnx.load_model(str(path))


def _static(spec: ComponentSpec, sizes: dict[str, int]) -> ComponentSpec:
    """``spec`` with every symbolic dimension resolved for ``sizes``."""

    def resolve(tensors: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t.name, t.resolve(sizes), t.dtype) for t in tensors)

    return dataclasses.replace(spec, inputs=resolve(spec.inputs), outputs=resolve(spec.outputs))


def export_component(
    wrapper: Component,
    path: str | Path,
    *,
    precision: str = "fp32",
    opset: int = MIN_OPSET,
    example_size: tuple[int, int] = (64, 64),
    batch: int = 1,
) -> ComponentSpec:
    """Export ``wrapper`` to ``path`` and return the spec of the written graph.

    Dynamic graphs are traced at ``example_size`` and keep B/H/W symbolic. A component
    with static shapes (``decoder_vjp``) is exported for exactly ``batch × example_size``,
    and its returned spec has those shapes.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    if opset < MIN_OPSET:
        raise UserError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    height, width = example_size
    module = HalfPrecision(wrapper) if precision == "fp16" else wrapper
    spec = wrapper.spec
    if spec.meta.get("static_shapes"):
        inputs = wrapper.example_inputs(batch, height, width)
        spec = _static(spec, {"B": batch, "H": height, "W": width, CONTEXT_SYMBOL: CONTEXT_TOKENS})
        model = vjp_to_onnx(module, inputs, [t.name for t in spec.inputs], [t.name for t in spec.outputs], opset)
    else:
        inputs = wrapper.example_inputs(TRACE_BATCH, height, width)
        model = _torchscript_to_onnx(module, inputs, opset)
    model = graph.clean(model)
    written_opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    spec = dataclasses.replace(spec, meta={**spec.meta, "precision": precision, "opset": written_opset})
    graph.save(model, Path(path), spec)
    return spec


def export_method(
    method: str,
    model_set: ModelSet,
    out_dir: str | Path,
    *,
    precision: str = "fp32",
    example_size: tuple[int, int] = (64, 64),
    opset: int = MIN_OPSET,
) -> dict[str, tuple[Path, ComponentSpec]]:
    """Export every component ``method`` needs to ``out_dir/<component>.onnx``."""
    out_dir = Path(out_dir)
    exported = {}
    for component in components_for(method):
        path = out_dir / f"{component}.onnx"
        spec = export_component(
            model_set.wrapper(component, method, group_stats=True), path, precision=precision, opset=opset, example_size=example_size
        )
        exported[component] = (path, spec)
    return exported
