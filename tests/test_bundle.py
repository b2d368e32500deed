"""The .plan bundle: byte-exact round trips, tamper and damage detection, compatibility refusals, CPU bundles."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import onnx
import pytest
import torch

from test_runtime_support import tiny_inputs, tiny_module, tiny_onnx, tiny_spec
from trt_restore.engine.bundle_writer import build_bundle, describe_bundle, onnx_digest, write_bundle
from trt_restore.errors import UserError
from trt_restore.runtime.bundle import FORMAT_VERSION, MANIFEST_NAME, Bundle, Machine, sha256_hex, supports_compute_capability
from trt_restore.runtime.torch_backend import TorchEngine
from trt_restore.runtime.trt_loader import installed_flavours

HAS_RTX = "tensorrt_rtx" in installed_flavours()
PROFILE = ((16, 16), (32, 32), (64, 64))
ENGINE = bytes(range(256)) * 64


def manifest_of(**fields) -> dict:
    """A manifest as JSON gives it back (lists, not tuples)."""
    manifest = {
        "method": "ddrm",
        "model_set": {"name": "tiny", "meta": {"schedulers": {"pixel_unet": {"beta_schedule": "linear"}}}},
        "backend": "tensorrt",
        "precision": "fp16",
        "tensorrt": {"flavour": "tensorrt_rtx", "version": "1.7.1.116", "compute_capabilities": ["8.0", "8.6", "8.9", "12.0"]},
        "components": {
            "pixel_unet": {"entry": "pixel_unet.plan", "spec": tiny_spec("float16").to_json(), "profiles": []}
        },
        **fields,
    }
    return json.loads(json.dumps(manifest))


@pytest.fixture
def bundle_path(tmp_path) -> Path:
    return write_bundle(tmp_path / "tiny.plan", manifest_of(), {"pixel_unet.plan": ENGINE})


def rewrite(path: Path, *, manifest: dict | None = None, entries: dict[str, bytes] | None = None) -> None:
    """Write the archive again with some entries replaced (valid zip checksums, stale manifest unless given)."""
    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    contents.update(entries or {})
    if manifest is not None:
        contents[MANIFEST_NAME] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


def test_round_trip_is_byte_exact_and_deterministic(tmp_path):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00\x01" * 40_000)
    entries = {"pixel_unet.plan": ENGINE, "extra/weights.bin": weights, "empty.bin": b""}
    manifest = manifest_of()
    first = write_bundle(tmp_path / "a.plan", manifest, entries)
    second = write_bundle(tmp_path / "b.plan", manifest, entries)
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.plan", "b.plan", "weights.bin"]

    bundle = Bundle.open(first)
    assert {k: v for k, v in bundle.manifest.items() if k not in ("format", "format_version", "entries")} == manifest
    assert bundle.read("pixel_unet.plan") == ENGINE
    assert bundle.read("extra/weights.bin") == weights.read_bytes()
    assert bundle.read("empty.bin") == b""
    assert bundle.manifest["entries"]["pixel_unet.plan"] == {"sha256": sha256_hex(ENGINE), "size": len(ENGINE)}
    with zipfile.ZipFile(first) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    assert bundle.spec("pixel_unet") == tiny_spec("float16")
    assert bundle.meta == manifest["model_set"]["meta"] and bundle.components == ["pixel_unet"]


def test_the_model_sets_settings_for_the_method_come_with_the_bundle(tmp_path):
    meta = {"settings": {"ddrm": {"steps": 12, "eta": 0.5}, "ldm-sr": {"steps": 2}}}
    path = write_bundle(tmp_path / "s.plan", manifest_of(model_set={"name": "mine", "meta": meta}), {"pixel_unet.plan": ENGINE})
    bundle = Bundle.open(path)
    assert bundle.settings == {"steps": 12, "eta": 0.5}
    assert "model-set settings: steps 12, eta 0.5" in bundle.describe(Machine({}, None)).splitlines()


def test_a_changed_byte_is_detected(bundle_path):
    raw = bytearray(bundle_path.read_bytes())
    raw[raw.find(ENGINE) + 1000] ^= 0x01  # the zip's own CRC catches this one
    bundle_path.write_bytes(bytes(raw))
    expected = "tiny.plan: entry 'pixel_unet.plan' does not match its recorded sha256"
    with pytest.raises(UserError, match=expected) as error:
        Bundle.open(bundle_path).read("pixel_unet.plan")
    assert "\n" not in str(error.value)


def test_a_replaced_entry_is_detected_by_its_sha256(bundle_path):
    tampered = bytearray(ENGINE)
    tampered[5] ^= 0x80
    rewrite(bundle_path, entries={"pixel_unet.plan": bytes(tampered)})
    bundle = Bundle.open(bundle_path)
    with pytest.raises(UserError, match="does not match its recorded sha256, so the file is damaged or was modified"):
        bundle.read("pixel_unet.plan")
    assert "integrity: FAILED" in bundle.describe(Machine({}, None))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "not a zip archive, or truncated"),
        (lambda p: p.write_bytes(b"\x7fELF" + bytes(5000)), "not a zip archive, or truncated"),
        (lambda p: p.write_text(""), "not a zip archive, or truncated"),
        (lambda p: p.unlink(), "bundle '.*tiny.plan' not found"),
    ],
)
def test_damaged_files_are_refused(bundle_path, damage, message):
    damage(bundle_path)
    with pytest.raises(UserError, match=message):
        Bundle.open(bundle_path)


def test_manifest_problems_are_refused(bundle_path):
    with zipfile.ZipFile(bundle_path, "w") as archive:
        archive.writestr("pixel_unet.plan", ENGINE)
    with pytest.raises(UserError, match="tiny.plan has no manifest.json, so it is not a trt-restore bundle"):
        Bundle.open(bundle_path)

    manifest = manifest_of(format="trt-restore-bundle", format_version=99, entries={})
    rewrite(bundle_path, manifest=manifest)
    with pytest.raises(UserError, match="has bundle format version 99, and this trt-restore reads version 2; rebuild"):
        Bundle.open(bundle_path)

    del manifest["components"]
    rewrite(bundle_path, manifest={**manifest, "format_version": FORMAT_VERSION})
    with pytest.raises(UserError, match=r"damaged manifest \(no components\)"):
        Bundle.open(bundle_path)

    rewrite(bundle_path, manifest={"some": "json"})
    with pytest.raises(UserError, match="is not a trt-restore bundle"):
        Bundle.open(bundle_path)


def edit_tensorrt(path: Path, **tensorrt) -> Bundle:
    manifest = Bundle.open(path).manifest
    manifest["tensorrt"].update(tensorrt)
    rewrite(path, manifest=manifest)
    return Bundle.open(path)


def test_foreign_flavour_version_and_gpu_are_refused(bundle_path):
    here = Machine({"tensorrt_rtx": "1.7.1.116"}, compute_capability="8.6")
    assert Bundle.open(bundle_path).compatibility_problem(here) is None

    bundle = edit_tensorrt(bundle_path, flavour="tensorrt", version="10.9.0.34")
    with pytest.raises(UserError) as error:
        bundle.check_runnable(here)
    assert str(error.value) == (
        "tiny.plan holds engines built with tensorrt 10.9.0.34, but this machine has tensorrt_rtx 1.7.1.116; "
        "`pip install tensorrt==10.9.0.34` or rebuild it on this machine with `trt-restore build` (method ddrm, precision fp16)"
    )

    bundle = edit_tensorrt(bundle_path, flavour="tensorrt_rtx", version="1.6.0.20")
    with pytest.raises(UserError, match="built with tensorrt_rtx 1.6.0.20, but this machine has tensorrt_rtx 1.7.1.116"):
        bundle.check_runnable(here)

    bundle = edit_tensorrt(bundle_path, version="1.7.1.116", compute_capabilities=["8.9", "12.0"])
    with pytest.raises(UserError, match=r"built for GPU compute capability 8.9, 12.0, but this GPU has 8.6; rebuild"):
        bundle.check_runnable(here)
    with pytest.raises(UserError, match="holds TensorRT engines, which need an NVIDIA GPU, and this machine has none"):
        bundle.check_runnable(Machine({"tensorrt_rtx": "1.7.1.116"}, compute_capability=None))


def test_foreign_engines_are_refused_on_this_machine(bundle_path):
    bundle = edit_tensorrt(bundle_path, flavour="tensorrt_rtx", version="0.9.0")
    with pytest.raises(UserError, match="built with tensorrt_rtx 0.9.0"):
        bundle.engine("pixel_unet")
    with pytest.raises(UserError, match="has no component 'unet'; it has: pixel_unet"):
        bundle.engine("unet")


def test_compute_capability_targets():
    assert supports_compute_capability(["8.0", "12.0"], "12.0") and supports_compute_capability(["8"], "8.0")
    assert not supports_compute_capability(["8.0", "8.6", "8.9", "12.0"], "9.0")
    assert supports_compute_capability(["7.5", "8.6"], "7.5") and not supports_compute_capability(["8.6"], "8.9")


def test_onnxruntime_bundle_runs_and_matches_torch(tmp_path):
    out = build_bundle(
        "ddrm",
        {"pixel_unet": (tiny_onnx(), tiny_spec())},
        tmp_path / "cpu.plan",
        backend="onnxruntime",
        precision="fp32",
        profile=PROFILE,
        meta={"vae": {"downsample": 1}},
        model_set="tiny",
    )
    bundle = Bundle.open(out)
    record = bundle.manifest["components"]["pixel_unet"]
    assert record["onnx_sha256"] == onnx_digest(tiny_onnx()) and bundle.manifest["tensorrt"] is None
    assert len(onnx.load_from_string(bundle.read("pixel_unet.onnx")).graph.initializer) > 0  # weights embedded
    engine = bundle.engines("cpu")["pixel_unet"]
    reference = TorchEngine(tiny_module(), tiny_spec(), "cpu")
    inputs = tiny_inputs(2, 24, 32)
    expected, actual = reference(**inputs), engine(**inputs)
    for name in expected:
        assert (actual[name] - expected[name]).abs().max() <= 1e-5 * expected[name].abs().max()
    assert "runs here: yes, with onnxruntime" in describe_bundle(out)


def test_build_bundle_refuses_incomplete_or_mislabelled_input(tmp_path):
    with pytest.raises(UserError, match="method 'reld' needs components encoder, decoder, decoder_vjp, unet"):
        build_bundle("reld", {"pixel_unet": (tiny_onnx(), tiny_spec())}, tmp_path / "x.plan", backend="onnxruntime")
    with pytest.raises(UserError, match="precision fp16 was asked for, but its ONNX graph computes in fp32 only"):
        build_bundle("ddrm", {"pixel_unet": (tiny_onnx(), tiny_spec())}, tmp_path / "x.plan", backend="onnxruntime")
    with pytest.raises(UserError, match="unknown backend 'tflite'"):
        build_bundle("ddrm", {"pixel_unet": (tiny_onnx(), tiny_spec())}, tmp_path / "x.plan", backend="tflite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not HAS_RTX, reason="needs tensorrt-rtx, which builds engines without a GPU")
def test_tensorrt_bundle_records_how_it_was_built(tmp_path):
    out = build_bundle(
        "ddrm",
        {"pixel_unet": (tiny_onnx("float16"), tiny_spec("float16"))},
        tmp_path / "gpu.plan",
        precision="fp16",
        profile=PROFILE,
        compute_capabilities=["8.6", "8.9"],
    )
    bundle = Bundle.open(out)
    version = installed_flavours()["tensorrt_rtx"]
    assert bundle.manifest["tensorrt"] == {
        "flavour": "tensorrt_rtx",
        "version": version,
        "compute_capabilities": ["8.6", "8.9"],
    }
    assert bundle.profiles("pixel_unet")[0].max == {"B": 4, "H": 64, "W": 64, "M": 1024}  # M: context tokens of tiled runs
    assert len(bundle.read("pixel_unet.plan")) > 10_000
    if not torch.cuda.is_available():
        summary = describe_bundle(out)
        assert "integrity: all 1 entries match their sha256" in summary
        assert "runs here: no: gpu.plan holds TensorRT engines, which need an NVIDIA GPU" in summary
        with pytest.raises(UserError, match="need an NVIDIA GPU"):
            bundle.engine("pixel_unet")
