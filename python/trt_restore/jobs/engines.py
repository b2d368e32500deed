"""A request's engines: where they come from (:class:`EngineSource`) and the cache that reuses them."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..methods import Backend, InferencePrecision
from .timing import stage

if TYPE_CHECKING:
    from ..pipelines import Models

MIN_TILE_MULTIPLES = 2
"""Tiles span at least this many of the networks' size multiples (their overlap is one multiple)."""


@dataclass(frozen=True)
class EngineSource:
    """Where a request's engines come from: calling it loads them for a restored size and a tile.

    It holds no engines itself, so it pickles cheaply to the processes that load them.
    """

    method: str
    engine: Path | None
    model_set: str
    backend: Backend
    device: str | None
    threads: int | None
    adapt: bool
    scale: int
    precision: InferencePrecision | None = None
    """The openvino backend's arithmetic (None: a bundle's, else auto)."""
    vae: str | None = None
    """An autoencoder folder in place of the model set's (:func:`~trt_restore.api.load_models`)."""

    def __call__(self, size: tuple[int, int], tile: int | None) -> tuple[str, Models]:
        from ..api import load_models

        return load_models(
            self.method,
            engine=self.engine,
            model_set=self.model_set,
            vae=self.vae,
            backend=self.backend,
            device=self.device,
            image_size=size,
            scale=self.scale,
            threads=self.threads,
            adapt=self.adapt,
            tile=tile,
            precision=self.precision,
        )

    def cache(self, tile: int | None) -> EngineCache:
        """An empty :class:`EngineCache` that loads from this source."""
        return EngineCache(self, self.scale, reloadable=self.engine is None, tile=tile)


class EngineCache:
    """The method's engines, loaded once and reused for every image.

    Graphs with static shapes (the decoder VJP) are exported for one padded canvas, so
    engines made from a model set with such graphs on a backend other than torch are
    loaded again when an image needs another canvas. The trainable networks (the INN that
    ``--adapt`` fine-tunes) are reset to their loaded weights for every image, so that no
    result depends on the images before it. ``tile`` (image pixels, None: the engines'
    default) is the size of the overlapping tiles the networks run on. Engines the cache
    replaces are closed before the new ones load; :meth:`close` closes those it holds.
    """

    def __init__(
        self,
        load: Callable[[tuple[int, int], int | None], tuple[str, Models]],
        scale: int,
        reloadable: bool,
        tile: int | None = None,
    ):
        self._load = load
        self._scale = scale
        self._reloadable = reloadable
        self.tile = tile
        self._models: Models | None = None
        self._canvas: tuple[int, int] | None = None
        self._per_canvas = False
        self._loaded_weights: dict[str, dict] = {}

    def get(self, size: tuple[int, int]) -> Models:
        """The engines for a restored image of ``size`` (H, W), ready for a new image."""
        if self._models is None or (self._per_canvas and self._canvas_for(size) != self._canvas):
            with stage(f"load engines for {size[0]}x{size[1]}" if self._models else "load engines"):
                self.close()
                _, self._models = self._load(size, self.tile)
            self._check_tile()
            engines = self._models.engines.values()
            self._per_canvas = self._reloadable and any(
                engine.backend != "torch" and engine.spec.meta.get("static_shapes") for engine in engines
            )
            self._canvas = self._canvas_for(size)
            self._loaded_weights = {
                name: copy.deepcopy(network.state_dict()) for name, network in self._models.trainable.items()
            }
        for name, network in self._models.trainable.items():
            network.load_state_dict(self._loaded_weights[name])
        self._models.timings.clear()
        return self._models

    def close(self) -> None:
        """Close the loaded engines, if any (idempotent); the next :meth:`get` loads them again."""
        if self._models is not None:
            self._models.close()
            self._models = None
            self._loaded_weights = {}

    @property
    def backend(self) -> str | None:
        """The backend of the loaded engines; None before the first :meth:`get`."""
        return None if self._models is None else next(iter(self._models.engines.values())).backend

    @property
    def timings(self) -> Mapping[str, list[float]]:
        """Seconds of each component's calls since the last :meth:`get`."""
        return {} if self._models is None else self._models.timings

    def use_smaller_tiles(self, size: tuple[int, int]) -> int | None:
        """Halve the tiles for the next :meth:`get`: the engines' current tile (the one that
        failed), or the image's canvas when they run untiled, rounded down to the networks' size
        multiple, and close the engines. Returns the new tile, None when the tiles cannot shrink
        (the engines stay loaded)."""
        from ..api import size_multiple
        from ..runtime.tiling import TiledEngine

        engines = self._models.engines.values()
        tiles = [min(engine.tile) for engine in engines if isinstance(engine, TiledEngine) and not engine.static]
        current = min(tiles, default=max(self._canvas_for(size)))
        multiple = size_multiple(self._models)
        smaller = current // 2 // multiple * multiple
        if smaller < MIN_TILE_MULTIPLES * multiple:
            return None
        self.tile = smaller
        self.close()
        return smaller

    def _check_tile(self) -> None:
        from ..api import size_multiple

        smallest = MIN_TILE_MULTIPLES * size_multiple(self._models)
        if self.tile is not None and self.tile < smallest:
            raise UserError(f"--tile {self.tile} is too small for these networks; use {smallest} or more")

    def _canvas_for(self, size: tuple[int, int]) -> tuple[int, int]:
        from ..api import padded_size, size_multiple

        return padded_size(size, math.lcm(size_multiple(self._models), self._scale))
