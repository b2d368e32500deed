"""Engine backends: torch ↔ onnxruntime parity, input checking, profiles, scratch memory, TensorRT loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_runtime_support import tiny_inputs, tiny_module, tiny_onnx, tiny_spec
from trt_restore.errors import UserError
from trt_restore.runtime.device import SCRATCH_ALIGNMENT, ScratchBuffer, resolve_device
from trt_restore.runtime.onnxruntime_backend import OnnxRuntimeEngine, choose_providers
from trt_restore.runtime.profile import Profile, select_profile
from trt_restore.runtime.tiling import TiledEngine
from trt_restore.runtime.torch_backend import TorchEngine
from trt_restore.runtime.trt_loader import installed_flavours, load_trt
from trt_restore.specs import ComponentSpec, TensorSpec

HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU with TensorRT")


@pytest.fixture(scope="module")
def torch_engine() -> TorchEngine:
    return TorchEngine(tiny_module(), tiny_spec(), "cpu")


@pytest.fixture(scope="module")
def ort_engine() -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(tiny_onnx(), tiny_spec(), providers="cpu", threads=1)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, relative: float) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert (actual - expected).abs().max().item() <= relative * expected.abs().max().item()


@pytest.mark.parametrize("batch, height, width", [(1, 16, 16), (3, 24, 40), (2, 64, 32)])
def test_onnxruntime_matches_torch_at_any_size(torch_engine, ort_engine, batch, height, width):
    inputs = tiny_inputs(batch, height, width, seed=batch)
    expected = torch_engine(**inputs)
    actual = ort_engine(**inputs)
    assert list(actual) == ["eps", "feat"]
    assert expected["feat"].shape == (batch, 8, height // 2, width // 2)
    for name in expected:
        assert_close(actual[name], expected[name], relative=1e-5)


def test_fp16_graphs_take_and_return_fp32_at_the_boundary(torch_engine):
    inputs = tiny_inputs(2, 16, 24)
    reference = torch_engine(**inputs)
    engines = [
        TorchEngine(tiny_module("float16"), tiny_spec("float16"), "cpu"),
        OnnxRuntimeEngine(tiny_onnx("float16"), tiny_spec("float16"), providers="cpu"),
    ]
    for engine in engines:
        outputs = engine(**inputs)
        for name in reference:
            assert outputs[name].dtype == torch.float32
            assert_close(outputs[name], reference[name], relative=5e-3)
        # fp16 is really in use: the result differs from the fp32 graph's
        assert not torch.equal(outputs["eps"], reference["eps"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: i.pop("t"), r"takes inputs \['x', 't'\]; got missing \['t'\]"),
        (lambda i: i.update(noise=i["x"]), r"got unknown \['noise'\]"),
        (lambda i: i.update(x=i["x"][0]), r"input 'x' must have 4 dims"),
        (lambda i: i.update(x=i["x"].repeat(1, 2, 1, 1)), r"input 'x' must have 3 at axis 1"),
        (lambda i: i.update(t=i["t"][:1]), r"input 't' has B = 1 at axis 0, which disagrees with B = 2"),
        (lambda i: i.update(x=i["x"][..., :15]), r"multiples of 2, got 16×15"),
        (lambda i: i.update(t=0.5), r"input 't' must be a torch.Tensor, got float"),
    ],
)
def test_bad_inputs_are_refused_in_one_line(torch_engine, ort_engine, change, message):
    for engine in (torch_engine, ort_engine):
        inputs = tiny_inputs(2, 16, 16)
        change(inputs)
        with pytest.raises(UserError, match=message) as error:
            engine(**inputs)
        assert "\n" not in str(error.value) and "component 'pixel_unet'" in str(error.value)


def test_integer_timesteps_are_cast_but_integer_inputs_refuse_floats():
    class Shift(nn.Module):
        def forward(self, x, index):
            return x + index[:, None].float()

    spec = ComponentSpec(
        "shift",
        inputs=(TensorSpec("x", ("B", 2)), TensorSpec("index", ("B",), "int64")),
        outputs=(TensorSpec("y", ("B", 2)),),
    )
    engine = TorchEngine(Shift(), spec, "cpu")
    y = engine(x=torch.zeros(2, 2, dtype=torch.int32), index=torch.tensor([1, 2]))["y"]
    assert y.dtype == torch.float32 and torch.equal(y, torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    with pytest.raises(UserError, match="input 'index' must be int64, got float32"):
        engine(x=torch.zeros(2, 2), index=torch.tensor([1.0, 2.0]))


def test_divided_symbols_bind_from_exact_ones():
    class AddUpsampled(nn.Module):
        def forward(self, latent, image):
            return image + F.interpolate(latent, scale_factor=4.0)

    spec = ComponentSpec(
        "add",
        inputs=(TensorSpec("latent", ("B", 3, "H/4", "W/4")), TensorSpec("image", ("B", 3, "H", "W"))),
        outputs=(TensorSpec("out", ("B", 3, "H", "W")),),
    )
    engine = TorchEngine(AddUpsampled(), spec, "cpu")
    image, latent = torch.zeros(1, 3, 16, 8), torch.ones(1, 3, 4, 2)
    assert torch.equal(engine(image=image, latent=latent)["out"], torch.ones(1, 3, 16, 8))
    with pytest.raises(UserError, match=r"input 'latent' has H/4 = 5 at axis 2, which disagrees with H = 16"):
        engine(image=image, latent=torch.ones(1, 3, 5, 2))


def test_onnxruntime_refuses_bad_graphs_and_providers(tmp_path):
    spec = tiny_spec()
    with pytest.raises(UserError, match="cannot load the graph"):
        OnnxRuntimeEngine(b"not an onnx graph", spec)
    with pytest.raises(UserError, match="not found"):
        OnnxRuntimeEngine(tmp_path / "missing.onnx", spec)
    renamed = ComponentSpec(spec.name, (TensorSpec("image", ("B", 3, "H", "W")), spec.inputs[1]), spec.outputs, 2)
    with pytest.raises(UserError, match=r"has inputs \['x', 't'\] but its spec says \['image', 't'\]"):
        OnnxRuntimeEngine(tiny_onnx(), renamed)
    with pytest.raises(UserError, match="takes 'x' as tensor\\(float\\) but its spec says float16"):
        OnnxRuntimeEngine(tiny_onnx(), tiny_spec("float16"))
    with pytest.raises(UserError, match="unknown onnxruntime providers 'gpu'"):
        OnnxRuntimeEngine(tiny_onnx(), spec, providers="gpu")


@pytest.mark.skipif(HAS_GPU, reason="checks the refusal on a machine without a GPU")
def test_gpu_providers_are_refused_without_a_gpu():
    with pytest.raises(UserError, match="onnxruntime-gpu|need an NVIDIA GPU"):
        choose_providers("cuda")
    assert choose_providers("auto") == "cpu"
    with pytest.raises(UserError, match="needs an NVIDIA GPU"):
        resolve_device("cuda")


def test_profiles_resolve_shapes_and_reject_bad_ranges():
    profile = Profile.for_images(((64, 64), (256, 128), (512, 512)), batch=(1, 2, 4))
    latent = TensorSpec("z", ("B", 4, "H/8", "W/8"))
    assert profile.shapes(latent) == ((1, 4, 8, 8), (2, 4, 32, 16), (4, 4, 64, 64))
    assert Profile.from_json(profile.to_json()) == profile
    assert profile.contains({"B": 4, "H": 64, "W": 512}) and not profile.contains({"B": 5, "H": 64, "W": 64})
    with pytest.raises(UserError, match="1 ≤ min ≤ opt ≤ max, got 64, 32, 512"):
        Profile.for_images(((64, 64), (32, 32), (512, 512)))


def test_select_profile_takes_the_first_that_fits_and_names_the_range():
    ranges = [
        {"x": ((1, 3, 16, 16), (1, 3, 64, 64)), "t": ((1,), (1,))},
        {"x": ((1, 3, 16, 16), (4, 3, 32, 32)), "t": ((1,), (4,))},
    ]
    assert select_profile("unet", {"x": (1, 3, 48, 48), "t": (1,)}, ranges) == 0
    assert select_profile("unet", {"x": (4, 3, 16, 32), "t": (4,)}, ranges) == 1
    with pytest.raises(UserError) as error:
        select_profile("unet", {"x": (2, 3, 48, 48), "t": (2,)}, ranges)
    assert str(error.value) == (
        "component 'unet': input 'x' has shape (2, 3, 48, 48), outside the engine's range "
        "(1, 3, 16, 16)..(1, 3, 64, 64) or (1, 3, 16, 16)..(4, 3, 32, 32); "
        "tile the image or rebuild the engine with a larger profile"
    )


def test_scratch_buffer_grows_to_the_largest_request_only():
    scratch = ScratchBuffer("cpu")
    scratch.reserve(1000)
    first = scratch.pointer
    scratch.reserve(10)
    assert scratch.nbytes == 1000 and scratch.pointer == first
    scratch.reserve(5000)
    assert scratch.nbytes == 5000


def test_scratch_buffer_is_freed_when_its_last_engine_releases_it():
    scratch = ScratchBuffer("cpu")
    scratch.reserve(1000)
    scratch.reserve(3000)
    scratch.release()
    assert scratch.nbytes == 3000  # one engine still holds it
    scratch.release()
    assert scratch.nbytes == SCRATCH_ALIGNMENT


@pytest.mark.parametrize(
    ("make", "backend", "released"),
    [
        (lambda: TorchEngine(tiny_module(), tiny_spec(), "cpu"), "torch", "module"),
        (lambda: OnnxRuntimeEngine(tiny_onnx(), tiny_spec(), providers="cpu", threads=1), "onnxruntime", "session"),
        (lambda: TiledEngine(TorchEngine(tiny_module(), tiny_spec(), "cpu"), (16, 16), 4), "torch", None),
    ],
    ids=["torch", "onnxruntime", "tiled"],
)
def test_close_releases_the_backend_once_and_a_closed_engine_refuses_to_run(make, backend, released):
    engine = make()
    assert set(engine(**tiny_inputs(1, 32, 32))) == {"eps", "feat"}
    engine.close()
    engine.close()  # idempotent
    assert engine.closed and getattr(engine, "inner", engine).closed
    if released is not None:
        assert not hasattr(engine, released)
    with pytest.raises(UserError, match=f"component 'pixel_unet': its {backend} engine is closed; load the models"):
        engine(**tiny_inputs(1, 32, 32))


def test_load_trt_finds_an_installed_flavour():
    installed = installed_flavours()
    if not installed:
        with pytest.raises(UserError, match="TensorRT is not installed"):
            load_trt()
        return
    module, flavour, version = load_trt()
    assert installed[flavour] == version == module.__version__
    with pytest.raises(UserError, match="unknown TensorRT flavour 'tensorrt_lite'"):
        load_trt("tensorrt_lite")


@pytest.mark.skipif(HAS_GPU, reason="checks the refusal on a machine without a GPU")
def test_tensorrt_engine_is_refused_without_a_gpu():
    from trt_restore.runtime.tensorrt_backend import TensorRTEngine

    with pytest.raises(UserError, match="needs an NVIDIA GPU with CUDA"):
        TensorRTEngine(b"engine bytes", tiny_spec())


@pytest.fixture(scope="module")
def gpu_engines():
    """Two TensorRT engines of the tiny denoiser (fp32, fp16) sharing one scratch buffer."""
    from trt_restore.engine.build import build_engine
    from trt_restore.runtime.tensorrt_backend import TensorRTEngine

    if not installed_flavours():
        pytest.skip("neither tensorrt nor tensorrt_rtx is installed")
    profile = Profile.for_images(((16, 16), (32, 32), (64, 64)), batch=(1, 1, 4))
    scratch = ScratchBuffer("cuda")
    engines = {}
    for dtype, precision in (("float32", "fp32"), ("float16", "fp16")):
        plan = build_engine(tiny_onnx(dtype), tiny_spec(dtype), profiles=[profile], precision=precision)
        try:
            engines[dtype] = TensorRTEngine(plan, tiny_spec(dtype), scratch=scratch)
        except UserError as error:  # TensorRT-RTX builds on any machine but runs only on RTX-class GPUs
            pytest.skip(f"the TensorRT engine cannot run on this GPU: {error}")
    return engines, scratch


@needs_gpu
def test_tensorrt_engine_matches_torch(gpu_engines):
    engines, scratch = gpu_engines
    assert engines["float32"].scratch is engines["float16"].scratch is scratch
    reference = TorchEngine(tiny_module(), tiny_spec(), "cuda")
    for batch, height, width in [(1, 16, 16), (4, 64, 32), (2, 24, 40)]:
        inputs = {k: v.cuda() for k, v in tiny_inputs(batch, height, width).items()}
        expected = reference(**inputs)
        for dtype, tolerance in (("float32", 1e-3), ("float16", 5e-3)):
            outputs = engines[dtype](**inputs)
            for name in expected:
                assert_close(outputs[name], expected[name], relative=tolerance)


@needs_gpu
def test_tensorrt_engine_refuses_sizes_outside_its_profile(gpu_engines):
    engines, _ = gpu_engines
    with pytest.raises(UserError, match=r"input 'x' has shape \(1, 3, 128, 16\), outside the engine's range"):
        engines["float32"](**tiny_inputs(1, 128, 16))


@needs_gpu
def test_tensorrt_engine_runs_on_a_given_stream(gpu_engines):
    from trt_restore.runtime.tensorrt_backend import TensorRTEngine

    engines, scratch = gpu_engines
    stream = torch.cuda.Stream()
    plan = engines["float32"].cuda_engine.serialize()
    on_stream = TensorRTEngine(bytes(plan), tiny_spec(), stream=stream, scratch=scratch)
    inputs = {k: v.cuda() for k, v in tiny_inputs(2, 32, 32).items()}
    assert torch.equal(on_stream(**inputs)["eps"], engines["float32"](**inputs)["eps"])


@needs_gpu
def test_tensorrt_engines_free_their_shared_scratch_when_the_last_one_closes(gpu_engines):
    from trt_restore.runtime.tensorrt_backend import TensorRTEngine

    engines, _ = gpu_engines
    plan = bytes(engines["float32"].cuda_engine.serialize())
    scratch = ScratchBuffer("cuda")
    first, second = (TensorRTEngine(plan, tiny_spec(), scratch=scratch) for _ in range(2))
    reserved = scratch.nbytes
    inputs = {k: v.cuda() for k, v in tiny_inputs(1, 32, 32).items()}
    first.close()
    first.close()
    assert not hasattr(first, "context") and scratch.nbytes == reserved
    assert set(second(**inputs)) == {"eps", "feat"}
    second.close()
    assert scratch.nbytes == SCRATCH_ALIGNMENT
    with pytest.raises(UserError, match="component 'pixel_unet': its tensorrt engine is closed"):
        first(**inputs)


@pytest.mark.skipif(
    not HAS_GPU or "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
    reason="needs an NVIDIA GPU and onnxruntime-gpu",
)
def test_onnxruntime_cuda_binds_torch_tensors(torch_engine):
    engine = OnnxRuntimeEngine(tiny_onnx(), tiny_spec(), providers="cuda")
    inputs = tiny_inputs(2, 32, 48)
    expected = torch_engine(**inputs)
    outputs = engine(**{k: v.cuda() for k, v in inputs.items()})
    for name in expected:
        assert outputs[name].is_cuda
        assert_close(outputs[name].cpu(), expected[name], relative=1e-4)
