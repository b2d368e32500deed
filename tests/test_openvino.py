"""The openvino backend: parity with torch per component and end to end (fp32), bf16 against fp32, precision choice,
the compiled-model cache and openvino bundles."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
from test_pipelines import CASES, FEW_STEPS, natural_image, observation
from trt_restore import restore
from trt_restore.api import load_models
from trt_restore.cli import main
from trt_restore.engine.bundle_writer import build_bundle
from trt_restore.errors import UserError
from trt_restore.export.model_sets import load_model_set
from trt_restore.export.onnx_export import export_component, export_method
from trt_restore.metrics import psnr
from trt_restore.operators import Degradation, make_operator
from trt_restore.runtime.bundle import Bundle
from trt_restore.runtime.openvino_backend import (
    OpenVinoEngine,
    cache_folder,
    choose_precision,
    component_precision,
    cpu_flags,
    has_native_bf16,
    openvino_version,
)
from trt_restore.runtime.tiling import TiledEngine
from trt_restore.runtime.torch_backend import TorchEngine

COMPONENT_METHODS = {
    "encoder": "reld",
    "decoder": "reld",
    "decoder_vjp": "reld",
    "unet": "reld",
    "pixel_unet": "ddrm",
    "sr_unet": "ldm-sr",
    "inn_forward": "indigo-latent",
    "inn_inverse": "indigo-latent",
}
SIZE = 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every component of the tiny model set as ONNX at 32×32 (the decoder VJP's static size), with its torch wrapper."""
    folder = tmp_path_factory.mktemp("onnx")
    models = load_model_set("tiny")
    components = {}
    for name, method in COMPONENT_METHODS.items():
        wrapper = models.wrapper(name, method)
        size = 64 if name in ("unet", "sr_unet") else SIZE  # the latent UNets want 32 latent pixels
        spec = export_component(wrapper, folder / f"{name}.onnx", example_size=(size, size))
        components[name] = (folder / f"{name}.onnx", spec, wrapper, size)
    return components


def example_inputs(spec, size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        t.name: torch.rand(t.resolve({"B": 1, "H": size, "W": size}), generator=generator) * (900 if t.name == "timestep" else 1)
        for t in spec.inputs
    }


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    return float((result - reference).norm() / reference.norm())


@pytest.mark.parametrize("name", COMPONENT_METHODS)
def test_openvino_fp32_matches_torch_per_component(exported, name):
    path, spec, wrapper, size = exported[name]
    inputs = example_inputs(spec, size)
    expected = TorchEngine(wrapper, spec)(**inputs)
    engine = OpenVinoEngine(path, spec, threads=1, precision="fp32")
    assert engine.precision == "fp32"
    outputs = engine(**inputs)
    for tensor in spec.outputs:
        assert outputs[tensor.name].shape == expected[tensor.name].shape
        assert relative_error(outputs[tensor.name], expected[tensor.name]) < 1e-5, tensor.name


@pytest.mark.parametrize("method, task", CASES)
def test_openvino_fp32_matches_torch_end_to_end(method, task):
    y = observation(task, 0.02)[0]
    config = FEW_STEPS.get(method, {"steps": 3})
    common = {"method": method, "task": task, "sigma": 0.02, "model_set": "tiny", "config": config, "seed": 7}
    reference = restore(y, backend="torch", **common)
    result = restore(y, backend="openvino", precision="fp32", **common)
    assert result.shape == reference.shape == (3, 64, 64)
    assert psnr(reference, result) >= 45


@pytest.mark.parametrize("name", COMPONENT_METHODS)
def test_openvino_bf16_stays_close_to_fp32_per_component(exported, name):
    """bf16 rounds weights and activations to 8 significant bits (relative error 2⁻⁹ per value). Random networks
    have no trained scale, so their errors grow through the layers to a few percent (9 % on the pixel UNet): the
    bound only catches a broken bf16 path; the end-to-end test on the trained models is the quality check."""
    if "BF16" not in __import__("openvino").Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("OpenVINO has no bf16 on this CPU (it needs AVX-512 or AMX)")
    path, spec, _, size = exported[name]
    inputs = example_inputs(spec, size)
    expected = OpenVinoEngine(path, spec, threads=1, precision="fp32")(**inputs)
    outputs = OpenVinoEngine(path, spec, threads=1, precision="bf16")(**inputs)
    errors = {t.name: relative_error(outputs[t.name], expected[t.name]) for t in spec.outputs}
    print(f"{name}: bf16 relative error against fp32 {errors}")
    assert max(errors.values()) < 0.2


def test_auto_precision_follows_the_cpu_flags():
    flags = cpu_flags()
    if flags is None:
        pytest.skip("needs /proc/cpuinfo (Linux) to read the CPU's flags")
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert has_native_bf16() == native
    assert choose_precision("auto") == ("bf16" if native else "fp32")
    assert choose_precision("fp32") == "fp32"
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        choose_precision("fp16")


def test_auto_keeps_reld_decoder_in_fp32_only():
    assert component_precision("auto", "reld", "decoder") == "fp32"
    assert component_precision("auto", "reld", "decoder_vjp") == "auto"
    assert component_precision("auto", "ldm-sr", "decoder") == "auto"
    assert component_precision("bf16", "reld", "decoder") == "bf16"  # a forced precision is kept


def test_a_precision_is_refused_on_other_backends():
    with pytest.raises(UserError, match="applies to the openvino backend"):
        load_models("ddrm", model_set="tiny", backend="onnxruntime", precision="bf16")


def test_compiled_models_are_cached_per_openvino_version_and_cpu(exported, tmp_path):
    path, spec, _, size = exported["pixel_unet"]
    folder = cache_folder(tmp_path, "fp32")
    assert folder.parent == tmp_path and folder.name.startswith(f"openvino-{openvino_version()}-")
    assert folder.name.endswith("-fp32") and cache_folder(tmp_path, "bf16") != folder
    inputs = example_inputs(spec, size)
    first = OpenVinoEngine(path, spec, threads=1, precision="fp32", cache_dir=tmp_path)(**inputs)
    cached = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert cached, "compiling wrote nothing to the cache"
    second = OpenVinoEngine(path, spec, threads=1, precision="fp32", cache_dir=tmp_path)(**inputs)
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == cached  # read back, not compiled again
    assert all(torch.equal(first[t.name], second[t.name]) for t in spec.outputs)


def test_bad_graphs_are_refused_in_one_line(tmp_path, exported):
    _, spec, _, _ = exported["decoder"]
    with pytest.raises(UserError, match="not found; export it first"):
        OpenVinoEngine(tmp_path / "missing.onnx", spec)
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(UserError, match="OpenVINO cannot read the graph"):
        OpenVinoEngine(tmp_path / "junk.onnx", spec)
    path, _, _, _ = exported["encoder"]
    with pytest.raises(UserError, match="the ONNX graph has inputs"):
        OpenVinoEngine(path, spec)


def run_cli(*argv: str) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(list(argv))
    return status, printed.getvalue()


@pytest.fixture(scope="module")
def openvino_bundle(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bundles") / "ddrm_openvino.plan"
    profile = ("--min", "32", "32", "--opt", "64", "64", "--max", "128", "128")
    status, printed = run_cli("build", "--method", "ddrm", "--model-set", "tiny", "--backend", "openvino", *profile, "-o", str(path))
    assert status == 0
    assert printed.splitlines()[0].endswith("method ddrm, openvino, auto")
    return path


def test_openvino_bundle_runs_here_and_matches_the_model_set(openvino_bundle, capsys):
    assert main(["info", str(openvino_bundle)]) == 0
    printed = capsys.readouterr().out
    assert "precision auto, backend openvino" in printed
    assert f"runs here: yes, with OpenVINO {openvino_version()} on the CPU in {choose_precision('auto')}" in printed
    y = observation("sr4", 0.02)[0][:, :16, :16]
    common = {"task": "sr4", "sigma": 0.02, "config": {"steps": 2}, "seed": 3}
    method, models = load_models(engine=openvino_bundle, precision="fp32", threads=1)
    engine = models.engines["pixel_unet"]
    inner = engine.inner if isinstance(engine, TiledEngine) else engine
    assert method == "ddrm" and isinstance(inner, OpenVinoEngine) and inner.precision == "fp32"
    from_bundle = restore(y, "ddrm", models=models, **common)
    reference = restore(y, "ddrm", backend="torch", model_set="tiny", **common)
    assert psnr(reference, from_bundle) >= 45
    cache = Bundle.open(openvino_bundle).cache_dir
    assert any(cache.rglob("*")), "the compiled models were not cached beside the bundle"


def test_openvino_bundle_refuses_a_gpu_device(openvino_bundle):
    with pytest.raises(UserError, match="OpenVINO on the CPU|needs an NVIDIA GPU"):
        load_models(engine=openvino_bundle, device="cuda")


BF16_BELOW_TARGET = {
    "ddrm": "measured 38.2 dB at 256² (benchmarks/cpu/backends): DDRM's x₀ = (x − √(1−ᾱ) ε)/√ᾱ scales the pixel "
    "UNet's bf16 error in ε by √(1−ᾱ)/√ᾱ, large at the early steps",
}
"""Methods whose bf16 result misses the 40 dB target on this CPU, and why (expected failures, not strict)."""


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, task",
    [pytest.param(m, t, marks=pytest.mark.xfail(m in BF16_BELOW_TARGET, reason=BF16_BELOW_TARGET.get(m, ""), strict=False))
     for m, t in CASES],
)
def test_bundled_method_in_bf16_stays_within_40_db_of_fp32(method, task, tmp_path):
    """A method on the trained bundled models, OpenVINO's auto precision (bf16 where the CPU has it natively, RELD's
    decoder in fp32) against fp32, the decoder VJP (RELD) included: one bundle, loaded in both precisions.
    Asserted where the CPU has native bf16; reported elsewhere."""
    if "BF16" not in __import__("openvino").Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("OpenVINO has no bf16 on this CPU (it needs AVX-512 or AMX)")
    models = load_model_set("bundled")
    exported = export_method(method, models, tmp_path, example_size=(64, 64))
    bundle = build_bundle(
        method, exported, tmp_path / "bundle.plan", backend="openvino", precision="auto",
        profile=((64, 64), (64, 64), (64, 64)), meta=models.meta, model_set=models.name,
    )
    y = Degradation(make_operator(task, size=(64, 64), channels=3), 0.02).observe(natural_image(64), seed=0)[0]
    config = FEW_STEPS.get(method, {"steps": 3})
    results = {}
    for precision in ("fp32", "auto"):
        _, loaded = load_models(engine=bundle, precision=precision, threads=1)
        with loaded:
            results[precision] = restore(y, method, task=task, sigma=0.02, models=loaded, config=config, seed=7)
    score = psnr(results["fp32"], results["auto"])
    print(f"{method} {task}: OpenVINO auto (bf16) against fp32 {score:.1f} dB")
    if has_native_bf16():
        assert score >= 40
