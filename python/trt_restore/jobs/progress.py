"""One image's step progress: a progress bar over the pipeline's steps and, optionally, its intermediate estimates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

INTERMEDIATE_NAME = "{stem}_step{step:03d}.png"


class StepMonitor:
    """The pipeline callback for one image: a progress bar over the steps and, every ``every``
    steps, the current estimate (cropped to ``size``) written as ``folder/<stem>_stepNNN.png``."""

    def __init__(self, show: bool, size: tuple[int, int], folder: Path | None, stem: str, every: int):
        self.show = show
        self.size = size
        self.folder = folder
        self.stem = stem
        self.every = every
        self.bar = None

    def __call__(self, step: int, total: int, estimate: Callable[[], torch.Tensor]) -> None:
        from tqdm import tqdm

        from ..io import write_image

        if self.bar is None:
            self.bar = tqdm(total=total, unit="step", leave=False, disable=not self.show, dynamic_ncols=True)
        self.bar.update(step - self.bar.n)
        if self.folder is not None and step % self.every == 0:
            height, width = self.size
            write_image(
                self.folder / INTERMEDIATE_NAME.format(stem=self.stem, step=step), estimate()[0, :, :height, :width]
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
