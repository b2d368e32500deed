"""The test images and their observations: a synthetic photo, the named data sets, the task's degradation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .config import TaskSetting

if TYPE_CHECKING:
    import torch

    from ..operators import Operator


DATASETS = {name: f"test/{name}" for name in ("Set5", "Set14", "set3c", "Set12", "BSD68")}


def synthetic_image(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """A deterministic stand-in photo in [0, 1]: colour gradients, a disc, stripes and fine noise."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    axis = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    phase = torch.rand(batch, channels, 1, 1, generator=generator)
    gradient = 0.5 + 0.35 * torch.sin(2 * math.pi * (xx + 0.6 * yy + phase))
    disc = ((xx - 0.6) ** 2 + (yy - 0.4) ** 2 < 0.06).float() * 0.3
    stripes = 0.1 * torch.sign(torch.sin(40 * math.pi * xx)) * (yy > 0.7).float()
    grain = 0.03 * torch.randn(batch, channels, size, size, generator=generator)
    return (gradient + disc + stripes + grain).clamp(0, 1)


def make_task_operator(setting: TaskSetting, size: tuple[int, int], channels: int) -> Operator:
    from ..operators import make_operator

    return make_operator(setting.task, size=size, channels=channels, **setting.params)


def observe(setting: TaskSetting, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, Operator]:
    """``y = A x + σ n`` for the task's operator on x's size, with noise seeded by ``seed``."""
    from ..operators import Degradation

    operator = make_task_operator(setting, tuple(x.shape[-2:]), x.shape[1])
    return Degradation(operator, setting.sigma).observe(x, seed=seed), operator


def modcrop(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` cropped at the bottom and right to sides divisible by ``multiple``."""
    height, width = x.shape[-2:]
    return x[..., : height - height % multiple, : width - width % multiple]


def centre_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    """The central ``side``×``side`` pixels of ``x`` (…, H, W); the whole height or width where it is smaller."""
    height, width = x.shape[-2:]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return x[..., top : top + side, left : left + side]


def dataset_paths(name: str) -> list[Path]:
    """Images of a named test set (Set5, Set14, set3c, Set12, BSD68) or of a folder."""
    from ..data import IMAGE_SUFFIXES, dataset_images

    if name in DATASETS:
        return dataset_images(DATASETS[name])
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise UserError(f"unknown data set '{name}'; choose {', '.join(DATASETS)} or give a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def dataset_label(name: str) -> str:
    return name if name in DATASETS else Path(name).name
