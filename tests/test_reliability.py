"""Reliability of ``trt-restore restore``: one-line errors that write nothing, ``--resume``, the batch
summary, interruption (SIGINT, SIGTERM) without partial outputs, and the retry on smaller tiles
when memory runs out. Runs the tiny model set with DDRM in two steps on 32×32 images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import trt_restore.api
import trt_restore.io
import trt_restore.jobs.batch
from trt_restore.cli import EXIT_INTERRUPTED, main
from trt_restore.errors import UserError
from trt_restore.io import read_image, write_image
from trt_restore.jobs.report import EXIT_SOME_FAILED, SUMMARY_NAME
from trt_restore.jobs.retry import is_out_of_memory
from trt_restore.runtime.bundle import MANIFEST_NAME
from trt_restore.runtime.tiling import TiledEngine
from trt_restore.runtime.torch_backend import TorchEngine

TINY = ("--model-set", "tiny")
DDRM = ("--method", "ddrm", "--task", "denoise", "--sigma", "0.05", *TINY, "--steps", "2", "--quiet")
SIZE = 32
INSTALLED_TENSORRT = {"tensorrt_rtx": "1.7.0"}


def restore(*argv: str | Path) -> int:
    return main(["restore", *DDRM, *map(str, argv)])


def single_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def summary_of(folder: Path) -> dict:
    return json.loads((folder / SUMMARY_NAME).read_text())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder of five random 32×32 RGB images."""
    folder = tmp_path_factory.mktemp("inputs")
    generator = torch.Generator().manual_seed(0)
    for index in range(5):
        write_image(folder / f"image{index}.png", torch.rand(3, SIZE, SIZE, generator=generator))
    return folder


@pytest.fixture(scope="module")
def cpu_bundle(tmp_path_factory) -> Path:
    """A real onnxruntime bundle of DDRM on the tiny model set."""
    path = tmp_path_factory.mktemp("bundles") / "ddrm.plan"
    build = ("build", "--backend", "onnxruntime", "--method", "ddrm", *TINY, "--precision", "fp32")
    assert main([*build, "--min", "32", "32", "--opt", "32", "32", "--max", "64", "64", "-o", str(path)]) == 0
    return path


def rewrite_bundle(source: Path, target: Path, edit_manifest=lambda manifest: None, edit_entry=None) -> Path:
    """Copy a bundle with its manifest edited in place (``edit_manifest(dict)``) or its ONNX entry's bytes changed."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as copy:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == MANIFEST_NAME:
                manifest = json.loads(data)
                edit_manifest(manifest)
                data = json.dumps(manifest).encode()
            elif edit_entry is not None:
                data = edit_entry(data)
            copy.writestr(info.filename, data)
    return target


def as_tensorrt(flavour: str, version: str, capabilities: list[str]) -> Callable[[dict], None]:
    """A manifest edit that makes the bundle claim TensorRT engines of that flavour, version and GPU targets."""

    def edit(manifest: dict) -> None:
        manifest["backend"] = "tensorrt"
        manifest["tensorrt"] = {"flavour": flavour, "version": version, "compute_capabilities": capabilities}

    return edit


def flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def write_pixels(path: Path, array: np.ndarray) -> Path:
    PILImage.fromarray(array).save(path)
    return path


def file_with(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def gif_named_png(folder: Path) -> Path:
    path = folder / "anim.png"
    PILImage.new("RGB", (8, 8)).save(path, format="GIF")
    return path


@dataclass(frozen=True)
class ErrorCase:
    """``arguments(folder, images, bundle)``: what follows ``restore`` and the base flags; ``folder``
    holds files the case makes, ``images`` the good inputs, ``bundle`` a real onnxruntime bundle."""

    arguments: Callable[[Path, Path, Path], list]
    expected: str
    base: tuple[str, ...] = DDRM


WITH_BUNDLE = ("--task", "denoise", "--sigma", "0.05", "--steps", "2", "--quiet")
FIRST = "image0.png"


def bundle_case(edit: Callable[[Path, Path], Path], expected: str) -> ErrorCase:
    """A case that restores with ``--engine edit(bundle, folder)``."""
    return ErrorCase(lambda f, i, b: ["--engine", edit(b, f), i / FIRST], expected, WITH_BUNDLE)


ERROR_CASES = {
    "missing input": ErrorCase(lambda f, i, b: [f / "absent.png"], "does not exist; give an image file"),
    "empty file": ErrorCase(lambda f, i, b: [file_with(f, "empty.png", b"")], "is empty (0 bytes)"),
    "truncated file": ErrorCase(
        lambda f, i, b: [file_with(f, "cut.png", (i / FIRST).read_bytes()[:300])], "is truncated or corrupt"
    ),
    "not an image": ErrorCase(
        lambda f, i, b: [file_with(f, "notes.png", b"shopping list\n")], "is not a PNG, JPEG, TIFF or BMP image"
    ),
    "foreign image format": ErrorCase(
        lambda f, i, b: [gif_named_png(f)], "is a GIF image; trt-restore reads PNG, JPEG, TIFF and BMP"
    ),
    "float samples": ErrorCase(
        lambda f, i, b: [write_pixels(f / "float.tif", np.zeros((8, 8), np.float32))],
        "has pixel format F, which trt-restore does not read",
    ),
    "32-bit samples": ErrorCase(
        lambda f, i, b: [write_pixels(f / "deep.tif", np.zeros((8, 8), np.int32))],
        "has pixel format I, which trt-restore does not read",
    ),
    "16 bits into JPEG": ErrorCase(
        lambda f, i, b: [i / FIRST, "--bits", "16", "-o", f.parent / "x.jpg"], "stores 8-bit samples only"
    ),
    "1x1 image": ErrorCase(
        lambda f, i, b: [write_pixels(f / "dot.png", np.zeros((1, 1, 3), np.uint8))],
        "is 1x1 pixels; images must be at least 2x2",
    ),
    "too many pixels": ErrorCase(
        lambda f, i, b: [i / FIRST, "--max-pixels", "1000"],
        "32x32 = 1,024 pixels, more than --max-pixels 1000; split it into smaller images or raise --max-pixels",
    ),
    "unknown method": ErrorCase(
        lambda f, i, b: [i / FIRST, "--method", "magic"], "argument --method: invalid choice: 'magic'"
    ),
    "unknown task": ErrorCase(lambda f, i, b: [i / FIRST, "--task", "sharpen"], "unknown task 'sharpen'"),
    "method without the task": ErrorCase(
        lambda f, i, b: [i / FIRST, "--method", "ldm-sr"], "method 'ldm-sr' does not support task 'denoise'"
    ),
    "missing model set": ErrorCase(
        lambda f, i, b: [i / FIRST, "--method", "ddrm", "--model-set", f / "nonexistent"],
        "not found; pass an existing diffusers model folder or a hub id",
        base=WITH_BUNDLE,
    ),
    "tile too small": ErrorCase(lambda f, i, b: [i / FIRST, "--tile", "4"], "is too small"),
    "output under a file": ErrorCase(
        lambda f, i, b: [i / FIRST, i / "image1.png", "-o", file_with(f, "taken", b"") / "out"],
        "cannot create the output folder",
    ),
    "output file in a missing folder": ErrorCase(
        lambda f, i, b: [i / FIRST, "-o", f.parent / "out" / "deeper" / "x.png"],
        "does not exist; create it or choose another output path",
    ),
    "missing bundle": bundle_case(lambda b, f: f / "absent.plan", "not found; build one with `trt-restore build`"),
    "foreign bundle": bundle_case(
        lambda b, f: file_with(f, "photo.plan", b"PK\x03\x04 not really a zip"), "is not a trt-restore bundle"
    ),
    "truncated bundle": bundle_case(
        lambda b, f: file_with(f, "cut.plan", b.read_bytes()[: b.stat().st_size // 2]),
        "is not a trt-restore bundle (not a zip archive, or truncated)",
    ),
    "damaged bundle entry": bundle_case(
        lambda b, f: rewrite_bundle(b, f / "x.plan", edit_entry=flip_middle_byte), "does not match its recorded sha256"
    ),
    "newer bundle format": bundle_case(
        lambda b, f: rewrite_bundle(b, f / "x.plan", lambda manifest: manifest.update(format_version=99)),
        "has bundle format version 99, and this trt-restore reads version 2",
    ),
    "other TensorRT flavour": bundle_case(
        lambda b, f: rewrite_bundle(b, f / "x.plan", as_tensorrt("tensorrt", "10.3.0", ["8.6"])),
        "built with tensorrt 10.3.0, but this machine has tensorrt_rtx 1.7.0; `pip install tensorrt==10.3.0`",
    ),
    "other TensorRT version": bundle_case(
        lambda b, f: rewrite_bundle(b, f / "x.plan", as_tensorrt("tensorrt_rtx", "1.6.0", ["8.6"])),
        "engines run only on the version that built them",
    ),
    "other GPU": bundle_case(
        lambda b, f: rewrite_bundle(b, f / "x.plan", as_tensorrt("tensorrt_rtx", "1.7.0", ["8.6"])),
        "built for GPU compute capability 8.6, but this GPU has 7.5",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_each_error_is_one_line_exits_2_and_writes_nothing(case, tmp_path, inputs, cpu_bundle, capsys, monkeypatch):
    # The machine as the bundle reader sees it: TensorRT-RTX 1.7.0 and a GPU of compute capability 7.5.
    monkeypatch.setattr("trt_restore.runtime.bundle.installed_flavours", lambda: dict(INSTALLED_TENSORRT))
    monkeypatch.setattr("trt_restore.runtime.bundle.compute_capability", lambda device=None: "7.5")
    made = tmp_path / "in"
    made.mkdir()
    arguments = ERROR_CASES[case].arguments(made, inputs, cpu_bundle)
    if "-o" not in arguments:
        arguments += ["-o", tmp_path / "out"]
    before = sorted(tmp_path.rglob("*"))
    status = main(["restore", *ERROR_CASES[case].base, *map(str, arguments)])
    assert status == 2
    assert ERROR_CASES[case].expected in single_line_error(capsys)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="permissions do not bind root")
def test_a_read_only_output_folder_is_refused(inputs, tmp_path, capsys):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert restore(inputs / FIRST, "-o", folder / "x.png") == 2
        assert "cannot write in the output folder" in single_line_error(capsys)
        assert files_in(folder) == []
    finally:
        folder.chmod(0o755)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        main(["--debug", "restore", *DDRM, str(tmp_path / "absent.png"), "-o", str(tmp_path / "out.png")])


def test_summary_counts_each_outcome_and_exit_1_when_one_failed(inputs, tmp_path, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        (folder / name).write_bytes((inputs / FIRST).read_bytes())
    (folder / "b.png").write_bytes((inputs / FIRST).read_bytes()[:200])
    outputs = tmp_path / "out"
    assert restore(folder, "--seed", "3", "-o", outputs) == EXIT_SOME_FAILED
    assert files_in(outputs) == ["a.png", "c.png", SUMMARY_NAME]
    summary = summary_of(outputs)
    assert {key: summary[key] for key in ("method", "task", "sigma", "seed", "backend", "interrupted")} == {
        "method": "ddrm", "task": "denoise", "sigma": 0.05, "seed": 3, "backend": "torch", "interrupted": False
    }
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1, "not_run": 0}
    statuses = {Path(record["input"]).name: record for record in summary["files"]}
    assert [statuses[name]["status"] for name in ("a.png", "b.png", "c.png")] == ["done", "failed", "done"]
    assert "truncated or corrupt" in statuses["b.png"]["reason"] and statuses["b.png"]["seconds"] is None
    assert statuses["a.png"]["output"] == str(outputs / "a.png") and statuses["a.png"]["seconds"] > 0
    mean = (statuses["a.png"]["seconds"] + statuses["c.png"]["seconds"]) / 2
    assert summary["seconds_per_image"] == pytest.approx(mean)
    assert "1 of 3 images failed" in capsys.readouterr().err


def test_a_single_image_writes_a_summary_only_when_asked(inputs, tmp_path):
    assert restore(inputs / FIRST, "-o", tmp_path / "one.png") == 0
    assert files_in(tmp_path) == ["one.png"]
    assert restore(inputs / FIRST, "-o", tmp_path / "two.png", "--summary", tmp_path / "logs" / "run.json") == 0
    summary = json.loads((tmp_path / "logs" / "run.json").read_text())
    assert summary["counts"]["done"] == 1 and summary["files"][0]["output"] == str(tmp_path / "two.png")


def test_resume_skips_complete_outputs_and_redoes_missing_and_broken_ones(inputs, tmp_path, caplog):
    outputs = tmp_path / "out"
    assert restore(inputs, "-o", outputs) == 0
    reference = {name: read_image(outputs / name).data for name in files_in(outputs) if name.endswith(".png")}
    kept = (outputs / "image1.png").stat()
    (outputs / "image0.png").unlink()
    (outputs / "image2.png").write_bytes((outputs / "image2.png").read_bytes()[:100])  # e.g. copied over by hand
    assert restore(inputs, "-o", outputs, "--resume") == 0
    assert "image2.png exists but does not decode" in caplog.text
    summary = summary_of(outputs)
    assert summary["counts"] == {"done": 2, "skipped": 3, "failed": 0, "not_run": 0}
    done = sorted(Path(record["input"]).name for record in summary["files"] if record["status"] == "done")
    assert done == ["image0.png", "image2.png"]
    assert (outputs / "image1.png").stat().st_mtime_ns == kept.st_mtime_ns  # not written again
    for name, data in reference.items():  # the same seed restores the same image
        assert torch.equal(read_image(outputs / name).data, data)


def test_an_interrupted_write_leaves_no_file(inputs, tmp_path, monkeypatch, capsys):
    def encode_half_then_interrupt(stream, pixels, fmt, bit_depth):
        stream.write(b"\x89PNG half an image")
        raise KeyboardInterrupt

    monkeypatch.setattr(trt_restore.io, "_encode", encode_half_then_interrupt)
    outputs = tmp_path / "out"
    outputs.mkdir()
    assert restore(inputs / FIRST, "-o", outputs / "x.png", "--summary", tmp_path / "run.json") == EXIT_INTERRUPTED
    assert "interrupted (0 of 1 images restored" in single_line_error(capsys)
    assert files_in(outputs) == []
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["interrupted"] and summary["counts"]["not_run"] == 1


def test_sigterm_stops_like_ctrl_c_and_saves_the_summary(inputs, tmp_path, monkeypatch, capsys):
    write = trt_restore.jobs.batch.write_restored
    writes = []

    def terminate_on_the_second_write(*args, **kwargs):
        writes.append(args[0])
        if len(writes) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, before the write
        write(*args, **kwargs)

    monkeypatch.setattr(trt_restore.jobs.batch, "write_restored", terminate_on_the_second_write)
    handler = signal.getsignal(signal.SIGTERM)
    outputs = tmp_path / "out"
    assert restore(inputs, "-o", outputs) == EXIT_INTERRUPTED
    assert signal.getsignal(signal.SIGTERM) is handler
    assert "1 of 5 images restored" in single_line_error(capsys)
    assert files_in(outputs) == ["image0.png", SUMMARY_NAME]
    summary = summary_of(outputs)
    assert summary["interrupted"] and summary["counts"] == {"done": 1, "skipped": 0, "failed": 0, "not_run": 4}


def test_a_batch_interrupted_by_sigint_resumes_with_the_rest(inputs, tmp_path):
    """The real thing: ``trt-restore`` in its own process, stopped by SIGINT after two images."""
    outputs = tmp_path / "out"
    command = [sys.executable, "-m", "trt_restore.cli", "restore", *DDRM, str(inputs), "-o", str(outputs)]
    # A shell may start background jobs with SIGINT ignored; the child gets Python's usual Ctrl-C handling.
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    deadline = time.monotonic() + 120
    while len(list(outputs.glob("*.png"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_INTERRUPTED, err
    written = files_in(outputs)
    assert SUMMARY_NAME in written and not [name for name in written if name.startswith(".")]  # no temporary files
    restored = [name for name in written if name.endswith(".png")]
    assert 2 <= len(restored) < 5  # interrupted after at least two images, before the last
    for name in restored:
        assert read_image(outputs / name).data.shape == (3, SIZE, SIZE)
    summary = summary_of(outputs)
    assert summary["interrupted"] and summary["counts"]["done"] == len(restored)
    assert summary["counts"]["not_run"] == 5 - len(restored)

    assert restore(inputs, "-o", outputs, "--resume") == 0
    summary = summary_of(outputs)
    assert summary["counts"] == {"done": 5 - len(restored), "skipped": len(restored), "failed": 0, "not_run": 0}
    assert files_in(outputs) == sorted([*(f"image{index}.png" for index in range(5)), SUMMARY_NAME])


def out_of_memory_after(calls: list[int | None], failures: int, error: BaseException):
    """A stand-in for ``api.restore`` that raises ``error`` on its first ``failures`` calls, then restores;
    each call's tile (None: untiled) is appended to ``calls``."""
    real = trt_restore.api.restore

    def restore_or_fail(*args, models, **kwargs):
        engine = models.engines["pixel_unet"]
        calls.append(engine.tile[0] if isinstance(engine, TiledEngine) else None)
        if len(calls) <= failures:
            raise error
        return real(*args, models=models, **kwargs)

    return restore_or_fail


def first_input_twice(inputs: Path, folder: Path) -> Path:
    """``folder/two``: a batch of two copies of the first input."""
    two = folder / "two"
    two.mkdir()
    for name in ("a.png", "b.png"):
        (two / name).write_bytes((inputs / FIRST).read_bytes())
    return two


def test_out_of_memory_retries_on_half_size_tiles_for_the_rest_of_the_batch(
    inputs, cpu_bundle, tmp_path, monkeypatch, caplog
):
    """The bundle's engines run on tiles of its largest profile size, 64, at first; the retry halves that."""
    calls: list[int | None] = []
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(trt_restore.api, "restore", out_of_memory_after(calls, 1, error))
    two = first_input_twice(inputs, tmp_path)
    outputs = tmp_path / "out"
    assert main(["restore", *WITH_BUNDLE, "--engine", str(cpu_bundle), str(two), "-o", str(outputs)]) == 0
    assert calls == [64, 32, 32]
    assert "out of memory restoring" in caplog.text and "retrying with --tile 32" in caplog.text
    summary = summary_of(outputs)
    assert summary["counts"]["done"] == 2 and summary["backend"] == "onnxruntime"


def test_the_retry_closes_the_engines_that_ran_out_of_memory_before_loading_new_ones(inputs, tmp_path, monkeypatch):
    """On torch, the engines run on 512-pixel tiles at first; the batch closes the retry's engines at its end."""
    calls: list[int | None] = []
    events: list[str] = []
    load_models, close = trt_restore.api.load_models, TorchEngine.close

    def logged_load(*args, **kwargs):
        events.append("load")
        return load_models(*args, **kwargs)

    def logged_close(engine):
        events.append(f"close {engine.spec.name}")
        close(engine)

    monkeypatch.setattr(trt_restore.api, "load_models", logged_load)
    monkeypatch.setattr(TorchEngine, "close", logged_close)
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(trt_restore.api, "restore", out_of_memory_after(calls, 1, error))
    two = first_input_twice(inputs, tmp_path)
    assert restore(two, "-o", tmp_path / "out") == 0
    assert calls == [512, 256, 256]
    assert events == ["load", "close pixel_unet", "load", "close pixel_unet"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Out of memory"), True),
        (MemoryError(), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_is_out_of_memory(error, expected):
    assert is_out_of_memory(error) is expected


def test_out_of_memory_halves_the_tile_that_failed_until_it_fits(inputs, tmp_path, monkeypatch, caplog):
    """A 2048-pixel tile that runs out of memory is retried on 1024, then 512, not from the default tile."""
    calls: list[int | None] = []
    monkeypatch.setattr(trt_restore.api, "restore", out_of_memory_after(calls, 2, MemoryError()))
    assert restore(inputs / FIRST, "--tile", "2048", "-o", tmp_path / "x.png") == 0
    assert calls == [2048, 1024, 512]
    assert "retrying with --tile 1024" in caplog.text and "retrying with --tile 512" in caplog.text


def test_out_of_memory_on_the_smallest_tile_says_to_pass_a_smaller_tile(inputs, cpu_bundle, tmp_path, monkeypatch, capsys):
    calls: list[int | None] = []
    monkeypatch.setattr(trt_restore.api, "restore", out_of_memory_after(calls, 99, MemoryError()))
    arguments = [*WITH_BUNDLE, "--engine", str(cpu_bundle), "--tile", "32", str(inputs / FIRST)]
    assert main(["restore", *arguments, "-o", str(tmp_path / "x.png")]) == 2
    assert calls == [32, 16, 8]  # two size multiples (4) of the tiny networks at the least
    expected = f"out of memory restoring {inputs / FIRST} with --tile 8; pass a smaller --tile"
    assert expected in single_line_error(capsys)
    assert files_in(tmp_path) == []


def test_other_runtime_errors_are_not_taken_for_out_of_memory(inputs, tmp_path, monkeypatch):
    calls: list[int | None] = []
    monkeypatch.setattr(trt_restore.api, "restore", out_of_memory_after(calls, 1, RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        restore(inputs / FIRST, "-o", tmp_path / "x.png")
    assert len(calls) == 1 and files_in(tmp_path) == []  # not retried
