"""The restore request: what ``restore`` does to every image (method, task, noise level, settings), and its checks."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..methods import NoiseSource
from ..noise_level import AUTO, NoiseLevel, given_noise_level
from .values import ParamValue

if TYPE_CHECKING:
    import torch

    from ..io import Image
    from ..pipelines import Models
    from ..pipelines.base import StepCallback

DEFAULT_TASK_KEY = "default_task"
"""The key of a bundle's model-set metadata that names the task ``restore`` runs when ``--task`` is left out."""
COLORIZE = "colorize"
DEFAULT_MAX_PIXELS = 50_000_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreRequest:
    """What ``restore`` does to every image: the method, the task and their settings.

    ``sigma`` left out (None) becomes the task's default (0, or an error for denoise);
    ``auto`` is estimated from each image by :meth:`for_image`.
    """

    method: str
    task: str
    sigma: NoiseLevel | None
    seed: int
    settings: Mapping[str, Any]
    task_params: Mapping[str, ParamValue]
    noise: NoiseSource = "host"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", given_noise_level(self.task, self.sigma))

    def for_image(self, image: Image) -> RestoreRequest:
        """The request for one image: with ``sigma`` ``auto``, σ estimated from its observation (logged)."""
        if self.sigma != AUTO:
            return self
        from ..noise_level import estimate_noise_sigma

        sigma = estimate_noise_sigma(self.observation(image))
        log.info("%s: estimated noise sigma %.4f (%.1f/255)", image.path, sigma, sigma * 255)
        return dataclasses.replace(self, sigma=sigma)

    @property
    def scale(self) -> int:
        from ..api import sr_factor

        return sr_factor(self.task)

    def output_size(self, image: Image) -> tuple[int, int]:
        """(H, W) of the restored image: the input's, times the SR factor."""
        return image.data.shape[1] * self.scale, image.data.shape[2] * self.scale

    def observation(self, image: Image) -> torch.Tensor:
        """The image as the observation y: for colorisation its gray, the channel mean (the operator's A); else as read."""
        if self.task == COLORIZE and image.data.shape[0] > 1:
            return image.data.mean(dim=0, keepdim=True)
        return image.data

    def run(self, image: Image, models: Models, callback: StepCallback) -> torch.Tensor:
        """The restored image (C, H', W') in [0, 1]."""
        from ..api import restore

        return restore(
            self.observation(image),
            method=self.method,
            task=self.task,
            sigma=self.sigma,
            seed=self.seed,
            noise=self.noise,
            config=dict(self.settings),
            task_params=dict(self.task_params),
            callback=callback,
            models=models,
        )

    def check_size(self, image: Image, max_pixels: int) -> None:
        """Refuse an image whose restored size exceeds ``max_pixels``."""
        height, width = self.output_size(image)
        if height * width > max_pixels:
            raise UserError(
                f"{image.path} would be restored to {width}x{height} = {height * width:,} pixels, "
                f"more than --max-pixels {max_pixels}; split it into smaller images or raise --max-pixels"
            )

    def check(self, image: Image) -> None:
        """Refuse, before any image is restored, an unknown task, a bad task parameter or a method that cannot solve the task."""
        from ..operators import make_operator
        from ..pipelines import pipeline_class

        channels = 3 if self.task == COLORIZE else image.data.shape[0]
        operator = make_operator(self.task, size=self.output_size(image), channels=channels, **self.task_params)
        pipeline_class(self.method).check_task(operator)


def settings_of(method: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``settings`` that ``method`` has: fields of its pipeline's ``Config``."""
    from ..pipelines import pipeline_class
    from ..pipelines.base import config_fields

    names = {config_field.name for config_field in config_fields(pipeline_class(method).Config)}
    return {name: value for name, value in settings.items() if name in names}
