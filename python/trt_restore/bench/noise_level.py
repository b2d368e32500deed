"""The noise-level estimator behind ``--sigma auto``: its error per task and noise level, how its
channel combination compares with simpler ones, and the restoration it gives against the true σ.

Every observation is ``y = A x + σ n`` (:func:`~trt_restore.bench.images.observe`), the k-th image's
noise seeded with ``seed + k``, and σ̂ is estimated on y as the operator sees it (the low-resolution
image for SR, the blurred one for deblurring). Errors are on the [0, 1] scale.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .config import TaskSetting, steps_override
from .images import centre_crop, dataset_label, dataset_paths, modcrop, observe
from .quality import image_scores

if TYPE_CHECKING:
    import torch

ESTIMATOR_TASKS = {
    "denoise": TaskSetting("denoise", 0.0),
    "sr4-bicubic": TaskSetting("sr4-bicubic", 0.0),
    "deblur-gauss": TaskSetting("deblur-gauss", 0.0, {"kernel_sigma": 1.6, "kernel_size": 25}),
}
"""The tasks the estimator is measured on; σ is set per measurement."""


def _rgb_mean(y: torch.Tensor) -> float:
    """scikit-image's own channel combination: the mean of the per-channel estimates."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(y.double().numpy(), channel_axis=0, average_sigmas=True))


def _rgb_rms(y: torch.Tensor) -> float:
    """The root mean square of the per-channel estimates."""
    from skimage.restoration import estimate_sigma

    return math.sqrt(statistics.fmean(s * s for s in estimate_sigma(y.double().numpy(), channel_axis=0)))


def _shipped(y: torch.Tensor) -> float:
    from ..noise_level import estimate_noise_sigma

    return estimate_noise_sigma(y)


COMBINATIONS: dict[str, Callable[[torch.Tensor], float]] = {
    "shipped (opponent channels)": _shipped,
    "mean of RGB channels": _rgb_mean,
    "RMS of RGB channels": _rgb_rms,
}
"""Channel combinations compared on held-out images; the first is :func:`~trt_restore.noise_level.estimate_noise_sigma`."""


def _observations(dataset: str, setting: TaskSetting, limit: int | None, seed: int, crop: int | None = None):
    """(name, x, y) of the set's images: x (1, C, H, W), its centre ``crop`` (None: whole) cropped to the SR
    factor, y its observation."""
    from ..io import read_image

    for index, path in enumerate(dataset_paths(dataset)[:limit]):
        x = read_image(path).data[None]
        x = modcrop(x if crop is None else centre_crop(x, crop), setting.scale)
        y, _ = observe(setting, x, seed + index)
        yield path.name, x, y


def estimator_errors(
    datasets: Sequence[str],
    tasks: Sequence[str],
    sigmas: Sequence[float],
    *,
    combinations: Sequence[str] = (next(iter(COMBINATIONS)),),
    limit: int | None = None,
    saved: bool = False,
    seed: int = 0,
    log: Callable[[str], None] = lambda message: None,
) -> list[dict]:
    """Per data set, task, σ and combination: the mean absolute error, the largest error and the mean
    signed error (bias) of σ̂ over the images. ``saved`` estimates on y as an 8-bit file holds it
    (clipped to [0, 1] and rounded), as real photographs come."""
    rows = []
    for dataset in datasets:
        for task in tasks:
            for sigma in sigmas:
                setting = TaskSetting(task, sigma, ESTIMATOR_TASKS[task].params)
                log(f"estimator {dataset_label(dataset)} {task} sigma {sigma:.4f}")
                errors: dict[str, list[float]] = {name: [] for name in combinations}
                for _, _, y in _observations(dataset, setting, limit, seed):
                    y = (y.clamp(0, 1) * 255).round() / 255 if saved else y
                    for name in combinations:
                        errors[name].append(COMBINATIONS[name](y[0]) - sigma)
                for name, signed in errors.items():
                    rows.append({
                        "dataset": dataset_label(dataset),
                        "task": task,
                        "observation": "8-bit" if saved else "A x + σ n",
                        "sigma": sigma,
                        "combination": name,
                        "images": len(signed),
                        "mae": statistics.fmean(abs(e) for e in signed),
                        "max_error": max(abs(e) for e in signed),
                        "bias": statistics.fmean(signed),
                    })
    return rows


def auto_sigma_quality(
    methods: Sequence[str],
    dataset: str,
    sigma: float,
    *,
    model_set: str = "bundled",
    backend: str = "torch",
    limit: int | None = None,
    crop: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = lambda message: None,
) -> list[dict]:
    """Per method, denoising ``dataset`` (each image's centre ``crop``, None: whole) at ``sigma``: mean
    PSNR/SSIM with the true σ and with ``sigma="auto"``, and the mean σ̂ the estimator gave. ``steps``
    overrides the methods' steps (or RELD's iterations); None keeps their defaults."""
    from ..api import load_models, restore
    from ..noise_level import estimate_noise_sigma

    setting = TaskSetting("denoise", sigma)
    cases = list(_observations(dataset, setting, limit, seed, crop))
    rows = []
    for method in methods:
        _, models = load_models(method, model_set=model_set, backend=backend)
        config = steps_override(method, steps)
        scores: dict[str, list[dict]] = {"true": [], "auto": []}
        seconds = []
        with models:
            for name, x, y in cases:
                for given, given_scores in scores.items():
                    start = time.perf_counter()
                    given_sigma = sigma if given == "true" else "auto"
                    out = restore(y, method, "denoise", given_sigma, models=models, seed=seed, config=config)
                    seconds.append(time.perf_counter() - start)
                    given_scores.append(image_scores(out.clamp(0, 1), x, 0, None))
                    log(f"{method} {name} sigma {given}: {given_scores[-1]['psnr']:.2f} dB")
        true_psnr, auto_psnr = (statistics.fmean(s["psnr"] for s in scores[k]) for k in ("true", "auto"))
        rows.append({
            "method": method,
            "dataset": dataset_label(dataset),
            "crop": crop,
            "sigma": sigma,
            "images": len(cases),
            "estimated_sigma_mean": statistics.fmean(estimate_noise_sigma(y[0]) for _, _, y in cases),
            "psnr_true_sigma": true_psnr,
            "psnr_auto_sigma": auto_psnr,
            "psnr_difference": auto_psnr - true_psnr,
            "ssim_true_sigma": statistics.fmean(s["ssim"] for s in scores["true"]),
            "ssim_auto_sigma": statistics.fmean(s["ssim"] for s in scores["auto"]),
            "seconds_per_image": statistics.fmean(seconds),
        })
    return rows


def noise_level_markdown(results: dict) -> str:
    """The README's tables from the results document of ``benchmarks/noise_level.py``."""
    lines = []
    estimator = [row for row in results.get("estimator", []) if row["combination"] == next(iter(COMBINATIONS))]
    if estimator:
        lines += [
            "| data set | task | observation | σ | σ̂ mean abs. error | largest error | bias |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['dataset']} ({r['images']}) | {r['task']} | {r['observation']} | {_level(r['sigma'])} | {_level(r['mae'])} "
            f"| {_level(r['max_error'])} | {_level(r['bias'], signed=True)} |"
            for r in estimator
        ]
    held_out = results.get("combinations", [])
    if held_out:
        names = list(dict.fromkeys(r["combination"] for r in held_out))
        lines += ["", "| held-out set | σ | " + " | ".join(names) + " |", "| --- | --- |" + " --- |" * len(names)]
        cells: dict[tuple, dict] = {}
        for r in held_out:
            cells.setdefault((r["dataset"], r["images"], r["sigma"]), {})[r["combination"]] = r["mae"]
        lines += [
            f"| {dataset} ({images}) | {_level(sigma)} | " + " | ".join(_level(maes[n]) for n in names) + " |"
            for (dataset, images, sigma), maes in cells.items()
        ]
    quality = results.get("quality", [])
    if quality:
        lines += [
            "",
            "| method | data set | σ | mean σ̂ | PSNR, true σ | PSNR, `--sigma auto` | difference |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['method']} | {r['dataset']} ({r['images']}{_crop_text(r['crop'])}) | {_level(r['sigma'])} | {_level(r['estimated_sigma_mean'])} "
            f"| {r['psnr_true_sigma']:.2f} dB | {r['psnr_auto_sigma']:.2f} dB | {r['psnr_difference']:+.2f} dB |"
            for r in quality
        ]
    return "\n".join(lines) + "\n"


def _crop_text(crop: int | None) -> str:
    return "" if crop is None else f", centre {crop}×{crop}"


def _level(value: float, signed: bool = False) -> str:
    """A noise level on the [0, 1] scale, with its value on the 255 scale: ``0.0196 (5.0/255)``."""
    return f"{value:{'+' if signed else ''}.4f} ({value * 255:{'+' if signed else ''}.2f}/255)"
