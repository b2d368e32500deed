"""onnxruntime's fused attention replaces exactly the exported attention, and nothing else."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from trt_restore.export.components import Decoder, DecoderVJP, Encoder
from trt_restore.export.onnx_export import export_component
from trt_restore.export.tiny import tiny_autoencoder_kl
from trt_restore.runtime.onnx_fusion import fuse_attention

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)[0]


def _fused_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    return fused, fuse_attention(fused)


class _CrossAttention(nn.Module):
    """diffusers-style attention: project, split heads, SDPA, merge heads; keys from another sequence."""

    def __init__(self, heads: int, scale: float | None):
        super().__init__()
        self.heads, self.scale = heads, scale
        self.to_q, self.to_k, self.to_v = (
            nn.Linear(8, 16),
            nn.Linear(6, 16),
            nn.Linear(6, 16),
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], -1, self.heads, 16 // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.to_q(x)),
            split(self.to_k(context)),
            split(self.to_v(context)),
            scale=self.scale,
        )
        return out.transpose(1, 2).reshape(x.shape[0], -1, 16)


def _export(
    module: nn.Module, tmp_path, feeds: dict[str, torch.Tensor]
) -> onnx.ModelProto:
    path = tmp_path / "attention.onnx"
    torch.onnx.export(
        module,
        tuple(feeds.values()),
        str(path),
        dynamo=False,
        input_names=list(feeds),
        opset_version=17,
    )
    return onnx.load(str(path))


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_default_scale_attention_fuses_to_the_same_function(tmp_path, heads):
    torch.manual_seed(0)
    feeds = {"x": torch.randn(2, 10, 8), "context": torch.randn(2, 7, 6)}
    model = _export(_CrossAttention(heads, scale=None), tmp_path, feeds)
    fused, count = _fused_copy(model)
    assert count == 1
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("MultiHeadAttention") == 1 and "Softmax" not in ops
    assert (
        next(n for n in fused.graph.node if n.op_type == "MultiHeadAttention")
        .attribute[0]
        .i
        == heads
    )
    arrays = {name: t.numpy() for name, t in feeds.items()}
    np.testing.assert_allclose(
        _run(fused, arrays), _run(model, arrays), rtol=0, atol=1e-5
    )


def test_a_constant_scale_fuses_with_that_scale(tmp_path):
    feeds = {"x": torch.randn(1, 5, 8), "context": torch.randn(1, 5, 6)}
    model = _export(_CrossAttention(2, scale=0.3), tmp_path, feeds)
    fused, count = _fused_copy(model)
    assert count == 1
    node = next(n for n in fused.graph.node if n.op_type == "MultiHeadAttention")
    assert {a.name: a.f for a in node.attribute if a.name == "scale"} == pytest.approx({"scale": 0.3})
    arrays = {name: t.numpy() for name, t in feeds.items()}
    np.testing.assert_allclose(_run(fused, arrays), _run(model, arrays), rtol=0, atol=1e-5)


def test_whole_image_attention_fuses_with_its_offsets(tmp_path):
    """The exported form of a tiled attention block (one more query/key dimension carrying the
    context's logit offsets) fuses, and computes what the unfused graph does with real offsets."""
    from trt_restore.export.model_sets import load_model_set

    wrapper = load_model_set("tiny").wrapper("decoder", "reld", group_stats=True)
    export_component(wrapper, tmp_path / "d.onnx", example_size=(64, 64))
    model = onnx.load(str(tmp_path / "d.onnx"))
    fused, count = _fused_copy(model)
    assert count == 1
    g = torch.Generator().manual_seed(0)
    feeds = {t.name: np.asarray(x) for t, x in zip(wrapper.spec.inputs, wrapper.example_inputs(1, 64, 48))}
    tokens = [t.name for t in wrapper.spec.inputs if t.name.startswith("attention_context")][0]
    offsets = tokens.replace("context", "bias")
    feeds[tokens] = torch.randn(1, feeds[tokens].shape[1], 30, generator=g).numpy()
    bias = np.full((1, 30), -1e4, np.float32)
    bias[:, :20] = np.log(np.arange(20) % 4 + 1.0)  # 20 context tokens standing for 1-4 positions each, 10 dropped
    feeds[offsets] = bias
    expected = _run(model, feeds)
    np.testing.assert_allclose(_run(fused, feeds), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("component", [Encoder, Decoder])
def test_autoencoder_attention_fuses_and_the_output_stays(tmp_path, component):
    wrapper = component(tiny_autoencoder_kl(down=4))
    export_component(wrapper, tmp_path / "c.onnx", example_size=(32, 32))
    model = onnx.load(str(tmp_path / "c.onnx"))
    fused, count = _fused_copy(model)
    assert count == 1
    feeds = {
        t.name: np.asarray(x)
        for t, x in zip(wrapper.spec.inputs, wrapper.example_inputs(1, 48, 40))
    }
    expected = _run(model, feeds)
    np.testing.assert_allclose(
        _run(fused, feeds), expected, rtol=0, atol=1e-5 * np.abs(expected).max()
    )


def test_a_softmax_reused_by_the_backward_pass_is_not_fused(tmp_path):
    export_component(
        DecoderVJP(tiny_autoencoder_kl(down=2)),
        tmp_path / "vjp.onnx",
        example_size=(32, 32),
    )
    model = onnx.load(str(tmp_path / "vjp.onnx"))
    assert any(n.op_type == "Softmax" for n in model.graph.node)
    assert fuse_attention(model) == 0
