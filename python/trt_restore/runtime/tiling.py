"""Overlapping tiles for images larger than an engine accepts, blended smoothly outside the graph.

A component runs on tiles of ``tile`` image pixels that overlap by ``overlap``; every
4-D tensor is cut on its own grid (a latent ``H/8`` is cut at 1/8 of the image
coordinates). The tiles' outputs are blended with separable weights ``w`` that ramp
linearly across each interior overlap and are normalised so that they sum to one:

    out = Σ_i P_iᵀ (ŵ_i ⊙ f(Q_i x)),     ŵ_i = w_i / Σ_j P_jᵀ w_j

The decoder's vector-Jacobian product must be the adjoint of that tiled decoder, so a
component in ``adjoint`` mode weights its image-space cotangent by ``ŵ_i`` and sums the
tile results:

    J_Dᵀ r = Σ_i Q_iᵀ J_D(Q_i z)ᵀ (ŵ_i ⊙ P_i r)

Graphs with static shapes (``decoder_vjp``) always get tiles of exactly their size; an
image smaller than a tile is padded (replicated inputs, zero cotangent) and cropped.

Tiling is seamless for networks whose receptive field fits in the overlap (40+ dB), but
not exact for the diffusers networks, whose GroupNorm statistics and mid-block
self-attention span the whole input: a tile sees its own. A 256×256 restoration on
128-pixel tiles differs from the untiled one by 29-33 dB PSNR (bundled models; 17-33 dB
with the random tiny ones; RELD's denoising, which leans on the observation, 47 dB), and
a wider overlap does not change that (0.5 instead of 0.25 of the tile: ±0.5 dB). GroupNorm is the main cause: with whole-image statistics in
every GroupNorm (the two-pass scheme of tiled VAEs; measured by normalising each tile
with the statistics of an untiled pass) the same restorations agree to 57 dB (ddrm),
43 (ddrm-ldm), 42 (reld, indigo-pixel), 38 (ldm-sr) and 35 (indigo-latent), the rest
being the global self-attention of the VAE and latent UNets. That scheme needs every
GroupNorm's statistics as graph inputs and outputs (partial sums per tile, reduced
between passes), which the exported graphs do not have yet. Images up to ``tile`` run
whole, so the default tiles (``api.DEFAULT_TILES``) are a memory bound, not a quality setting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..specs import ComponentSpec
from .engine import Engine


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size``; the last one ends at ``size``."""
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def ramp(length: int, start: int, total: int, overlap: int, device) -> torch.Tensor:
    """1-D blend weight of a tile at ``start``: linear ramps over the overlap on interior edges."""
    position = torch.arange(length, device=device, dtype=torch.float32) + 0.5
    weight = torch.ones(length, device=device)
    if overlap > 0 and start > 0:
        weight = torch.minimum(weight, position / overlap)
    if overlap > 0 and start + length < total:
        weight = torch.minimum(weight, (length - position) / overlap)
    return weight


def spatial_divisors(spec: ComponentSpec) -> dict[str, int]:
    """For each 4-D tensor of the spec, how many image pixels one of its pixels spans."""
    tensors = [t for t in (*spec.inputs, *spec.outputs) if len(t.shape) == 4]
    static = [t.shape[-2] for t in tensors if isinstance(t.shape[-2], int)]
    divisors = {}
    for tensor in tensors:
        dim = tensor.shape[-2]
        if isinstance(dim, str):
            divisors[tensor.name] = int(dim.partition("/")[2] or 1)
        else:
            divisors[tensor.name] = max(static) // dim
    return divisors


class TiledEngine(Engine):
    """``inner`` on overlapping ``tile``-sized pieces when the image is larger (or the graph is static)."""

    def __init__(self, inner: Engine, tile: tuple[int, int], overlap: int, *, adjoint_of: str | None = None):
        super().__init__(inner.spec, inner.device)
        self.inner = inner
        self.backend = inner.backend
        self.tile = tile
        self.overlap = overlap
        self.adjoint_input = adjoint_of
        self.divisors = spatial_divisors(inner.spec)
        self.static = all(isinstance(d, int) for t in inner.spec.inputs for d in t.shape)
        multiple = max(inner.spec.multiple, max(self.divisors.values(), default=1))
        if overlap >= min(tile):
            raise UserError(
                f"tile {tile[0]}×{tile[1]} is too small for component '{inner.spec.name}' "
                f"(tiles must exceed their {overlap}-pixel overlap); use a larger --tile"
            )
        if any(t % multiple for t in tile) or overlap % multiple:
            raise UserError(
                f"component '{inner.spec.name}': tile {tile} and overlap {overlap} must be multiples of {multiple}"
            )

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_open()
        height, width = self._image_size(inputs)
        if not self.static and height <= self.tile[0] and width <= self.tile[1]:
            return self.inner(**inputs)
        return self._tiled(inputs, height, width)

    def _run(self, feeds, sizes):
        raise NotImplementedError("TiledEngine overrides __call__ and never reaches _run")

    def _release(self) -> None:
        self.inner.close()

    def _image_size(self, inputs) -> tuple[int, int]:
        for tensor in self.spec.inputs:
            if tensor.name in self.divisors:
                value, d = inputs[tensor.name], self.divisors[tensor.name]
                return value.shape[-2] * d, value.shape[-1] * d
        raise UserError(f"component '{self.spec.name}' has no image-shaped input to tile")

    def _tiled(self, inputs, height, width) -> dict[str, torch.Tensor]:
        tile_h, tile_w = self.tile
        canvas_h, canvas_w = max(height, tile_h), max(width, tile_w)
        inputs = {name: self._pad(name, value, canvas_h, canvas_w) for name, value in inputs.items()}
        outputs: dict[str, torch.Tensor] = {}
        totals: dict[str, torch.Tensor] = {}
        rows, cols = tile_starts(canvas_h, tile_h, self.overlap), tile_starts(canvas_w, tile_w, self.overlap)
        total = self._total(rows, cols, canvas_h, canvas_w) if self.adjoint_input is not None else None
        for top in rows:
            for left in cols:
                weight = self._weight(top, left, canvas_h, canvas_w)
                piece = {name: self._cut(name, value, top, left) for name, value in inputs.items()}
                if total is not None:
                    normalised = weight / total[top : top + tile_h, left : left + tile_w]
                    piece[self.adjoint_input] = piece[self.adjoint_input] * normalised
                for name, value in self.inner(**piece).items():
                    d = self.divisors.get(name)
                    if d is None:
                        raise UserError(f"component '{self.spec.name}': output '{name}' cannot be tiled")
                    if name not in outputs:
                        outputs[name] = value.new_zeros(*value.shape[:-2], canvas_h // d, canvas_w // d)
                        totals[name] = value.new_zeros(canvas_h // d, canvas_w // d)
                    region = (slice(top // d, (top + tile_h) // d), slice(left // d, (left + tile_w) // d))
                    w = torch.ones_like(value[0, 0]) if self.adjoint_input else self._resample(weight, d)
                    outputs[name][(..., *region)] += value * w
                    totals[name][region] += w
        return {
            name: (value if self.adjoint_input else value / totals[name])[..., : height // self.divisors[name], : width // self.divisors[name]]
            for name, value in outputs.items()
        }

    def _pad(self, name: str, value: torch.Tensor, canvas_h: int, canvas_w: int) -> torch.Tensor:
        d = self.divisors.get(name)
        if d is None:
            return value
        extra_h, extra_w = canvas_h // d - value.shape[-2], canvas_w // d - value.shape[-1]
        if extra_h == 0 and extra_w == 0:
            return value
        if name == self.adjoint_input:
            return F.pad(value, (0, extra_w, 0, extra_h))
        return F.pad(value, (0, extra_w, 0, extra_h), mode="replicate")

    def _cut(self, name: str, value: torch.Tensor, top: int, left: int) -> torch.Tensor:
        d = self.divisors.get(name)
        if d is None:
            return value
        return value[..., top // d : (top + self.tile[0]) // d, left // d : (left + self.tile[1]) // d]

    def _weight(self, top: int, left: int, canvas_h: int, canvas_w: int) -> torch.Tensor:
        rows = ramp(self.tile[0], top, canvas_h, self.overlap, self.device)
        cols = ramp(self.tile[1], left, canvas_w, self.overlap, self.device)
        return rows[:, None] * cols[None, :]

    def _total(self, rows: list[int], cols: list[int], canvas_h: int, canvas_w: int) -> torch.Tensor:
        """``Σ_j P_jᵀ w_j`` on the image grid, which normalises the tiles' weights to ``ŵ_i``."""
        total = torch.zeros(canvas_h, canvas_w, device=self.device)
        for top in rows:
            for left in cols:
                total[top : top + self.tile[0], left : left + self.tile[1]] += self._weight(top, left, canvas_h, canvas_w)
        return total

    @staticmethod
    def _resample(weight: torch.Tensor, divisor: int) -> torch.Tensor:
        """The blend weight on a grid ``divisor`` times coarser (mean over each block)."""
        return weight if divisor == 1 else F.avg_pool2d(weight[None, None], divisor)[0, 0]


def tile_for(spec: ComponentSpec, tile: int | None, overlap_fraction: float = 0.25) -> tuple[tuple[int, int], int] | None:
    """Tile size and overlap for a component: its static size, else ``tile`` (None: no tiling)."""
    multiple = max(spec.multiple, max(spatial_divisors(spec).values(), default=1))
    static = [t for t in spec.inputs if len(t.shape) == 4 and all(isinstance(d, int) for d in t.shape)]
    if static:
        d = spatial_divisors(spec)[static[0].name]
        size = (static[0].shape[-2] * d, static[0].shape[-1] * d)
    elif tile is None:
        return None
    else:
        size = (tile, tile)
    overlap = max(multiple, int(min(size) * overlap_fraction) // multiple * multiple)
    return size, overlap


