"""`trt-restore demo`: every method on the tasks it supports, offline, with a contact sheet.

The clean images ship with scikit-image (:data:`DEMO_IMAGES`, centre-cropped and resized);
the bundled model set never trained on them. Each demo case degrades one image,
``y = clamp(A x + σ n, 0, 1)``, restores it with every method that supports the task
(torch backend, fixed seed) and adds a row to ``contact_sheet.png``: the observation,
each method's result and the ground truth, captioned with their PSNR. ``--quick`` runs
one small case with few steps per method, as a smoke test.

torch and the pipelines are imported inside the functions, so that importing this
module stays cheap.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    import torch

DEMO_IMAGES = ("astronaut", "coffee", "chelsea")
SHEET = "contact_sheet.png"
RESULTS = "results.json"
CAPTION_HEIGHT = 30
MIN_CELL = 128  # cells are upscaled (nearest) to at least this many pixels
PAD = 4


@dataclass(frozen=True)
class DemoCase:
    """One row of the contact sheet: an image, a task, its noise level and operator parameters."""

    image: str
    task: str
    sigma: float
    params: dict = field(default_factory=dict)


CASES = (
    DemoCase("astronaut", "sr4", 0.01),
    DemoCase("coffee", "deblur-gauss", 0.02),
    DemoCase("chelsea", "inpaint", 0.01, {"fraction": 0.5}),
)
FULL_SIZE = 128
QUICK_CASES = (DemoCase("astronaut", "sr4", 0.01),)
QUICK_SIZE = 64
# Few steps per method: --quick checks that everything runs, not how well.
QUICK_CONFIG = {
    "reld": {"iterations": 3},
    "ddrm": {"steps": 3},
    "ldm-sr": {"steps": 3},
    "ddrm-ldm": {"steps": 3},
    "indigo-pixel": {"steps": 3},
    "indigo-latent": {"steps": 3},
}


def demo_image(name: str, size: int) -> torch.Tensor:
    """``skimage.data.<name>()`` centre-cropped to a square and resized to ``size`` (antialiased): (3, size, size) in [0, 1]."""
    import torch
    import torch.nn.functional as F

    try:
        import skimage.data
    except ImportError:
        raise UserError("the demo images come with scikit-image; install it (pip install scikit-image)") from None
    pixels = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
    height, width = pixels.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = pixels[None, :, top : top + side, left : left + side]
    return F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


@dataclass
class Cell:
    """One image of the sheet with its two caption lines."""

    image: torch.Tensor | None  # (3, H, W) in [0, 1]; None draws an empty cell
    title: str
    detail: str


def observe(case: DemoCase, clean: torch.Tensor, seed: int) -> torch.Tensor:
    """``clamp(A x + σ n, 0, 1)`` for the case's operator, (1, C, h, w)."""
    from .operators import Degradation, make_operator

    operator = make_operator(case.task, size=tuple(clean.shape[-2:]), channels=3, **case.params)
    return Degradation(operator, case.sigma).observe(clean[None], seed).clamp(0, 1)


def supported_methods(case: DemoCase, size: int) -> list[str]:
    """The methods whose pipeline supports the case's task."""
    from .operators import make_operator
    from .pipelines import PIPELINES

    operator = make_operator(case.task, size=(size, size), channels=3, **case.params)
    return [name for name, pipeline in PIPELINES.items() if pipeline.supports(operator)]


def _observation_cell(case: DemoCase, y: torch.Tensor, clean: torch.Tensor) -> Cell:
    """The observation at the image's size (nearest for SR) with the PSNR of the trivial baseline."""
    import torch.nn.functional as F

    from .metrics import psnr

    title = f"{case.task}, noise {case.sigma:g}"
    if y.shape[-2:] == clean.shape[-2:]:
        return Cell(y[0], title, f"input {psnr(y[0], clean):.2f} dB")
    shown = F.interpolate(y, size=clean.shape[-2:], mode="nearest")[0]
    bicubic = F.interpolate(y, size=clean.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)[0]
    return Cell(shown, title, f"bicubic {psnr(bicubic, clean):.2f} dB")


def run_case(case: DemoCase, size: int, model_set: str | Path, quick: bool, seed: int) -> tuple[list[Cell], dict]:
    """Restore one case with every method; its row of cells and its results (PSNR and seconds per method)."""
    from .api import load_models, restore, sr_factor
    from .metrics import psnr
    from .methods import METHODS

    clean = demo_image(case.image, size)
    y = observe(case, clean, seed)
    cells = [_observation_cell(case, y, clean)]
    results: dict[str, dict] = {}
    supported = supported_methods(case, size)
    for method in METHODS:
        if method not in supported:
            cells.append(Cell(None, method, "n/a for this task"))
            continue
        start = time.perf_counter()
        _, models = load_models(method, model_set=model_set, backend="torch", image_size=(size, size), scale=sr_factor(case.task))
        config = QUICK_CONFIG[method] if quick else None
        with models:
            restored = restore(
                y, method=method, task=case.task, sigma=case.sigma, seed=seed, config=config, task_params=case.params,
                models=models,
            )[0]
        seconds = time.perf_counter() - start
        score = psnr(restored, clean)
        results[method] = {"psnr": round(score, 3), "seconds": round(seconds, 2)}
        cells.append(Cell(restored, method, f"{score:.2f} dB"))
        print(f"{case.image} {case.task}: {method:13s} {score:6.2f} dB  {seconds:5.1f} s", flush=True)
    cells.append(Cell(clean, "ground truth", case.image))
    return cells, results


def contact_sheet(rows: list[list[Cell]]):
    """A PIL image: one row per case, each cell with two caption lines (Pillow's default font)."""
    import torch.nn.functional as F
    from PIL import Image, ImageDraw

    side = max(MIN_CELL, max(cell.image.shape[-1] for row in rows for cell in row if cell.image is not None))
    columns = max(len(row) for row in rows)
    cell_w, cell_h = side + PAD, side + CAPTION_HEIGHT + PAD
    sheet = Image.new("RGB", (columns * cell_w + PAD, len(rows) * cell_h + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            left, top = PAD + c * cell_w, PAD + r * cell_h
            if cell.image is None:
                draw.rectangle((left, top, left + side - 1, top + side - 1), fill=(225, 225, 225))
            else:
                shown = F.interpolate(cell.image[None], size=(side, side), mode="nearest")[0]
                pixels = (shown.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
                sheet.paste(Image.fromarray(pixels), (left, top))
            draw.text((left + 2, top + side + 3), cell.title, fill="black")
            draw.text((left + 2, top + side + 16), cell.detail, fill=(60, 60, 60))
    return sheet


def run_demo(
    out: str | Path, *, quick: bool = False, model_set: str | Path = "bundled", seed: int = 0, threads: int = 1
) -> None:
    """Restore the demo cases and write ``contact_sheet.png`` and ``results.json`` into ``out`` (created).

    Args:
        out: folder for the contact sheet and the results; a file there is an error.
        quick: one small case with a few steps per method (a smoke test) instead of every case.
        model_set: model set name (``bundled``, ``tiny``) or folder.
        seed: seed of the observation noise and the samplers.
        threads: CPU threads for torch, at least 1 (a process-wide setting).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder for the contact sheet")
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
    cases, size = (QUICK_CASES, QUICK_SIZE) if quick else (CASES, FULL_SIZE)
    start = time.perf_counter()
    rows, results = [], {}
    for case in cases:
        cells, scores = run_case(case, size, model_set, quick, seed)
        rows.append(cells)
        results[f"{case.image} {case.task} sigma={case.sigma:g}"] = scores
    out.mkdir(parents=True, exist_ok=True)
    contact_sheet(rows).save(out / SHEET)
    (out / RESULTS).write_text(json.dumps({"size": size, "quick": quick, "cases": results}, indent=2))
    print(f"wrote {out / SHEET} and {out / RESULTS} in {time.perf_counter() - start:.0f} s", flush=True)
