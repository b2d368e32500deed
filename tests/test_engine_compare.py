"""Engine comparison on random inputs: identical graphs agree, a lower precision shows."""

from __future__ import annotations

import math

import torch

from test_runtime_support import tiny_module, tiny_onnx, tiny_spec
from trt_restore.engine.compare import compare_engines, random_inputs
from trt_restore.runtime.onnxruntime_backend import OnnxRuntimeEngine
from trt_restore.runtime.torch_backend import TorchEngine
from trt_restore.specs import ComponentSpec, TensorSpec

SIZES = [{"B": 1, "H": 16, "W": 16}, {"B": 2, "H": 32, "W": 24}]


def test_random_inputs_follow_the_spec_and_the_seed():
    spec = ComponentSpec(
        "c", inputs=(TensorSpec("x", ("B", 3, "H/2", "W"), "float16"), TensorSpec("k", ("B",), "int64")), outputs=()
    )
    inputs = random_inputs(spec, {"B": 2, "H": 8, "W": 4}, seed=3)
    assert inputs["x"].shape == (2, 3, 4, 4) and inputs["x"].dtype == torch.float16
    assert inputs["k"].dtype == torch.int64 and inputs["k"].shape == (2,)
    assert torch.equal(inputs["x"], random_inputs(spec, {"B": 2, "H": 8, "W": 4}, seed=3)["x"])


def test_onnxruntime_agrees_with_torch_and_fp16_shows():
    reference = TorchEngine(tiny_module(), tiny_spec(), "cpu")
    fp32 = compare_engines(reference, OnnxRuntimeEngine(tiny_onnx(), tiny_spec(), providers="cpu"), SIZES)
    assert set(fp32) == {"eps", "feat"} and max(fp32.values()) < 1e-5
    fp16 = compare_engines(reference, OnnxRuntimeEngine(tiny_onnx("float16"), tiny_spec("float16")), SIZES)
    assert all(1e-5 < error < 1e-2 for error in fp16.values())


def test_a_wrong_output_shape_is_an_infinite_error():
    class Shrink(torch.nn.Module):
        def forward(self, x, t):
            eps, feat = tiny_module()(x, t)
            return eps[..., :-2], feat

    reference = TorchEngine(tiny_module(), tiny_spec(), "cpu")
    errors = compare_engines(reference, TorchEngine(Shrink(), tiny_spec(), "cpu"), SIZES[:1])
    assert math.isinf(errors["eps"]) and errors["feat"] == 0.0
