"""``trt-restore restore`` end to end on the tiny model set: every method, batches, intermediates, backends."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import trt_restore.api
from trt_restore.cli import build_parser, main
from trt_restore.cli.arguments import method_settings
from trt_restore.data import dataset_images
from trt_restore.errors import UserError
from trt_restore.io import fit_alpha, read_image, write_image
from trt_restore.jobs.report import EXIT_SOME_FAILED
from trt_restore.methods import BACKENDS, NOISE_SOURCES
from trt_restore.metrics import psnr
from trt_restore.pipelines import PIPELINES
from trt_restore.pipelines.reld import V_GRADIENTS
from trt_restore.runtime.graphs import GRAPH_MODES

TINY = ("--model-set", "tiny")
FEW_STEPS = {"reld": ("--iterations", "2")} | {method: ("--steps", "2") for method in PIPELINES if method != "reld"}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Small inputs: a Set5 image at 16×16 (for SR) and 32×32, its gray version, and a
    synthetic 26×38 RGBA image whose size fits no network (so it is padded)."""
    try:
        set5 = read_image(dataset_images("test/Set5")[0]).data
    except UserError as error:
        pytest.skip(f"Set5 is not available: {error}")
    folder = tmp_path_factory.mktemp("inputs")
    paths = {name: folder / f"{name}.png" for name in ("lr", "clean", "gray", "padded")}
    write_image(paths["lr"], F.interpolate(set5[None], size=(16, 16), mode="area")[0])
    clean = F.interpolate(set5[None], size=(32, 32), mode="area")[0]
    write_image(paths["clean"], clean)
    write_image(paths["gray"], clean.mean(dim=0, keepdim=True))
    generator = torch.Generator().manual_seed(0)
    write_image(
        paths["padded"], torch.rand(3, 26, 38, generator=generator), alpha=torch.rand(1, 26, 38, generator=generator)
    )
    return paths


def restore(source: Path, output: Path, method: str, task: str, *options: str) -> int:
    flags = ["--method", method, "--task", task, "--sigma", "0.02", *TINY, *FEW_STEPS[method], *options]
    return main(["restore", *flags, str(source), "-o", str(output)])


def single_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("method", "task", "source", "options"),
    [
        ("reld", "sr4", "lr", ()),
        ("reld", "denoise", "padded", ("--v-grad", "encoder")),  # the cheaper gradient, to keep the tests fast
        ("reld", "deblur-gauss", "clean", ("--v-grad", "encoder")),
        ("reld", "inpaint", "clean", ("--v-grad", "encoder", "--param", "fraction=0.5")),
        ("ddrm", "sr4", "lr", ()),
        ("ddrm", "denoise", "clean", ()),
        ("ddrm", "deblur-gauss", "padded", ()),
        ("ddrm", "inpaint", "clean", ("--param", "fraction=0.5")),
        ("ddrm", "colorize", "gray", ()),
        ("ldm-sr", "sr4", "lr", ()),
        ("ddrm-ldm", "sr4", "lr", ()),
        ("indigo-pixel", "sr4", "lr", ()),
        ("indigo-pixel", "denoise", "padded", ()),
        ("indigo-latent", "sr4", "lr", ()),
        ("indigo-latent", "denoise", "clean", ()),
    ],
)
def test_every_method_restores_its_tasks(images, tmp_path, method, task, source, options):
    output = tmp_path / "restored.png"
    assert restore(images[source], output, method, task, *options) == 0
    given, restored = read_image(images[source]), read_image(output)
    scale = 4 if task == "sr4" else 1
    assert restored.data.shape == (3, given.data.shape[1] * scale, given.data.shape[2] * scale)
    assert torch.isfinite(restored.data).all() and restored.data.std() > 0
    if given.alpha is None:
        assert restored.alpha is None
    else:
        assert torch.allclose(restored.alpha, given.alpha, atol=0.5 / 255)


def test_sr_resamples_the_alpha_plane(images, tmp_path):
    output = tmp_path / "big.png"
    small = tmp_path / "small.png"
    padded = read_image(images["padded"])
    write_image(small, padded.data[:, :16, :20], alpha=padded.alpha[:, :16, :20])
    assert restore(small, output, "ldm-sr", "sr4") == 0
    restored = read_image(output)
    assert restored.data.shape == (3, 64, 80)
    assert torch.allclose(restored.alpha, fit_alpha(padded.alpha[:, :16, :20], (64, 80)), atol=0.5 / 255)


@pytest.mark.parametrize(("method", "task"), [("ldm-sr", "denoise"), ("ddrm", "sr2-gauss")])
def test_an_unsupported_method_and_task_exits_2_and_writes_nothing(images, tmp_path, capsys, method, task):
    outputs = tmp_path / "outputs"
    status = restore(images["clean"], outputs, method, task, "--save-intermediates", str(tmp_path / "steps"))
    assert status == 2
    assert f"does not support task '{task}'" in single_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_with_a_corrupt_file_restores_the_others_and_exits_1(images, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("a.png", "c.png"):
        (inputs / name).write_bytes(images["clean"].read_bytes())
    (inputs / "b.png").write_bytes(images["clean"].read_bytes()[:200])  # truncated
    outputs = tmp_path / "outputs"
    assert restore(inputs, outputs, "ddrm", "denoise", "--quiet") == EXIT_SOME_FAILED
    assert sorted(p.name for p in outputs.glob("*.png")) == ["a.png", "c.png"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "b.png" in err[0] and "corrupt" in err[0] and "1 of 3 images failed" in err[1]
    # each image is restored as if it were alone: same seed, same engines, same result
    assert torch.equal(read_image(outputs / "a.png").data, read_image(outputs / "c.png").data)


def test_save_intermediates_every_k_steps(images, tmp_path):
    steps = tmp_path / "steps"
    output = tmp_path / "out.png"
    options = ("--steps", "4", "--save-intermediates", str(steps), "--every", "2")
    assert restore(images["lr"], output, "ldm-sr", "sr4", *options) == 0
    assert sorted(p.name for p in steps.iterdir()) == ["lr_step002.png", "lr_step004.png"]
    assert read_image(steps / "lr_step004.png").data.shape == read_image(output).data.shape


def test_torch_and_onnxruntime_backends_agree(images, tmp_path):
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        path = tmp_path / f"{backend}.png"
        assert restore(images["lr"], path, "ddrm", "sr4", "--backend", backend, "--bits", "16", "--threads", "2") == 0
        outputs[backend] = read_image(path).data
    assert psnr(outputs["torch"][None], outputs["onnxruntime"][None]) >= 45


def test_engines_are_loaded_once_for_images_of_any_size(images, tmp_path, monkeypatch):
    import trt_restore.api

    loads = []
    load_models = trt_restore.api.load_models

    def counted(*args, **kwargs):
        loads.append(kwargs["image_size"])
        return load_models(*args, **kwargs)

    monkeypatch.setattr(trt_restore.api, "load_models", counted)
    outputs = tmp_path / "outputs"
    sources = [str(images[name]) for name in ("clean", "padded")]
    flags = ["--method", "ddrm", "--task", "denoise", "--sigma", "0.05", *TINY, *FEW_STEPS["ddrm"], "--backend", "onnxruntime"]
    assert main(["restore", *flags, *sources, "-o", str(outputs)]) == 0
    assert loads == [(32, 32)]
    assert read_image(outputs / "padded.png").data.shape == (3, 26, 38)


def test_verbose_logs_per_component_timings(images, tmp_path, caplog):
    caplog.set_level("INFO", logger="trt_restore")
    assert restore(images["clean"], tmp_path / "out.png", "ddrm", "denoise", "-v") == 0
    messages = [record.getMessage() for record in caplog.records if record.name == "trt_restore.jobs.timing"]
    assert any(message.startswith("load engines: ") for message in messages)
    assert any(message.startswith(f"restore {images['clean']}: ") for message in messages)
    assert "  pixel_unet: 2 calls" in "\n".join(messages)


def test_method_settings_become_flags_with_no_default():
    settings = method_settings()
    for method, pipeline in PIPELINES.items():
        for config_field in dataclasses.fields(pipeline.Config):
            assert method in settings[config_field.name].per_method
    argv = ["restore", "--task", "sr4", "in.png", "-o", "out.png", "--steps", "7", "--adapt", "--v-grad", "encoder"]
    args = build_parser().parse_args(argv)
    assert (args.setting_steps, args.setting_adapt, args.setting_v_grad) == (7, True, "encoder")
    assert args.setting_iterations is None and args.setting_eta is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ("--method", "ddrm", "--task", "denoise", "--sigma", "0.05", "--iterations", "3"),
            "--iterations is a setting of reld, not of ddrm",
        ),
        (("--method", "ddrm", "--save-intermediates", "x", "--task", "denoise", "--sigma", "0.05", "--every", "0"), None),
        (("--method", "ddrm", "--task", "denoise", "--sigma", "0.05", "--every", "2"), "--every applies to --save-intermediates"),
        (("--method", "ddrm"), "--task is required"),
        (("--method", "ddrm", "--task", "nonsense"), "unknown task 'nonsense'"),
        (("--method", "ddrm", "--task", "denoise", "--sigma", "0.05", "--param", "radius=2"), "has no parameter radius"),
        (("--method", "ddrm", "--task", "denoise", "--sigma", "0.05", "--backend", "tensorrt"), "the tensorrt backend runs built engines"),
        pytest.param(
            ("--method", "ddrm", "--task", "denoise", "--sigma", "0.05", "--device", "cuda"),
            "needs an NVIDIA GPU with CUDA, and this machine has none",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
    ],
)
def test_request_errors_exit_2_before_anything_is_written(images, tmp_path, capsys, options, expected):
    status = main(["restore", *TINY, *options, str(images["clean"]), "-o", str(tmp_path / "out.png")])
    assert status == 2
    if expected is None:  # a usage error, reported by argparse
        assert "--every: must be at least 1" in capsys.readouterr().err
    else:
        assert expected in single_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "option", "choices"),
    [
        (("restore", "--task", "denoise"), "--backend", BACKENDS),
        (("restore", "--task", "denoise"), "--noise", NOISE_SOURCES),
        (("restore", "--task", "sr4", "--method", "ddrm"), "--cuda-graphs", GRAPH_MODES),
        (("restore", "--task", "sr4"), "--v-grad", V_GRADIENTS),
        (("serve",), "--backend", BACKENDS),
    ],
)
def test_a_value_outside_a_flags_choices_is_a_usage_error_before_anything_loads(
    tmp_path, capsys, monkeypatch, command, option, choices
):
    def never(*args, **kwargs):
        raise AssertionError("engines were loaded for a command line that argparse refuses")

    monkeypatch.setattr(trt_restore.api, "load_models", never)
    paths = [str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png")] if command[0] == "restore" else []
    assert main([*command, option, "bogus", *paths]) == 2
    error = single_line_error(capsys)
    assert f"argument {option}: invalid choice: 'bogus'" in error
    assert all(choice in error for choice in choices)
    assert list(tmp_path.iterdir()) == []


def test_output_paths(images, tmp_path, capsys):
    pair = tmp_path / "pair"
    pair.mkdir()
    for name in ("x.png", "x.bmp"):
        write_image(pair / name, read_image(images["clean"]).data)
    status = main(["restore", "--task", "denoise", "--sigma", "0.05", *TINY, str(pair), "-o", str(tmp_path / "out")])
    assert status == 2 and "would both be written to" in single_line_error(capsys)
    status = main(
        ["restore", "--task", "denoise", "--sigma", "0.05", *TINY, str(pair / "*.png"), str(pair / "x.bmp"), "-o", str(tmp_path / "o.png")]
    )
    assert status == 2 and "2 inputs need an output folder" in single_line_error(capsys)
    assert not (tmp_path / "out").exists()
