"""Outputs: their folder, their bit depth and the restored image itself, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    import torch

    from ..io import Image


def make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) for outputs, or say why it cannot be written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot create the output folder {folder} ({error.strerror or error}); choose another folder with -o"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(
            f"cannot write in the output folder {folder} (permission denied); choose another folder with -o"
        )


def check_bits(bits: int | None, target: str | Path) -> None:
    """Refuse ``--bits 16`` for an output format that stores 8-bit samples only."""
    from ..io import output_format

    if bits is not None and bits not in output_format(target).bit_depths:
        raise UserError(f"{Path(target).suffix} stores 8-bit samples only; drop --bits 16 or write .png or .tif")


def write_restored(target: Path, restored: torch.Tensor, image: Image, bit_depth: int) -> None:
    """Write a restored image atomically, with the input's alpha put back (resampled for SR)."""
    from ..io import fit_alpha, write_image

    alpha = None if image.alpha is None else fit_alpha(image.alpha, tuple(restored.shape[-2:]))
    write_image(target, restored, alpha=alpha, bit_depth=bit_depth)
