"""The decoder's vector-Jacobian product as a forward-only ONNX graph.

torch's ONNX exporter cannot export a backward pass directly: it has no translation for
``aten.convolution_backward``, ``aten.upsample_nearest2d_backward`` or the fused
attention backward. The recipe:

1. switch attention to diffusers' plain ``AttnProcessor`` or the explicit form of
   :class:`.attention_context.WholeImageAttention` (matmul + softmax, whose backward
   decomposes into ordinary ops);
2. trace the component's forward, which calls ``torch.autograd.grad``, with
   ``make_fx`` and the core ATen decompositions, giving a forward-only graph of ATen
   ops in which the backward ops appear explicitly;
3. export that graph with the dynamo exporter and two extra translations:
   ``convolution_backward`` (input gradient) becomes ``ConvTranspose`` with the same
   weight (a ``Conv`` with the flipped, channel-swapped weight where the stride is 1), and ``upsample_nearest2d_backward`` by an integer factor ``k`` becomes
   ``AveragePool(k) · k²`` (the sum over each ``k × k`` block).

The trace fixes every shape, so the graph is exported once per batch and tile size.
"""

from __future__ import annotations

import copy
import logging
import warnings

import onnx
import torch
from onnxscript import opset18 as op
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import make_fx
from trt_restore.errors import UserError

from .attention_context import explicit_attention


def _convolution_backward(
    grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask
):
    """Input gradient of ``y = conv(x, W)``: ``ConvTranspose(∂y, W)`` with the output padding
    that restores ``x``'s size. The weight and bias gradients are never requested (the
    parameters are constants) and are returned as zero constants."""
    if transposed:
        raise UserError("the decoder VJP export does not support transposed convolutions in the decoder")
    zero = op.Constant(value_float=0.0)
    if not output_mask[0]:
        return zero, zero, zero
    kernel, in_size, out_size = weight.shape[2:], input.shape[2:], grad_output.shape[2:]
    if all(s == 1 for s in stride) and groups == 1:
        # Stride 1: the adjoint is itself a convolution, with the kernel flipped and its
        # channel axes swapped. Conv is much faster than ConvTranspose in onnxruntime (its
        # blocked NCHWc kernels) and the flip folds away on the constant weight.
        flipped = op.Slice(
            op.Transpose(weight, perm=[1, 0, 2, 3]),
            op.Constant(value_ints=[-1, -1]),
            op.Constant(value_ints=[-(2**63), -(2**63)]),
            op.Constant(value_ints=[2, 3]),
            op.Constant(value_ints=[-1, -1]),
        )
        pads = [dilation[i] * (int(kernel[i]) - 1) - padding[i] for i in range(len(stride))]
        grad_input = op.Conv(grad_output, flipped, strides=list(stride), pads=pads * 2, dilations=list(dilation))
        return grad_input, zero, zero
    extra = [
        int(in_size[i]) - ((int(out_size[i]) - 1) * stride[i] - 2 * padding[i] + dilation[i] * (int(kernel[i]) - 1) + 1)
        for i in range(len(stride))
    ]
    grad_input = op.ConvTranspose(
        grad_output,
        weight,
        strides=list(stride),
        pads=list(padding) * 2,
        dilations=list(dilation),
        group=groups,
        output_padding=extra,
    )
    return grad_input, zero, zero


def _upsample_nearest2d_backward(grad_output, output_size, input_size, scales_h=None, scales_w=None):
    """Input gradient of nearest upsampling by integer factors ``(kh, kw)``: the block sums,
    ``AveragePool(kh × kw) · kh·kw``."""
    kh, kw = output_size[0] // input_size[2], output_size[1] // input_size[3]
    if kh * input_size[2] != output_size[0] or kw * input_size[3] != output_size[1]:
        raise UserError(
            f"the decoder VJP export needs integer upsampling factors, got {input_size[2:]} -> {output_size}"
        )
    pooled = op.AveragePool(grad_output, kernel_shape=[kh, kw], strides=[kh, kw])
    return op.Mul(pooled, op.CastLike(op.Constant(value_float=float(kh * kw)), pooled))


# The dynamo exporter's own operator set; converting its graphs down to 17 fails on GroupNorm.
DYNAMO_MIN_OPSET = 18

BACKWARD_TRANSLATIONS = {
    torch.ops.aten.convolution_backward.default: _convolution_backward,
    torch.ops.aten.upsample_nearest2d_backward.default: _upsample_nearest2d_backward,
}


def vjp_to_onnx(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    opset: int,
) -> onnx.ModelProto:
    """Trace ``module`` (whose forward takes a VJP with ``torch.autograd.grad``) at the
    shapes of ``inputs`` into a forward-only ONNX graph (opset at least 18)."""
    module = copy.deepcopy(module).eval().requires_grad_(False)
    explicit_attention(module)
    traced = make_fx(module, decomposition_table=core_aten_decompositions())(*inputs)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # notes about optional torchvision ops
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                traced,
                inputs,
                dynamo=True,
                input_names=input_names,
                output_names=output_names,
                opset_version=max(opset, DYNAMO_MIN_OPSET),
                custom_translation_table=BACKWARD_TRANSLATIONS,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    return program.model_proto
