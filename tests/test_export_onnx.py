"""ONNX export of every component: onnxruntime parity with torch in fp32 and fp16, dynamic axes, specs."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from trt_restore.errors import UserError
from trt_restore.export.components import Component, Decoder, Encoder
from trt_restore.export.graph import read_spec
from trt_restore.export.model_sets import ModelSet, tiny_model_set
from trt_restore.export.onnx_export import export_component, export_method
from trt_restore.export.tiny import tiny_autoencoder_tiny
from trt_restore.methods import components_for

# (component, method) pairs that cover every architecture of the tiny set: KL f8 and
# VQ f4 autoencoders, latent, SR and pixel UNets, pixel and latent INNs.
TINY_SET_CASES = [
    ("encoder", "reld"),
    ("decoder", "reld"),
    ("unet", "reld"),
    ("encoder", "ldm-sr"),
    ("decoder", "ldm-sr"),
    ("sr_unet", "ldm-sr"),
    ("pixel_unet", "ddrm"),
    ("inn_forward", "indigo-pixel"),
    ("inn_inverse", "indigo-pixel"),
    ("inn_forward", "indigo-latent"),
    ("inn_inverse", "indigo-latent"),
]
# The one architecture outside the tiny set.
EXTRA_CASES = [("encoder", "autoencoder-tiny"), ("decoder", "autoencoder-tiny")]
CASES = TINY_SET_CASES + EXTRA_CASES

# fp16 graphs against the fp32 torch model: unit roundoff u = 2^-11 ≈ 4.9e-4 per rounded
# op; these nets chain ~10–20 rounded layers, so errors of ~10u ≈ 5e-3 of the output
# scale are expected. 2e-2 (≈ 40u) leaves headroom while still catching a wrong cast
# (an fp16 normalisation or timestep embedding is off by far more).
FP16_RTOL_OF_MAX = 2e-2
# Graphs are traced at one size and run at another (both dimensions differ), so a
# dimension frozen into the graph would show; every component's multiple divides both.
EXAMPLE_SIZE, TEST_SIZE = (32, 64), (64, 32)
FP32_RTOL_OF_MAX = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_set() -> ModelSet:
    return tiny_model_set()


def _wrapper(model_set: ModelSet, component: str, method: str) -> Component:
    if method == "autoencoder-tiny":
        vae = tiny_autoencoder_tiny()
        return Encoder(vae) if component == "encoder" else Decoder(vae)
    return model_set.wrapper(component, method)


def _session(path) -> ort.InferenceSession:
    # Idle onnxruntime threads must not spin: they would starve torch running next to them.
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(path, wrapper: Component, inputs) -> list[np.ndarray]:
    session = _session(path)
    return session.run(None, {t.name: x.numpy() for t, x in zip(wrapper.spec.inputs, inputs, strict=True)})


def _torch(wrapper: Component, inputs) -> list[np.ndarray]:
    with torch.no_grad():
        out = wrapper(*inputs)
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _assert_close_to_scale(actual: list[np.ndarray], expected: list[np.ndarray], rtol_of_max: float):
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape and a.dtype == np.float32
        assert np.abs(a - e).max() <= rtol_of_max * np.abs(e).max()


@pytest.mark.parametrize("component, method", CASES)
def test_fp32_onnx_matches_torch_at_another_size(tmp_path, tiny_set, component, method):
    wrapper = _wrapper(tiny_set, component, method)
    spec = export_component(wrapper, tmp_path / "model.onnx", example_size=EXAMPLE_SIZE)
    assert spec.meta["precision"] == "fp32" and spec.inputs == wrapper.spec.inputs
    inputs = wrapper.example_inputs(2, *TEST_SIZE, seed=1)
    _assert_close_to_scale(_run(tmp_path / "model.onnx", wrapper, inputs), _torch(wrapper, inputs), FP32_RTOL_OF_MAX)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
KEPT_FP32 = {"InstanceNormalization", "GroupNormalization", "LayerNormalization", "Softmax", "Sin", "Cos"}


@pytest.mark.parametrize("component, method", CASES)
def test_fp16_onnx_is_strongly_typed_and_close_to_fp32_torch(tmp_path, tiny_set, component, method):
    wrapper = _wrapper(tiny_set, component, method)
    export_component(wrapper, tmp_path / "model.onnx", precision="fp16", example_size=EXAMPLE_SIZE)

    model = onnx.load(str(tmp_path / "model.onnx"))
    types = _elem_types(model)
    assert all(v.type.tensor_type.elem_type == FLOAT for v in (*model.graph.input, *model.graph.output))
    ops = {n.op_type for n in model.graph.node}
    assert "Conv" in ops
    for node in model.graph.node:
        if node.op_type in KEPT_FP32:
            assert types[node.input[0]] == FLOAT, node.name
        if node.op_type == "Conv":
            assert types[node.input[0]] == FLOAT16 and types[node.input[1]] == FLOAT16, node.name

    inputs = wrapper.example_inputs(2, *TEST_SIZE, seed=2)
    _assert_close_to_scale(_run(tmp_path / "model.onnx", wrapper, inputs), _torch(wrapper, inputs), FP16_RTOL_OF_MAX)


def test_dynamic_axes_are_symbolic(tmp_path, tiny_set):
    wrapper = tiny_set.wrapper("unet", "reld")
    export_component(wrapper, tmp_path / "unet.onnx", example_size=EXAMPLE_SIZE)
    graph = onnx.load(str(tmp_path / "unet.onnx")).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert dims == {"latent": ["B", 4, "H_8", "W_8"], "timestep": ["B"]}


def test_export_method_writes_every_component_with_its_spec(tmp_path, tiny_set):
    exported = export_method("ldm-sr", tiny_set, tmp_path, example_size=EXAMPLE_SIZE)
    assert tuple(exported) == components_for("ldm-sr")
    for component, (path, spec) in exported.items():
        assert path == tmp_path / f"{component}.onnx"
        assert read_spec(path) == spec
        graph = onnx.load(str(path)).graph
        assert [i.name for i in graph.input] == [t.name for t in spec.inputs]
        assert [o.name for o in graph.output] == [t.name for t in spec.outputs]
        assert not list(tmp_path.glob("*.data"))  # weights are embedded


def test_foreign_onnx_file_has_no_spec(tmp_path):
    identity = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    output = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([identity], "g", [value], [output])), tmp_path / "f.onnx")
    with pytest.raises(UserError, match="carries no component spec"):
        read_spec(tmp_path / "f.onnx")


def test_export_errors(tmp_path, tiny_set):
    decoder = tiny_set.wrapper("decoder")
    with pytest.raises(UserError, match="unknown precision 'int8'"):
        export_component(decoder, tmp_path / "d.onnx", precision="int8")
    with pytest.raises(UserError, match="opset 13"):
        export_component(decoder, tmp_path / "d.onnx", opset=13)
    with pytest.raises(UserError, match="divisible by 8, got 60x64"):
        export_component(decoder, tmp_path / "d.onnx", example_size=(60, 64))
    with pytest.raises(UserError, match="unknown method"):
        export_method("magic", tiny_set, tmp_path)


@pytest.mark.parametrize("component, method", [("unet", "reld"), ("decoder", "reld")])
def test_fp16_with_fused_attention_keeps_the_fused_processor_and_the_fp32_result(tiny_set, component, method):
    from diffusers.models.attention_processor import Attention, AttnProcessor
    from trt_restore.export.precision import HalfPrecision

    wrapper = _wrapper(tiny_set, component, method)
    fused = HalfPrecision(wrapper, fused_attention=True)
    processors = [type(m.processor) for m in fused.modules() if isinstance(m, Attention)]
    assert processors and AttnProcessor not in processors
    inputs = wrapper.example_inputs(2, *TEST_SIZE, seed=3)
    _assert_close_to_scale(_torch(fused, inputs), _torch(wrapper, inputs), FP16_RTOL_OF_MAX)
