"""The degradation embedding that conditions the wavelet INN of LatentINDIGO."""

from __future__ import annotations

import torch

from .errors import UserError

TASK_FAMILIES = ("denoise", "sr", "deblur", "inpaint", "colorize")
COND_DIM = len(TASK_FAMILIES) + 1


def degradation_embedding(task: str, sigma: float, batch: int = 1) -> torch.Tensor:
    """The INN's condition ``e``, shape ``(batch, COND_DIM)``: one-hot of the task family, then σ.

    The family is the task name's prefix (``"sr4-bicubic"`` → ``sr``); σ is the
    observation noise on the [0, 1] image scale.
    """
    family = next((f for f in TASK_FAMILIES if task.startswith(f)), None)
    if family is None:
        raise UserError(f"no INN condition for task '{task}'; known task families: {', '.join(TASK_FAMILIES)}")
    row = torch.zeros(COND_DIM)
    row[TASK_FAMILIES.index(family)] = 1.0
    row[-1] = float(sigma)
    return row.expand(batch, COND_DIM).clone()
