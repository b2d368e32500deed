"""`trt-restore demo --quick`: every method runs and the contact sheet is written."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from PIL import Image

from trt_restore.cli.demo import add_demo_arguments, run_demo
from trt_restore.demo import (
    CAPTION_HEIGHT,
    MIN_CELL,
    PAD,
    QUICK_CASES,
    RESULTS,
    SHEET,
    supported_methods,
)
from trt_restore.errors import UserError
from trt_restore.export.model_sets import MANIFEST, default_models_folder
from trt_restore.methods import METHODS


@pytest.fixture
def demo_args():
    """``demo_args(*argv)``: parsed demo arguments; torch's thread setting is restored afterwards."""
    threads = torch.get_num_threads()
    parser = argparse.ArgumentParser()
    add_demo_arguments(parser)
    yield lambda *argv: parser.parse_args(argv)
    torch.set_num_threads(threads)


def _check_outputs(out) -> None:
    results = json.loads((out / RESULTS).read_text())
    (case,) = QUICK_CASES
    scores = next(iter(results["cases"].values()))
    assert sorted(scores) == sorted(supported_methods(case, results["size"])) == sorted(METHODS)  # sr4: every method
    assert all(math.isfinite(entry["psnr"]) for entry in scores.values())
    with Image.open(out / SHEET) as sheet:
        columns = len(METHODS) + 2  # observation, the methods, ground truth
        assert sheet.size == (columns * (MIN_CELL + PAD) + PAD, MIN_CELL + CAPTION_HEIGHT + 2 * PAD)


def test_quick_demo_on_the_bundled_models(tmp_path, demo_args):
    if not (default_models_folder() / MANIFEST).is_file():
        pytest.skip(f"{default_models_folder() / MANIFEST} is absent; train the bundled models with `trt-restore train all`")
    assert run_demo(demo_args("--out", str(tmp_path), "--quick")) == 0
    _check_outputs(tmp_path)


def test_quick_demo_runs_on_any_model_set(tmp_path, demo_args):
    assert run_demo(demo_args("--out", str(tmp_path / "sheet"), "--quick", "--model-set", "tiny")) == 0
    _check_outputs(tmp_path / "sheet")


def test_demo_refuses_a_file_as_output_folder(tmp_path, demo_args):
    target = tmp_path / "taken.png"
    target.write_bytes(b"")
    with pytest.raises(UserError, match="is a file"):
        run_demo(demo_args("--out", str(target), "--quick"))
