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

In the diffusion loops the tiled component is the UNet, so every step blends the tiles'
predictions (ε, v or x₀) on the whole latent or image before the sampler's update. That
is MultiDiffusion's scheme (Bar-Tal et al. 2023: each step the least-squares fit of the
tiles' denoised proposals, ``x_{t−1} = Σ_i P_iᵀ(w_i ⊙ Φ(Q_i x_t)) / Σ_i P_iᵀ w_i``): the DDIM
and DDRM updates are affine in the prediction with coefficients equal over the image, so
averaging predictions equals averaging the tiles' proposals, with feathered weights ``w_i``
in place of MultiDiffusion's uniform ones (which leave a step where a tile ends).

Tiling is seamless for networks whose receptive field fits in the overlap (40+ dB), but
not for the diffusers networks as they are: every GroupNorm would normalise a tile with
the tile's own statistics (the main cause of tile-to-tile shifts of colour and contrast:
29-33 dB between a tiled and an untiled 256×256 restoration on 128-pixel tiles), and every
self-attention block would attend over one tile. Graphs exported with a whole-image
interface (``export/group_stats.py``: GroupNorm statistics in, the tile's out;
``export/attention_context.py``: each attention block's whole-image context in, the tile's
feature map out) run in two passes, on every backend alike:

1. every tile runs normalised with its own statistics and attending over itself, and
   reports, for each group, ``(n_i, μ_i, v_i)`` over the pixels it owns
   (:func:`interior_owners`: each image pixel belongs to the tile in which it lies farthest
   from an interior edge, so it counts once and where the tile's features are closest to the
   untiled ones), and each attention block's input feature map. :func:`combine_stats`
   reduces the statistics exactly to the whole image's; the feature maps, weighted by the
   same ownership, make the whole image's map, which :class:`~.attention_context.PooledContext`
   turns into the block's context tokens (at most ``M`` = 1024, pooled beyond that);
2. every tile runs again, normalised with those statistics, its attention blocks attending
   over the tile and the context outside it.

Pass 1 is exact for the first GroupNorm and approximate after it (the layers before see
tile statistics and tile-only attention). Gathering again under the last gathering's
statistics and context makes one more layer exact: after ``k`` gatherings the first ``k``
GroupNorms and attention blocks are, so the gathering has a fixed point, the untiled
network's, reached within ``meta["statistics_depth"]`` gatherings (the graph's GroupNorm
calls and attention blocks). The autoencoder gathers until a gathering reproduces what it ran
under (:func:`settled`; :func:`statistics_passes`). Fewer do not do: its features have large
means (|μ| up to ~95 against σ ~0.6) that amplify the deeper layers' error, and on the way
the error can grow. The bundled decoder on Set5's bird (288 px, 256-pixel tiles) against
the untiled one: 1 gathering 37 dB, 2 24, 3 16, 10 44, settled after 14 of its 19: 64 dB; its
encoder, decoded whole, settles after 12 of 13 at 68 dB (the previous, 4-channel autoencoder:
61 and 65 dB after 10 and 11). The UNets, which run at every step, gather once or twice
(:func:`statistics_passes`). Cost: a tiled call
runs every tile ``1 + passes`` times (``benchmarks/tiling_cost.py``).

Measured on the bundled models at 256×256 on 128-pixel tiles against untiled, five steps
(``tests/test_tiling.py``, torch and onnxruntime alike): with statistics alone DDRM 37.9 dB
and DDRM-LDM 38.5; with the attention context as well DDRM 41.8 and DDRM-LDM 39.4. Exact
context (the untiled run's feature maps) with pass-1 statistics gives DDRM 40.8; with exact
statistics as well 63.1. Peak memory grows by the attention feature maps (``C·h·w`` floats
per block on its grid) and up to ``M`` more keys per query. Untiled runs give the same graph
one dropped context token (0.84-1.20× the plain network's time, within the noise of that
measurement).

The decoder VJP takes pass 1 from the decoder (same tiles, remembered for the last latent)
and is the adjoint of the tiled decoder at those frozen statistics and context.

Self-attention over the whole latent matters most in the latent UNets, which therefore also
run on wider tiles (``api.latent_unet_tile``: ``tile/2`` latent pixels), so that a latent up
to that size runs whole. Images up to ``tile`` run whole, so the default tiles
(``api.DEFAULT_TILES``) are a memory bound, not a quality setting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..specs import (
    GROUP_STATS_INPUT,
    STATS_WEIGHT_INPUT,
    TILE_STATS_OUTPUT,
    ComponentSpec,
    attention_context_count,
    attention_context_names,
    has_group_stats,
    without_group_stats,
)
from .attention_context import PooledContext, empty_context, token_count
from .engine import Engine
from .graphs import capturing

REMEMBERED_STATISTICS = 2
"""Inputs whose pass 1 a tiled engine remembers: the decoder VJP at ``v`` takes the decoder's pass 1
at ``v`` even when a decoder call at another latent came between."""


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size``; the last one ends at ``size``."""
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def tile_edges(size: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` covering ``size`` begin or end inside the image (:func:`tile_starts`)."""
    starts = tile_starts(size, tile, overlap)
    return sorted({s for s in starts if s > 0} | {s + tile for s in starts if s + tile < size})


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


def interior_owners(starts: list[int], tile: int, canvas: int, size: int, device) -> list[torch.Tensor]:
    """For tiles of length ``tile`` at ``starts``, which of a tile's positions it owns (1) in the
    statistics: each position of the image (below ``size``) belongs to the tile in which it lies
    farthest from an interior edge, where the tile's features are closest to the untiled ones."""
    position = torch.arange(canvas, device=device, dtype=torch.float32) + 0.5
    margins = []
    for start in starts:
        margin = torch.full((canvas,), -torch.inf, device=device)
        inside = slice(start, start + tile)
        before = position[inside] - start if start > 0 else torch.full((tile,), torch.inf, device=device)
        after = start + tile - position[inside] if start + tile < canvas else torch.full((tile,), torch.inf, device=device)
        margin[inside] = torch.minimum(before, after)
        margins.append(margin)
    owner = torch.stack(margins).argmax(0)
    owner[size:] = -1
    return [(owner[start : start + tile] == index).float() for index, start in enumerate(starts)]


def combine_stats(parts: list[torch.Tensor]) -> torch.Tensor:
    """Whole-image ``(n, μ, v)`` per group from the tiles' ``(n_i, μ_i, v_i)``, each (B, 3, G), in float64:

        n = Σ n_i,   μ = Σ n_i μ_i / n,   v = Σ n_i (v_i + (μ_i − μ)²) / n
    """
    stacked = torch.stack(parts).double()
    n, mean, var = stacked[:, :, 0], stacked[:, :, 1], stacked[:, :, 2]
    total = n.sum(0)
    whole_mean = (n * mean).sum(0) / total
    whole_var = (n * (var + (mean - whole_mean) ** 2)).sum(0) / total
    return torch.stack((total, whole_mean, whole_var), 1).float()


@dataclass(frozen=True)
class WholeImage:
    """What pass 1 of a tiled call learns of the whole image: the GroupNorms' ``(n, μ, v)``
    (B, 3, G) and each attention block's context (:class:`PooledContext`)."""

    stats: torch.Tensor
    contexts: tuple[PooledContext, ...] | None = None  # None: every tile attends over itself only


SETTLED_TOLERANCE = 1e-3
"""A pass has settled when no group's mean moves by more than this many standard deviations, no
variance by more than this fraction and no context value by more than this fraction of the largest."""


def settled(given: WholeImage, gathered: WholeImage) -> bool:
    """Whether a statistics pass reproduced, within :data:`SETTLED_TOLERANCE`, the statistics and
    context it ran under: their fixed point, which is the untiled network's."""
    (given_n, given_mean, given_var), (n, mean, var) = given.stats.unbind(1), gathered.stats.unbind(1)
    scale = var.clamp_min(1e-12)
    if not torch.equal(given_n, n) or bool(((mean - given_mean) ** 2 > SETTLED_TOLERANCE**2 * scale).any()):
        return False
    if bool(((var - given_var).abs() > SETTLED_TOLERANCE * scale).any()):
        return False
    return all(
        bool((new.values - old.values).abs().max() <= SETTLED_TOLERANCE * new.values.abs().max())
        for old, new in zip(given.contexts or (), gathered.contexts or (), strict=True)
    )


def static_context_tokens(spec: ComponentSpec) -> int | None:
    """The fixed context-token count ``M`` of a graph with static shapes; ``None`` where ``M`` is dynamic (or absent)."""
    count = next((t.shape[-1] for t in spec.inputs if t.name == attention_context_names(0)[0]), None)
    return count if isinstance(count, int) else None


def no_context(spec: ComponentSpec, batch: int, device) -> dict[str, torch.Tensor]:
    """Context inputs under which every attention block of ``spec`` attends over its tile only."""
    feeds, count = {}, static_context_tokens(spec) or 1  # a static graph's fixed count, else one token
    for index in range(attention_context_count(spec)):
        tokens, offsets, _ = attention_context_names(index)
        channels = next(t.shape[1] for t in spec.inputs if t.name == tokens)
        feeds[tokens], feeds[offsets] = empty_context(batch, channels, count, device)
    return feeds


def drop_reports(spec: ComponentSpec, outputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Remove the attention blocks' reported feature maps from ``outputs``; returns them in block order."""
    return [outputs.pop(attention_context_names(i)[2]) for i in range(attention_context_count(spec))]


class OwnStatistics(Engine):
    """``inner`` (a graph with GroupNorm statistics inputs) on whole images, each normalised
    with its own statistics (``n = 0``), as a plain GroupNorm does."""

    def __init__(self, inner: Engine):
        super().__init__(without_group_stats(inner.spec), inner.device)
        self.inner = inner
        self.backend = inner.backend
        self.groups = inner.spec.meta["group_stats"]
        self.divisor = spatial_divisors(inner.spec)[STATS_WEIGHT_INPUT]  # the finest grid's

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_open()
        divisors = spatial_divisors(self.inner.spec)
        name = next(t.name for t in self.spec.inputs if t.name in divisors)  # an image-shaped input
        value, scale = inputs[name], divisors[name] // self.divisor
        grid = (value.shape[0], 1, value.shape[-2] * scale, value.shape[-1] * scale)
        own = {
            GROUP_STATS_INPUT: torch.zeros(value.shape[0], 3, self.groups, device=self.device),
            STATS_WEIGHT_INPUT: torch.ones(grid, device=self.device),
            **no_context(self.inner.spec, value.shape[0], self.device),
        }
        outputs = self.inner(**inputs, **own)
        outputs.pop(TILE_STATS_OUTPUT)
        drop_reports(self.inner.spec, outputs)
        return outputs

    def _run(self, feeds, sizes):
        raise NotImplementedError("OwnStatistics overrides __call__ and never reaches _run")

    def _release(self) -> None:
        self.inner.close()


def whole(engine: Engine) -> Engine:
    """``engine`` for whole images: :class:`OwnStatistics` where it takes GroupNorm statistics."""
    return OwnStatistics(engine) if has_group_stats(engine.spec) else engine


class TiledEngine(Engine):
    """``inner`` on overlapping ``tile``-sized pieces when the image is larger (or the graph is static).

    When ``inner`` takes whole-image GroupNorm statistics (:func:`~trt_restore.specs.has_group_stats`),
    a tiled call makes two passes: :meth:`statistics` runs every tile up to ``statistics_passes``
    times to gather them and the attention blocks' context (stopping once they settle), then the
    tiles run again with them.
    ``statistics_from`` takes pass 1 from another engine with the same tiles and GroupNorms
    (the decoder VJP from the decoder), which remembers the result for its last inputs.
    """

    def __init__(
        self,
        inner: Engine,
        tile: tuple[int, int],
        overlap: int,
        *,
        adjoint_of: str | None = None,
        statistics_from: TiledEngine | None = None,
        statistics_passes: int = 1,
    ):
        super().__init__(without_group_stats(inner.spec), inner.device)
        self.inner = inner
        self.backend = inner.backend
        self.tile = tile
        self.overlap = overlap
        self.adjoint_input = adjoint_of
        self.group_stats = has_group_stats(inner.spec)
        self.untiled = whole(inner)
        self.statistics_source = statistics_from or self
        self.statistics_passes = statistics_passes
        self.passes_run = 0  # by the last gathering
        self._statistics_inputs: dict[str, torch.Tensor] | None = None  # set by statistics_of
        self._remembered: deque[tuple[dict[str, torch.Tensor], WholeImage]] = deque(maxlen=REMEMBERED_STATISTICS)
        self.divisors = spatial_divisors(inner.spec)
        self.static = all(isinstance(d, int) for t in inner.spec.inputs for d in t.shape)
        self.context_tokens = static_context_tokens(inner.spec)
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
            return self.untiled(**inputs)
        return self._tiled(inputs, height, width)

    def _run(self, feeds, sizes):
        raise NotImplementedError("TiledEngine overrides __call__ and never reaches _run")

    def _release(self) -> None:
        self.inner.close()

    @contextmanager
    def statistics_of(self, **inputs: torch.Tensor) -> Iterator[None]:
        """Tiled calls in the block run at the statistics of ``inputs`` (remembered when they were
        just gathered): a finite difference ``(D(z + εu) − D(z))/ε`` in the block is ``J_D u`` at
        the frozen statistics, the Jacobian whose adjoint the decoder VJP is."""
        self._statistics_inputs = inputs
        try:
            yield
        finally:
            self._statistics_inputs = None

    def _image_size(self, inputs) -> tuple[int, int]:
        for tensor in self.spec.inputs:
            if tensor.name in self.divisors:
                value, d = inputs[tensor.name], self.divisors[tensor.name]
                return value.shape[-2] * d, value.shape[-1] * d
        raise UserError(f"component '{self.spec.name}' has no image-shaped input to tile")

    def _tiles(self, height: int, width: int):
        """The canvas, and each tile's ``(top, left, w_i, ŵ_i, ω_i)``: its blend weight, that weight
        normalised to sum to one over the tiles and zero on the canvas's padding, and its share of
        the statistics (:func:`interior_owners`)."""
        tile_h, tile_w = self.tile
        canvas_h, canvas_w = max(height, tile_h), max(width, tile_w)
        rows, cols = tile_starts(canvas_h, tile_h, self.overlap), tile_starts(canvas_w, tile_w, self.overlap)
        total = torch.zeros(canvas_h, canvas_w, device=self.device)
        for top in rows:
            for left in cols:
                total[top : top + tile_h, left : left + tile_w] += self._weight(top, left, canvas_h, canvas_w)
        total[height:], total[:, width:] = torch.inf, torch.inf
        row_owners = interior_owners(rows, tile_h, canvas_h, height, self.device)
        col_owners = interior_owners(cols, tile_w, canvas_w, width, self.device)
        tiles = []
        for top, row_share in zip(rows, row_owners, strict=True):
            for left, col_share in zip(cols, col_owners, strict=True):
                weight = self._weight(top, left, canvas_h, canvas_w)
                normalised = weight / total[top : top + tile_h, left : left + tile_w]
                tiles.append((top, left, weight, normalised, row_share[:, None] * col_share[None, :]))
        return (canvas_h, canvas_w), tiles

    def _stats_feeds(self, piece, share, given: WholeImage | None, top: int, left: int) -> dict[str, torch.Tensor]:
        """``piece`` (the tile at ``top, left``) with the given statistics (zeros: its own), its
        pixels' weight in them, and the attention blocks' context around it."""
        if given is None:
            return piece
        weight = self._resample(share, self.divisors[STATS_WEIGHT_INPUT])
        batch = next(iter(piece.values())).shape[0]
        feeds = {**piece, GROUP_STATS_INPUT: given.stats, STATS_WEIGHT_INPUT: weight.expand(batch, 1, *weight.shape)}
        if given.contexts is None:
            return {**feeds, **no_context(self.inner.spec, batch, self.device)}
        for index, context in enumerate(given.contexts):
            tokens, offsets, reported = attention_context_names(index)
            d = self.divisors[reported]
            feeds[tokens], feeds[offsets] = context.feeds(top // d, left // d, self.tile[0] // d, self.tile[1] // d, self.context_tokens)
        return feeds

    def forget(self) -> None:
        """Drop the remembered statistics: the next call gathers them anew (for timing a call)."""
        self._remembered.clear()

    def statistics(self, **inputs: torch.Tensor) -> WholeImage:
        """Pass 1: the whole image's GroupNorm ``(n, μ, v)`` (B, 3, G) from every tile
        normalised with its own (:func:`combine_stats`), and each attention block's feature map
        from the tiles' maps weighted by the pixels they own, gathered again under the last
        gathering's until they settle or ``statistics_passes`` ran; remembered for the last
        :data:`REMEMBERED_STATISTICS` inputs."""
        for last, stats in () if capturing() else self._remembered:  # comparing waits for the GPU
            if last.keys() == inputs.keys() and all(
                last[k].shape == v.shape and torch.equal(last[k], v.to(last[k].device)) for k, v in inputs.items()
            ):
                return stats
        height, width = self._image_size(inputs)
        batch = next(iter(inputs.values())).shape[0]
        zeros = torch.zeros(batch, 3, self.inner.spec.meta["group_stats"], device=self.device)
        whole_image, self.passes_run = WholeImage(zeros), 0
        while self.passes_run < self.statistics_passes:
            given, whole_image = whole_image, self._gather(inputs, height, width, whole_image)
            self.passes_run += 1
            if not capturing() and settled(given, whole_image):  # a captured graph runs every pass
                break
        self._remembered.append(({k: v.detach().clone() for k, v in inputs.items()}, whole_image))
        return whole_image

    def _gather(self, inputs, height: int, width: int, given: WholeImage) -> WholeImage:
        """One pass of every tile under ``given``: the tiles' statistics combined, and their
        attention feature maps weighted by the pixels they own."""
        (canvas_h, canvas_w), tiles = self._tiles(height, width)
        padded = {name: self._pad(name, value, canvas_h, canvas_w) for name, value in inputs.items()}
        names = [attention_context_names(i)[2] for i in range(attention_context_count(self.inner.spec))]
        parts, maps = [], []
        for top, left, _, _, share in tiles:
            piece = {name: self._cut(name, value, top, left) for name, value in padded.items()}
            outputs = self.inner(**self._stats_feeds(piece, share, given, top, left))
            parts.append(outputs[TILE_STATS_OUTPUT])
            for index, feature_map in enumerate(drop_reports(self.inner.spec, outputs)):
                d = self.divisors[names[index]]
                if len(maps) == index:  # the first tile: the block's whole-image map, empty
                    maps.append(feature_map.new_zeros(*feature_map.shape[:2], canvas_h // d, canvas_w // d, dtype=torch.float32))
                self._cut(names[index], maps[index], top, left).add_(feature_map.float() * self._resample(share, d))
        grids = [m[..., : height // self.divisors[n], : width // self.divisors[n]] for n, m in zip(names, maps, strict=True)]
        most = self.inner.spec.meta.get("context_tokens", 0)
        # every block takes the same number of tokens (one symbol M): a static graph's, else the largest block's
        pad_to = self.context_tokens or max((token_count(*g.shape[-2:], most) for g in grids), default=0)
        contexts = tuple(PooledContext(grid, most, pad_to=pad_to) for grid in grids)
        return WholeImage(combine_stats(parts), contexts)

    def _tiled(self, inputs, height, width) -> dict[str, torch.Tensor]:
        tile_h, tile_w = self.tile
        (canvas_h, canvas_w), tiles = self._tiles(height, width)
        whole_image = None
        if self.group_stats and len(tiles) == 1:  # a static graph's one tile: its own statistics, as untiled
            batch = next(iter(inputs.values())).shape[0]
            whole_image = WholeImage(torch.zeros(batch, 3, self.inner.spec.meta["group_stats"], device=self.device))
        elif self.group_stats:
            source, given = self.statistics_source, self._statistics_inputs or inputs
            whole_image = source.statistics(**{t.name: given[t.name] for t in source.spec.inputs})
        inputs = {name: self._pad(name, value, canvas_h, canvas_w) for name, value in inputs.items()}
        outputs: dict[str, torch.Tensor] = {}
        totals: dict[str, torch.Tensor] = {}
        for top, left, weight, normalised, share in tiles:
            piece = {name: self._cut(name, value, top, left) for name, value in inputs.items()}
            if self.adjoint_input is not None:
                piece[self.adjoint_input] = piece[self.adjoint_input] * normalised
            results = self.inner(**self._stats_feeds(piece, share, whole_image, top, left))
            results.pop(TILE_STATS_OUTPUT, None)
            drop_reports(self.inner.spec, results)
            for name, value in results.items():
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

    @staticmethod
    def _resample(weight: torch.Tensor, divisor: int) -> torch.Tensor:
        """The blend weight on a grid ``divisor`` times coarser (mean over each block)."""
        return weight if divisor == 1 else F.avg_pool2d(weight[None, None], divisor)[0, 0]


def statistics_passes(spec: ComponentSpec) -> int:
    """At most how many times pass 1 runs for a component. The autoencoder gathers until its
    statistics settle, which takes at most one pass per GroupNorm and attention block in its
    graph (``meta["statistics_depth"]``; bounded by the group count in graphs exported without
    it). The UNets run at every step: the latent UNets, on tiles twice as wide, gather once; the
    pixel UNet twice (DDRM tiled vs untiled, Set14's baboon at 192² on 128-pixel tiles, five
    steps: 1 gathering 36.9 dB, 2 43.3, 3 45.2 with the bundled pixel UNet; the previous,
    CPU-trained one gave 41.8 with 1 and 40.1 with 2)."""
    if spec.name == "pixel_unet":
        return 2
    if spec.name not in ("encoder", "decoder"):
        return 1
    return spec.meta.get("statistics_depth", spec.meta["group_stats"])


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


