"""Training images for the bundled models: the pool, and random augmented crops from it.

Sources (``--data``, comma-separated):

- ``train``: the training pools under the data root: the colour photographs of
  ``train/BSDS400``, ``train/CSunHays80`` and ``train/CUrban100-half``, and the grey
  ``train/Train400`` (grey augmentation), read through :func:`trt_restore.data.dataset_images`;
  nothing under ``test/`` is ever read. ``bsds400``, ``csunhays80``, ``curban100`` or
  ``train400`` alone name one of them. ``train/CBSD68`` is never a source: it holds the
  colour versions of the BSD68 test images;
- ``skimage``: photographs that scikit-image ships in ``skimage.data`` (no download);
- ``sklearn``: scikit-learn's ``load_sample_images`` (china, flower), when it is installed.

The demo images (:data:`trt_restore.demo.DEMO_IMAGES`) are held out: they measure the
models' quality in the model cards and appear in the demo, so no source yields them.
Grey images are repeated over three channels. A crop is taken at a random scale
``s ∈ [min_scale, 1]`` (a ``crop/s`` window resized to ``crop`` with antialiasing), then
flipped and rotated by a random multiple of 90°.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from trt_restore.data import data_root, dataset_images
from trt_restore.demo import DEMO_IMAGES
from trt_restore.errors import UserError

TRAIN_SETS = {
    "bsds400": "train/BSDS400",
    "csunhays80": "train/CSunHays80",
    "curban100": "train/CUrban100-half",
    "train400": "train/Train400",
}
TEST_FOLDER = "test"
# Natural photographs and textures stored inside scikit-image's wheel (fetched without network).
SKIMAGE_SAMPLES = (
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "moon",
    "coins",
    "grass",
    "gravel",
    "brick",
)
SOURCES = ("train", *TRAIN_SETS, "skimage", "sklearn")
MIN_SCALE = 0.3  # crops are taken at scales in [MIN_SCALE, 1] of the originals


@dataclass(frozen=True)
class PoolImage:
    """One training image: ``pixels`` uint8 (3, H, W); ``colour`` is False for grey originals."""

    name: str
    pixels: torch.Tensor
    colour: bool


def training_files(sets: Sequence[str] = tuple(TRAIN_SETS)) -> list[Path]:
    """Image files of the named :data:`TRAIN_SETS` under the data root; a UserError if any lies under ``test/``."""
    test_folder = (data_root() / TEST_FOLDER).resolve()
    files = [path for name in sets for path in dataset_images(TRAIN_SETS[name])]
    leaked = [path for path in files if path.resolve().is_relative_to(test_folder)]
    if leaked:
        raise UserError(f"{leaked[0]} lies under {test_folder}; test images must never be trained on")
    return files


def _pool_image(name: str, array: np.ndarray) -> PoolImage:
    """An HW or HWC uint8 array as a :class:`PoolImage` (grey repeated, alpha dropped)."""
    if array.dtype != np.uint8:
        raise UserError(f"training image {name} is {array.dtype}, expected 8-bit")
    colour = array.ndim == 3 and array.shape[2] >= 3
    planes = torch.from_numpy(np.array(array[..., :3] if colour else array)).to(torch.uint8)  # a writable copy
    planes = planes.permute(2, 0, 1) if colour else planes.expand(3, *planes.shape)
    return PoolImage(name, planes.contiguous(), colour)


def _read_8bit(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"))


def _train_set_images(*sets: str) -> list[PoolImage]:
    return [_pool_image(path.name, _read_8bit(path)) for path in training_files(sets or tuple(TRAIN_SETS))]


def _skimage_images() -> list[PoolImage]:
    import skimage.data

    if set(SKIMAGE_SAMPLES) & set(DEMO_IMAGES):
        raise UserError("the demo images are held out and must not be training samples")
    return [_pool_image(f"skimage.{name}", getattr(skimage.data, name)()) for name in SKIMAGE_SAMPLES]


def _sklearn_images() -> list[PoolImage]:
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        raise UserError("--data sklearn needs scikit-learn; install it (pip install scikit-learn) or drop that source") from None
    samples = load_sample_images()
    return [_pool_image(f"sklearn.{Path(f).stem}", image) for f, image in zip(samples.filenames, samples.images)]


_LOADERS = {
    "train": _train_set_images,
    **{name: partial(_train_set_images, name) for name in TRAIN_SETS},
    "skimage": _skimage_images,
    "sklearn": _sklearn_images,
}


def load_pool(sources: Sequence[str]) -> list[PoolImage]:
    """Every image of the named sources (see the module docstring)."""
    unknown = [s for s in sources if s not in _LOADERS]
    if unknown or not sources:
        raise UserError(f"unknown training data source(s) {unknown or sources}; choose from: {', '.join(SOURCES)}")
    if "train" in sources and set(TRAIN_SETS) & set(sources):
        raise UserError(f"--data 'train' already holds {', '.join(TRAIN_SETS)}; name either 'train' or the sets")
    return [image for source in dict.fromkeys(sources) for image in _LOADERS[source]()]


def describe_pool(pool: Sequence[PoolImage], sources: Sequence[str]) -> str:
    """One line for a model card: sources, image counts, colour and grey."""
    colour = sum(image.colour for image in pool)
    return f"{len(pool)} images from {', '.join(sources)} ({colour} colour, {len(pool) - colour} grey)"


class CropSampler:
    """Random augmented ``crop × crop`` patches in [0, 1] from a pool.

    Each patch comes from a colour original with probability ``colour_fraction`` (when
    the pool has both kinds), then from a uniformly chosen image of that kind.
    """

    def __init__(self, pool: Sequence[PoolImage], crop: int, min_scale: float = MIN_SCALE, colour_fraction: float = 0.9):
        if not pool:
            raise UserError("the training pool is empty; check --data and the data root")
        if crop < 8:
            raise UserError(f"--crop must be at least 8 pixels, got {crop}")
        if not 0 < min_scale <= 1:
            raise UserError(f"the minimum crop scale must be in (0, 1], got {min_scale}")
        self.crop = crop
        self.min_scale = min_scale
        colour = [image for image in pool if image.colour]
        grey = [image for image in pool if not image.colour]
        self.kinds = [kind for kind in (colour, grey) if kind]
        self.colour_fraction = colour_fraction if len(self.kinds) == 2 else 1.0

    def _pick(self, generator: torch.Generator) -> PoolImage:
        kind = self.kinds[0] if float(torch.rand((), generator=generator)) < self.colour_fraction else self.kinds[-1]
        return kind[int(torch.randint(len(kind), (), generator=generator))]

    def patch(self, generator: torch.Generator) -> torch.Tensor:
        """One (3, crop, crop) float patch."""
        pixels = self._pick(generator).pixels
        height, width = pixels.shape[-2:]
        smallest = self.crop / min(height, width)  # below this scale the window would not fit
        low = min(max(self.min_scale, smallest), 1.0)
        scale = max(low + (1.0 - low) * float(torch.rand((), generator=generator)), smallest)
        window = min(math.ceil(self.crop / scale), height, width)
        top = int(torch.randint(height - window + 1, (), generator=generator))
        left = int(torch.randint(width - window + 1, (), generator=generator))
        patch = pixels[:, top : top + window, left : left + window].float()[None] / 255
        if window != self.crop:
            patch = F.interpolate(patch, size=(self.crop, self.crop), mode="bilinear", antialias=True, align_corners=False)
        patch = patch[0].clamp(0, 1)
        if float(torch.rand((), generator=generator)) < 0.5:
            patch = patch.flip(-1)
        return torch.rot90(patch, int(torch.randint(4, (), generator=generator)), dims=(-2, -1))

    def batch(self, size: int, generator: torch.Generator) -> torch.Tensor:
        """``size`` patches stacked into (size, 3, crop, crop)."""
        return torch.stack([self.patch(generator) for _ in range(size)])
