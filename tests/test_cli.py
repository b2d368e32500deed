"""The command line: argument handling, error reporting and ``trt-restore degrade`` end to end."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
import torch

from trt_restore import cli
from trt_restore.cli import build_parser, expand_shorthand, main
from trt_restore.cli.arguments import noise_level, task_parameter
from trt_restore.errors import UserError
from trt_restore.io import read_image, write_image

COMMANDS = ["restore", "degrade", "build"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--engine", "x.plan", "in.png", "-o", "out.png"],
            ["restore", "--engine", "x.plan", "in.png", "-o", "out.png"],
        ),
        (["--verbose", "--engine=x.plan", "in.png"], ["--verbose", "restore", "--engine=x.plan", "in.png"]),
        (["in.png", "--engine", "x.plan"], ["restore", "in.png", "--engine", "x.plan"]),
        (["restore", "--engine", "x.plan", "in.png"], ["restore", "--engine", "x.plan", "in.png"]),
        (["--debug", "degrade", "--engine", "x"], ["--debug", "degrade", "--engine", "x"]),
        (["degrade", "in.png"], ["degrade", "in.png"]),
        (["--help"], ["--help"]),
        (["typo", "in.png"], ["typo", "in.png"]),
        (["--verbose"], ["--verbose"]),
        ([], []),
    ],
)
def test_expand_shorthand(argv, expected):
    assert expand_shorthand(argv, COMMANDS) == expected


def degrade_args(*extra: str) -> list[str]:
    return ["degrade", "--task", "denoise", "--sigma", "0", "in.png", "-o", "out.png", *extra]


def test_global_flags_work_before_and_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["--verbose", *degrade_args()]).verbose is True
    assert parser.parse_args(["--debug", *degrade_args()]).debug is True
    after = parser.parse_args(degrade_args("--debug", "-v"))
    assert after.debug is True and after.verbose is True
    neither = parser.parse_args(degrade_args())
    assert neither.debug is False and neither.verbose is False


def test_help_does_not_import_torch():
    code = "import sys, trt_restore.cli as c; c.build_parser().format_help(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_noise_level():
    assert noise_level("0.05") == 0.05
    assert noise_level("25/255") == pytest.approx(25 / 255)
    for bad in ["-0.1", "nan", "inf", "1/0", "abc"]:
        with pytest.raises(argparse.ArgumentTypeError):
            noise_level(bad)


def test_task_parameter():
    assert task_parameter("kernel_sigma=1.6") == ("kernel_sigma", 1.6)
    assert task_parameter("kernel_size=9") == ("kernel_size", 9)
    assert task_parameter("kernel=Levin09:3") == ("kernel", "Levin09:3")
    assert task_parameter("box=8,8,16,16") == ("box", (8, 8, 16, 16))
    for bad in ["novalue", "=3", "key=", "two words=1"]:
        with pytest.raises(argparse.ArgumentTypeError):
            task_parameter(bad)


def test_usage_errors_and_version_return_status(capsys):
    assert main([]) == 2
    assert main(["degrade", "in.png"]) == 2
    assert "required" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert "trt-restore" in capsys.readouterr().out


@pytest.fixture
def clean_png(tmp_path):
    """A 32×48 RGB image with alpha, 8-bit, made of smooth ramps."""
    rows = torch.linspace(0.1, 0.9, 32)[:, None].expand(32, 48)
    cols = torch.linspace(0.2, 0.8, 48)[None, :].expand(32, 48)
    path = tmp_path / "clean.png"
    write_image(path, torch.stack([rows, cols, (rows + cols) / 2]), alpha=torch.full((1, 32, 48), 0.6))
    return path


def run_degrade(source, output, *options: str) -> int:
    return main(["degrade", str(source), "-o", str(output), *options])


def test_degrade_without_noise_is_the_operator(clean_png, tmp_path):
    assert run_degrade(clean_png, tmp_path / "same.png", "--task", "denoise", "--sigma", "0") == 0
    clean = read_image(clean_png)
    assert torch.equal(read_image(tmp_path / "same.png").data, clean.data)

    assert run_degrade(clean_png, tmp_path / "small.png", "--task", "sr4", "--sigma", "0") == 0
    small = read_image(tmp_path / "small.png")
    assert small.data.shape == (3, 8, 12)
    box_means = torch.nn.functional.avg_pool2d(clean.data[None], 4)[0]
    assert (small.data - box_means).abs().max() <= 0.5 / 255 + 1e-6
    assert small.alpha.shape == (1, 8, 12) and torch.allclose(small.alpha, torch.full((1, 8, 12), 0.6), atol=1 / 255)


def test_degrade_colorize_writes_gray(clean_png, tmp_path):
    assert run_degrade(clean_png, tmp_path / "gray.png", "--task", "colorize", "--sigma", "0") == 0
    gray = read_image(tmp_path / "gray.png")
    assert gray.data.shape == (1, 32, 48)
    expected = read_image(clean_png).data.mean(dim=0, keepdim=True)
    assert (gray.data - expected).abs().max() <= 0.5 / 255 + 1e-6


def test_degrade_noise_is_seeded_and_has_the_requested_level(clean_png, tmp_path):
    options = ("--task", "denoise", "--sigma", "25/255", "--bits", "16")
    for name, seed in [("a.png", "7"), ("b.png", "7"), ("c.png", "8")]:
        assert run_degrade(clean_png, tmp_path / name, *options, "--seed", seed) == 0
    first, again, other = (read_image(tmp_path / name) for name in ["a.png", "b.png", "c.png"])
    assert first.bit_depth == 16
    assert torch.equal(first.data, again.data)
    assert not torch.equal(first.data, other.data)
    clean = read_image(clean_png).data
    unclamped = (clean > 0.3) & (clean < 0.7)  # 4σ from both ends of [0, 1]
    residual = (first.data - clean)[unclamped]
    assert abs(residual.std() - 25 / 255) < 0.005 and abs(residual.mean()) < 0.005


def test_degrade_with_task_parameters(clean_png, tmp_path):
    output = tmp_path / "holes.png"
    options = ("--task", "inpaint", "--sigma", "0", "--param", "box=4,8,10,12")
    assert run_degrade(clean_png, output, *options) == 0
    observed = read_image(output).data
    assert torch.equal(observed[:, 4:14, 8:20], torch.zeros(3, 10, 12))
    assert torch.equal(observed[:, :4], read_image(clean_png).data[:, :4])


def test_degrade_keeps_16_bits_where_the_format_allows(tmp_path):
    source = tmp_path / "deep.tif"
    write_image(source, torch.rand(3, 16, 16), bit_depth=16)
    assert run_degrade(source, tmp_path / "deep.png", "--task", "denoise", "--sigma", "0") == 0
    assert read_image(tmp_path / "deep.png").bit_depth == 16
    assert run_degrade(source, tmp_path / "flat.jpg", "--task", "denoise", "--sigma", "0") == 0
    assert read_image(tmp_path / "flat.jpg").bit_depth == 8


@pytest.mark.parametrize(
    ("source", "output", "options", "expected"),
    [
        ("absent.png", "out.png", ("--task", "denoise"), "does not exist"),
        ("clean.png", "out.png", ("--task", "nonsense"), "nonsense"),
        ("clean.png", "out.png", ("--task", "sr4", "--param", "kernel_sigma=2"), "kernel_sigma"),
        ("clean.png", "out.png", ("--task", "denoise", "--param", "a=1", "--param", "a=2"), "given twice"),
        ("clean.png", "out.jpg", ("--task", "denoise", "--bits", "16"), "JPEG stores 8-bit only"),
        ("clean.png", "out.gif", ("--task", "denoise"), "unknown image format"),
        ("clean.png", "missing/out.png", ("--task", "denoise"), "does not exist"),
    ],
)
def test_degrade_errors_exit_2_and_write_nothing(clean_png, tmp_path, capsys, source, output, options, expected):
    status = run_degrade(tmp_path / source, tmp_path / output, *options, "--sigma", "0.1")
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.png"]


def test_debug_reraises(clean_png, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        main(["--debug", "degrade", "--task", "denoise", "--sigma", "0", str(tmp_path / "absent.png"), "-o", "x.png"])


def test_interrupt_exits_130(clean_png, tmp_path, monkeypatch, capsys):
    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr("trt_restore.io.read_image", interrupted)
    assert run_degrade(clean_png, tmp_path / "out.png", "--task", "denoise", "--sigma", "0") == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted\n"
    assert not (tmp_path / "out.png").exists()


def test_verbose_logs_stage_timings(clean_png, tmp_path, caplog):
    caplog.set_level("INFO", logger="trt_restore")
    assert (
        main(["-v", "degrade", "--task", "denoise", "--sigma", "0", str(clean_png), "-o", str(tmp_path / "o.png")]) == 0
    )
    messages = [record.getMessage() for record in caplog.records if record.name == "trt_restore.jobs.timing"]
    assert [re.fullmatch(r"(\w+): \d+\.\d{3} s", message)[1] for message in messages] == ["read", "degrade", "write"]
