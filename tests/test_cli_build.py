"""``trt-restore export``, ``build`` and ``info``, and ``restore --engine`` with the bundles they make."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
import struct
import zipfile
from pathlib import Path

import onnx
import pytest
import torch

from trt_restore.cli import main
from trt_restore.cli.info import EXIT_CANNOT_RUN
from trt_restore.engine.bundle_writer import write_bundle
from trt_restore.io import read_image, write_image
from trt_restore.jobs.request import DEFAULT_TASK_KEY
from trt_restore.metrics import psnr
from trt_restore.pipelines.schedule import SCHEDULER_DEFAULTS
from trt_restore.runtime.bundle import Bundle

TINY = ("--model-set", "tiny")
PROFILE = ("--min", "32", "32", "--opt", "64", "64", "--max", "128", "128")
ZIP_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # signature ... file name length, extra field length


def run(*argv: str) -> tuple[int, str]:
    """``main(argv)`` and what it printed on stdout."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(list(argv))
    return status, printed.getvalue()


def single_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def low_res(tmp_path_factory) -> Path:
    """A smooth 16×16 RGB image, the input of ×4 super-resolution."""
    ramp = torch.linspace(0.1, 0.9, 16)
    path = tmp_path_factory.mktemp("inputs") / "low_res.png"
    write_image(
        path, torch.stack([ramp[:, None].expand(16, 16), ramp[None, :].expand(16, 16), 1 - ramp[:, None] * ramp])
    )
    return path


@pytest.fixture(scope="module")
def cpu_bundle(tmp_path_factory) -> tuple[Path, str]:
    """An onnxruntime bundle of ldm-sr on the tiny model set, and what ``build`` printed."""
    path = tmp_path_factory.mktemp("bundles") / "ldm_sr_cpu.plan"
    status, printed = run("build", "--method", "ldm-sr", *TINY, "--backend", "onnxruntime", *PROFILE, "-o", str(path))
    assert status == 0
    return path, printed


@pytest.fixture(scope="module")
def rtx_bundle(tmp_path_factory) -> tuple[Path, str]:
    """A TensorRT bundle of ddrm built by TensorRT-RTX, which needs no GPU to build."""
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("tensorrt_rtx is not installed; `pip install tensorrt-rtx` to test the TensorRT build")
    path = tmp_path_factory.mktemp("bundles") / "ddrm_rtx.plan"
    profile = ("--min", "32", "32", "--opt", "64", "64", "--max", "64", "64", "--batch", "1", "1", "1")
    status, printed = run("build", "--method", "ddrm", *TINY, *profile, "--compute-capability", "8.6", "-o", str(path))
    assert status == 0
    return path, printed


def test_export_writes_onnx_graphs_that_the_checker_accepts(tmp_path):
    folder = tmp_path / "onnx"
    status, printed = run("export", "--method", "ldm-sr", *TINY, "--size", "32", "32", "-o", str(folder))
    assert status == 0
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.onnx", "sr_unet.onnx"]
    for path in folder.iterdir():
        onnx.checker.check_model(str(path))
        assert any(line.startswith(f"{path.stem}: {path} (") and line.endswith(" MB)") for line in printed.splitlines())


def test_build_onnxruntime_bundle_lists_its_components(cpu_bundle):
    path, printed = cpu_bundle
    lines = printed.splitlines()
    assert lines[0].startswith(f"{path}: ") and lines[0].endswith("method ldm-sr, onnxruntime, fp32")
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["decoder", "sr_unet"]
    bundle = Bundle.open(path)
    assert bundle.model_set == "tiny" and "sr_vae" in bundle.meta["roles"]


def test_restore_with_the_onnxruntime_bundle_matches_torch(cpu_bundle, low_res, tmp_path):
    bundle, _ = cpu_bundle
    common = ("--task", "sr4", "--steps", "2", "--bits", "16", str(low_res))
    assert main(["--engine", str(bundle), *common, "-o", str(tmp_path / "engine.png")]) == 0  # the shorthand
    assert (
        main(["restore", "--method", "ldm-sr", *TINY, "--backend", "torch", *common, "-o", str(tmp_path / "torch.png")])
        == 0
    )
    from_bundle, from_torch = (read_image(tmp_path / name).data for name in ("engine.png", "torch.png"))
    assert from_bundle.shape == (3, 64, 64)
    assert psnr(from_bundle[None], from_torch[None]) >= 45


def test_restore_with_a_bundle_needs_a_task_it_does_not_record(cpu_bundle, low_res, tmp_path, capsys):
    bundle, _ = cpu_bundle
    assert main(["--engine", str(bundle), str(low_res), "-o", str(tmp_path / "out.png")]) == 2
    assert "--task is required" in single_line_error(capsys)
    assert (
        main(
            ["--engine", str(bundle), "--task", "sr4", "--method", "ddrm", str(low_res), "-o", str(tmp_path / "x.png")]
        )
        == 2
    )
    assert "holds a 'ldm-sr' bundle" in single_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_restore_runs_the_task_a_bundle_records(cpu_bundle, low_res, tmp_path):
    original = Bundle.open(cpu_bundle[0])
    manifest = {k: v for k, v in original.manifest.items() if k not in ("format", "format_version", "entries")}
    manifest["model_set"] = {**manifest["model_set"], "meta": {**original.meta, DEFAULT_TASK_KEY: "sr4"}}
    entries = {entry: original.read(entry) for entry in original.manifest["entries"]}
    bundle = write_bundle(tmp_path / "with_task.plan", manifest, entries)
    assert main(["--engine", str(bundle), "--steps", "1", str(low_res), "-o", str(tmp_path / "out.png")]) == 0
    assert read_image(tmp_path / "out.png").data.shape == (3, 64, 64)


def test_info_on_a_cpu_bundle_exits_0(cpu_bundle, capsys):
    bundle, _ = cpu_bundle
    assert main(["info", str(bundle)]) == 0
    printed = capsys.readouterr().out
    assert "method ldm-sr, model set tiny, precision fp32, backend onnxruntime" in printed
    assert "integrity: all 2 entries match" in printed and "runs here: yes" in printed
    scheduler = next(line for line in printed.splitlines() if line.strip().startswith("scheduler:"))
    for field in SCHEDULER_DEFAULTS:  # every sampling field travels in the manifest and is shown
        assert f"{field}=" in scheduler
    assert "beta_schedule=scaled_linear" in scheduler and "clip_sample=False" in scheduler


def flip_byte_inside(bundle: Path, entry: str) -> None:
    """Invert one byte in the middle of ``entry``'s stored data."""
    with zipfile.ZipFile(bundle) as archive:
        info = archive.getinfo(entry)
    with bundle.open("r+b") as stream:
        stream.seek(info.header_offset)
        header = ZIP_LOCAL_HEADER.unpack(stream.read(ZIP_LOCAL_HEADER.size))
        name_length, extra_length = header[-2:]
        stream.seek(info.header_offset + ZIP_LOCAL_HEADER.size + name_length + extra_length + info.file_size // 2)
        byte = stream.read(1)[0]
        stream.seek(-1, io.SEEK_CUR)
        stream.write(bytes([byte ^ 0xFF]))


def test_a_tampered_bundle_is_refused(cpu_bundle, low_res, tmp_path, capsys):
    tampered = tmp_path / "tampered.plan"
    shutil.copyfile(cpu_bundle[0], tampered)
    flip_byte_inside(tampered, "sr_unet.onnx")
    assert main(["info", str(tampered)]) == 2
    assert "damaged" in single_line_error(capsys)
    outputs = tmp_path / "outputs"
    assert main(["restore", "--engine", str(tampered), "--task", "sr4", str(low_res), "-o", str(outputs)]) == 2
    assert "damaged" in single_line_error(capsys)
    assert not outputs.exists()


def test_build_with_tensorrt_rtx_on_a_machine_without_a_gpu(rtx_bundle, low_res, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the test checks how a GPU bundle is refused without one")
    path, printed = rtx_bundle
    assert printed.splitlines()[1].strip().startswith("pixel_unet: pixel_unet.plan (")
    manifest = Bundle.open(path).manifest
    assert manifest["backend"] == "tensorrt" and manifest["precision"] == "fp16"
    assert manifest["tensorrt"]["flavour"] == "tensorrt_rtx" and manifest["tensorrt"]["compute_capabilities"] == ["8.6"]
    assert manifest["entries"]["pixel_unet.plan"]["size"] > 0

    assert main(["info", str(path)]) == EXIT_CANNOT_RUN
    described = capsys.readouterr().out
    assert "method ddrm, model set tiny, precision fp16, backend tensorrt (tensorrt_rtx" in described
    assert "runs here: no:" in described and "need an NVIDIA GPU, and this machine has none" in described

    assert main(["--engine", str(path), "--task", "sr4", str(low_res), "-o", str(tmp_path / "out.png")]) == 2
    assert "need an NVIDIA GPU, and this machine has none" in single_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--backend", "onnxruntime", "--compute-capability", "8.6"), "apply to --backend tensorrt"),
        (("--backend", "cuda"), "argument --backend: invalid choice: 'cuda'"),
        (("--backend", "onnxruntime", "--precision", "int8"), "unknown precision 'int8'"),
        (("--backend", "onnxruntime", "-o", "missing/x.plan"), "folder missing does not exist"),
    ],
)
def test_build_errors_exit_2(tmp_path, capsys, monkeypatch, options, expected):
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--method", "ddrm", *TINY, "-o", "x.plan", *options]) == 2
    assert expected in single_line_error(capsys)
    assert list(tmp_path.iterdir()) == []
