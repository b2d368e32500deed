"""The caller's image types: each becomes a (B, C, H, W) float batch in [0, 1], and the result goes back
to the same type, dtype, range and layout.

| given | returned |
| --- | --- |
| a file path | a (C, H, W) float32 tensor in [0, 1] |
| a NumPy array (H, W) or (H, W, C) | a NumPy array of the same layout and dtype: integers over their full range, floats in [0, 1] |
| a PIL image, mode ``L`` or ``RGB`` (other modes are read as ``RGB``) | a PIL image of that mode |
| a torch tensor (C, H, W) or (B, C, H, W) | a tensor of the same layout, dtype and device: integers over their full range, floats in [0, 1] |

The channel count follows the task, not the input: colorisation turns a gray input into RGB
(an ``L`` image into ``RGB``, an (H, W) array into (H, W, 3)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .errors import UserError

Container = Literal["path", "array", "pil", "tensor"]


@dataclass(frozen=True)
class ImageType:
    """How the caller held the image: what :func:`as_caller_type` gives back."""

    container: Container
    batched: bool = False
    """A (B, C, H, W) tensor, rather than one image."""
    planar: bool = False
    """An (H, W) array or an ``L`` image: no channel axis."""
    dtype: Any = None
    """The NumPy or torch dtype of an array or tensor."""
    device: torch.device | None = None


def as_batch(image: Any) -> tuple[torch.Tensor, ImageType]:
    """A (B, C, H, W) float32 batch in [0, 1] from a path, a PIL image, an array or a tensor, and the image's type."""
    if isinstance(image, (str, Path)):
        from .io import read_image

        return read_image(image).data[None], ImageType("path")
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise UserError(f"an image array must be (H, W) or (H, W, C), got shape {image.shape}")
        array = image.astype(np.float32) / _full_scale(image.dtype)
        planar = array.ndim == 2
        array = array[..., None] if planar else array
        batch = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]
        return batch, ImageType("array", planar=planar, dtype=image.dtype)
    if isinstance(image, torch.Tensor):
        if image.dim() not in (3, 4):
            raise UserError(f"an image tensor must be (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}")
        scale = 1.0 if image.is_floating_point() else float(torch.iinfo(image.dtype).max)
        batch = image.float() / scale
        kind = ImageType("tensor", batched=image.dim() == 4, dtype=image.dtype, device=image.device)
        return (batch if kind.batched else batch[None]), kind
    if not hasattr(image, "convert"):
        raise UserError(f"cannot restore a {type(image).__name__}; pass a path, a PIL image, an array or a tensor")
    mode = image.mode if image.mode in ("L", "RGB") else "RGB"
    batch, _ = as_batch(np.asarray(image.convert(mode)))
    return batch, ImageType("pil", planar=mode == "L")


def as_caller_type(batch: torch.Tensor, kind: ImageType) -> Any:
    """The restored (B, C, H, W) batch in [0, 1] as the caller's type (see the module docstring)."""
    if kind.container == "path":
        return batch[0]
    if kind.container == "tensor":
        out = batch if kind.batched else batch[0]
        if not kind.dtype.is_floating_point:
            out = (out * torch.iinfo(kind.dtype).max).round()
        return out.to(device=kind.device, dtype=kind.dtype)
    array = batch[0].detach().cpu().permute(1, 2, 0).numpy()
    planar = kind.planar and array.shape[-1] == 1
    array = array[..., 0] if planar else array
    if kind.container == "pil":
        from PIL import Image

        return Image.fromarray(_from_unit(array, np.dtype(np.uint8)), mode="L" if planar else "RGB")
    return _from_unit(array, np.dtype(kind.dtype))


def _full_scale(dtype: np.dtype) -> float:
    """The value that stands for white: the maximum of an integer dtype, 1 for floats."""
    return float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "ui" else 1.0


def _from_unit(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` in [0, 1] as ``dtype``: integers rounded over their full range."""
    if dtype.kind in "ui":
        return np.round(np.clip(array, 0, 1) * _full_scale(dtype)).astype(dtype)
    return array.astype(dtype)
