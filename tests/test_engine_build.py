"""ONNX to TensorRT: real TensorRT-RTX builds on this machine (no GPU needed) and their refusals."""

from __future__ import annotations

import pytest

from test_runtime_support import tiny_onnx, tiny_spec
from trt_restore.errors import UserError
from trt_restore.runtime.profile import Profile
from trt_restore.runtime.trt_loader import installed_flavours
from trt_restore.specs import ComponentSpec, TensorSpec

pytestmark = pytest.mark.skipif(
    "tensorrt_rtx" not in installed_flavours(), reason="needs tensorrt-rtx, which builds engines without a GPU"
)

PROFILE = Profile.for_images(((16, 16), (32, 32), (64, 64)), batch=(1, 1, 4))


def build(dtype="float32", precision="fp32", **options) -> bytes:
    from trt_restore.engine.build import build_engine

    options.setdefault("profiles", [PROFILE])
    return build_engine(tiny_onnx(dtype), tiny_spec(dtype), precision=precision, flavour="tensorrt_rtx", **options)


@pytest.mark.parametrize("dtype, precision", [("float32", "fp32"), ("float16", "fp16")])
def test_tensorrt_rtx_builds_without_a_gpu(dtype, precision):
    plan = build(dtype, precision)
    assert isinstance(plan, bytes) and len(plan) > 10_000


def test_build_with_several_profiles_and_explicit_targets():
    small = Profile.for_images(((16, 16), (16, 16), (32, 32)), batch=(1, 1, 1))
    plan = build("float16", "fp16", profiles=[small, PROFILE], compute_capabilities=["8.6", "12.0"], workspace=1 << 28)
    assert len(plan) > 10_000


def test_build_targets():
    from trt_restore.engine.build import RTX_DEFAULT_TARGETS, build_targets

    assert build_targets("tensorrt_rtx") == list(RTX_DEFAULT_TARGETS) == ["8.0", "8.6", "8.9", "12.0"]
    assert build_targets("tensorrt_rtx", ["7.5", "8.9"]) == ["7.5", "8.9"]
    with pytest.raises(UserError, match=r"unknown compute capability '9.9'; TensorRT-RTX builds for: 7.5, 8.0, 8.6"):
        build_targets("tensorrt_rtx", ["9.9"])


def test_parse_errors_are_one_line(tmp_path):
    from trt_restore.engine.build import build_engine

    graph = tiny_onnx().read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(graph[: len(graph) // 2])
    with pytest.raises(UserError, match=r"TensorRT cannot parse truncated.onnx: .*Failed to parse the ONNX model") as error:
        build_engine(truncated, tiny_spec(), profiles=[PROFILE], precision="fp32", flavour="tensorrt_rtx")
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="not found"):
        build_engine(tmp_path / "missing.onnx", tiny_spec(), profiles=[PROFILE], flavour="tensorrt_rtx")


@pytest.mark.parametrize(
    "dtype, precision, message",
    [
        ("float32", "fp16", "precision fp16 was asked for, but its ONNX graph computes in fp32 only"),
        ("float16", "fp32", "precision fp32 was asked for, but its ONNX graph has fp16 tensors"),
    ],
)
def test_precision_must_match_the_graph(dtype, precision, message):
    with pytest.raises(UserError, match=message):
        build(dtype, precision)


def test_graph_must_match_its_spec():
    from trt_restore.engine.build import build_engine

    spec = tiny_spec()
    renamed = ComponentSpec(spec.name, (TensorSpec("image", ("B", 3, "H", "W")), spec.inputs[1]), spec.outputs, 2)
    with pytest.raises(UserError, match="the ONNX graph takes .* but its spec says"):
        build_engine(tiny_onnx(), renamed, profiles=[PROFILE], precision="fp32", flavour="tensorrt_rtx")


def test_profile_sizes_must_be_multiples_of_the_spec():
    odd = Profile.for_images(((15, 16), (32, 32), (64, 64)))
    with pytest.raises(UserError, match="profile image sizes must be multiples of 2"):
        build(profiles=[odd])
    with pytest.raises(UserError, match="at least one optimisation profile"):
        build(profiles=[])


def test_atomic_output_keeps_the_old_file_when_writing_fails(tmp_path):
    from trt_restore.files import atomic_output

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
