"""Where the standard image sets live: one setting, ``TRT_RESTORE_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = _REPO_ROOT.parent / "shared" / "data"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def data_root() -> Path:
    """The data folder: ``$TRT_RESTORE_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("TRT_RESTORE_DATA", DEFAULT_DATA_ROOT)).expanduser()


def dataset_dir(name: str) -> Path:
    """Folder of a named set, e.g. ``test/Set5``, ``train/CBSD68`` or ``kernels``."""
    path = data_root() / name
    if not path.exists():
        raise UserError(
            f"data set '{name}' not found at {path}; set TRT_RESTORE_DATA to the folder that holds test/, train/ and kernels/"
        )
    return path


def dataset_images(name: str) -> list[Path]:
    """Sorted image files of a named set."""
    return sorted(p for p in dataset_dir(name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
