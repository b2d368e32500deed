"""The whole-image context that a tiled graph's attention blocks attend to (``export/attention_context.py``).

Pass 1 of a tiled run reports each attention block's feature map per tile; the tiles' maps,
weighted by the pixels each tile owns, make the whole image's map ``F`` (B, C, h, w) on the
block's grid. :class:`PooledContext` turns it into the graph's ``M`` context tokens: ``F``
itself when ``h·w ≤ M``, else ``F`` averaged over ``k × k`` cells with the smallest ``k`` that
fits. For a tile covering the window ``Ω`` of that grid, a token standing for the cell ``c_j``
gets the logit offset

    b_j = log |c_j \\ Ω|     (−∞, i.e. dropped, when the cell lies inside the tile),

so that the tile's own positions come from the tile and every other position counts once.
Memory: ``C·h·w`` floats per block for ``F`` (a 4000×3000 image on a ``/4`` grid with 128
channels: 384 MB), and ``M`` more keys per query in each block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..specs import NO_TOKEN


def empty_context(batch: int, channels: int, tokens: int, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A context of ``tokens`` zero tokens, all dropped (offset ``NO_TOKEN``): the block attends over its tile only."""
    like = {"device": device, "dtype": dtype}
    return torch.zeros(batch, channels, tokens, **like), torch.full((batch, tokens), NO_TOKEN, **like)


def cell_size(height: int, width: int, tokens: int) -> int:
    """The smallest ``k`` such that ``k × k`` cells cover an ``height × width`` grid in at most ``tokens`` cells."""
    k = max(1, math.isqrt(height * width // tokens))
    while math.ceil(height / k) * math.ceil(width / k) > tokens:
        k += 1
    return k


def token_count(height: int, width: int, tokens: int) -> int:
    """How many tokens an ``height × width`` grid pools to with at most ``tokens``."""
    k = cell_size(height, width, tokens)
    return math.ceil(height / k) * math.ceil(width / k)


def _cell_sums(grid: torch.Tensor, k: int) -> torch.Tensor:
    """Sums of ``grid`` (…, h, w) over ``k × k`` cells, the last ones cut by the border."""
    if k == 1:
        return grid
    height, width = grid.shape[-2:]
    padded = F.pad(grid, (0, -width % k, 0, -height % k))
    flat = padded.reshape(-1, 1, *padded.shape[-2:])
    return (F.avg_pool2d(flat, k) * (k * k)).reshape(*grid.shape[:-2], *(s // k for s in padded.shape[-2:]))


class PooledContext:
    """One attention block's whole-image feature map as at most ``tokens`` context tokens (module
    docstring); ``pad_to`` pads them with dropped tokens to a common count (every block of a
    graph takes the same ``M``)."""

    def __init__(self, feature_map: torch.Tensor, tokens: int, pad_to: int | None = None):
        batch, channels, height, width = feature_map.shape
        self.size = (height, width)
        self.k = cell_size(height, width, tokens)
        counts = _cell_sums(feature_map.new_ones(height, width), self.k)
        self.tokens = pad_to or counts.numel()
        means = _cell_sums(feature_map, self.k) / counts
        self.values = F.pad(means.flatten(2), (0, self.tokens - counts.numel()))  # (B, C, M)

    def feeds(self, top: int, left: int, height: int, width: int, tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The context tokens and their offsets for a tile covering rows ``top:top+height`` and
        columns ``left:left+width`` of the block's grid; padded with dropped tokens to ``tokens``
        (a static graph's fixed count, which a context gathered by another graph may lack)."""
        tokens = tokens or self.tokens
        if tokens < self.tokens:
            raise ValueError(f"a context of {self.tokens} tokens does not fit a graph that takes {tokens}")
        outside = self.values.new_ones(self.size)
        outside[top : top + height, left : left + width] = 0
        counts = _cell_sums(outside, self.k).flatten()
        offsets = torch.where(counts > 0, counts.clamp_min(1).log(), torch.full_like(counts, NO_TOKEN))
        offsets = F.pad(offsets, (0, tokens - counts.numel()), value=NO_TOKEN)
        values = F.pad(self.values, (0, tokens - self.tokens)) if tokens > self.tokens else self.values
        return values, offsets.expand(values.shape[0], -1)
