"""The decoder VJP: the torch component and its forward-only ONNX graph against autograd."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from trt_restore.export.components import Decoder, DecoderVJP
from trt_restore.export.onnx_export import export_component
from trt_restore.export.tiny import tiny_autoencoder_kl, tiny_autoencoder_tiny, tiny_vq
from trt_restore.export.vjp import vjp_to_onnx

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # leave the cores to torch
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _autograd_vjp(decoder: nn.Module, latent: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
    _, pullback = torch.func.vjp(decoder, latent)
    return pullback(cotangent)[0].detach()


@pytest.mark.parametrize("factory", [tiny_autoencoder_kl, tiny_vq, tiny_autoencoder_tiny])
def test_vjp_component_is_the_decoder_pullback(factory):
    """For VQ the pullback is the straight-through one: the decoder without the quantiser."""
    vae = factory()
    vjp = DecoderVJP(vae)
    latent, cotangent = vjp.example_inputs(2, 32, 32)
    expected = _autograd_vjp(Decoder(vae, quantize=False), latent, cotangent)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(vjp(latent, cotangent), expected, rtol=0, atol=1e-5 * expected.abs().max().item())


# fp16: the same budget as the forward graphs (tests/test_export_onnx.py, ~40 unit
# roundoffs of the output scale); the backward pass chains as many rounded layers.
VJP_RTOL_OF_MAX = {"fp32": 1e-4, "fp16": 2e-2}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_decoder_vjp_onnx_matches_autograd(tmp_path, precision):
    """A KL decoder with one upsampling stage: GroupNorm, attention, upsampling and convolutions."""
    vae = tiny_autoencoder_kl(down=2)
    spec = export_component(DecoderVJP(vae), tmp_path / "vjp.onnx", precision=precision, example_size=(32, 48))
    assert [t.shape for t in spec.inputs] == [(1, 4, 16, 24), (1, 3, 32, 48)]
    assert spec.outputs[0].shape == (1, 4, 16, 24) and spec.meta["static_shapes"]
    model = onnx.load(str(tmp_path / "vjp.onnx"))
    assert all(d.dim_value > 0 for v in model.graph.input for d in v.type.tensor_type.shape.dim)
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "InstanceNormalization", "Softmax"} <= ops and "ConvTranspose" not in ops  # all strides are 1

    generator = torch.Generator().manual_seed(3)
    latent, cotangent = torch.randn(1, 4, 16, 24, generator=generator), torch.randn(1, 3, 32, 48, generator=generator)
    (onnx_grad,) = _session(tmp_path / "vjp.onnx").run(None, {"latent": latent.numpy(), "cotangent": cotangent.numpy()})
    expected = _autograd_vjp(Decoder(vae, quantize=False), latent, cotangent).numpy()
    assert np.abs(onnx_grad - expected).max() <= VJP_RTOL_OF_MAX[precision] * np.abs(expected).max()


class _BackwardOps(nn.Module):
    """VJP of convolutions with stride 2 on odd sizes, groups and dilation, a non-square kernel
    with stride 1 (whose adjoint is a flipped convolution), and nearest upsampling."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(4, 2, 3, 3, generator=generator))
        self.w2 = nn.Parameter(torch.randn(4, 2, 3, 3, generator=generator))
        self.w3 = nn.Parameter(torch.randn(3, 4, 3, 5, generator=generator))

    def function(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.w1, stride=2, padding=1)  # 9x7 -> 5x4: needs output padding on the way back
        y = F.interpolate(y, scale_factor=(2, 3), mode="nearest")
        y = F.conv2d(y, self.w2, padding=2, dilation=2, groups=2)
        return F.conv2d(y, self.w3, padding=(0, 1))

    def forward(self, x: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.function(x), x, cotangent)[0]


def test_backward_translations(tmp_path):
    module = _BackwardOps()
    x, cotangent = torch.randn(2, 2, 9, 7), torch.randn(2, 3, 8, 10)
    model = vjp_to_onnx(module, (x, cotangent), ["x", "cotangent"], ["grad"], opset=18)
    ops = {n.op_type for n in model.graph.node}
    assert {"ConvTranspose", "Conv", "AveragePool"} <= ops
    onnx.save(model, tmp_path / "ops.onnx")
    (grad,) = _session(tmp_path / "ops.onnx").run(None, {"x": x.numpy(), "cotangent": cotangent.numpy()})
    np.testing.assert_allclose(grad, _autograd_vjp(module.function, x, cotangent).numpy(), rtol=0, atol=1e-4)
