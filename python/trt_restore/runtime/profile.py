"""Optimisation profiles: the batch and image sizes an engine accepts.

A profile gives, for each size symbol of a :class:`~trt_restore.specs.ComponentSpec`
(``B``, ``H``, ``W``), the minimum, the optimum (what TensorRT tunes for) and the
maximum. Each input's concrete shapes follow from :meth:`TensorSpec.resolve`, so a
latent input ``(B, 4, H/8, W/8)`` gets its range from the image size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import UserError
from ..specs import CONTEXT_SYMBOL, CONTEXT_TOKENS, TensorSpec

Sizes = Mapping[str, int]
Shape = tuple[int, ...]
ShapeRanges = Mapping[str, tuple[Sequence[int], Sequence[int]]]
"""Input name to its (min shape, max shape) under one profile."""


@dataclass(frozen=True)
class Profile:
    """``min ≤ opt ≤ max`` sizes for each symbol, e.g. ``{"B": 1, "H": 256, "W": 256}``."""

    min: Sizes
    opt: Sizes
    max: Sizes

    def __post_init__(self) -> None:
        if not (set(self.min) == set(self.opt) == set(self.max)):
            raise UserError(f"profile sizes name different symbols: {dict(self.min)}, {dict(self.opt)}, {dict(self.max)}")
        for symbol in self.min:
            low, opt, high = self.min[symbol], self.opt[symbol], self.max[symbol]
            if not 1 <= low <= opt <= high:
                raise UserError(f"profile {symbol} must satisfy 1 ≤ min ≤ opt ≤ max, got {low}, {opt}, {high}")

    @classmethod
    def for_images(
        cls,
        hw: tuple[tuple[int, int], tuple[int, int], tuple[int, int]],
        batch: tuple[int, int, int] = (1, 1, 4),
    ) -> "Profile":
        """Profile from (min, opt, max) image sizes ``(H, W)`` and (min, opt, max) batch sizes;
        the attention blocks' context takes 1 token (untiled) to :data:`CONTEXT_TOKENS` (tiled)."""
        tokens = (1, CONTEXT_TOKENS, CONTEXT_TOKENS)
        sizes = [{"B": b, "H": h, "W": w, CONTEXT_SYMBOL: m} for b, (h, w), m in zip(batch, hw, tokens, strict=True)]
        return cls(*sizes)

    def shapes(self, tensor: TensorSpec) -> tuple[Shape, Shape, Shape]:
        """(min, opt, max) concrete shapes of ``tensor`` under this profile."""
        return tensor.resolve(self.min), tensor.resolve(self.opt), tensor.resolve(self.max)

    def contains(self, sizes: Sizes) -> bool:
        """Whether every symbol of ``sizes`` that this profile bounds lies in its range."""
        return all(self.min[s] <= v <= self.max[s] for s, v in sizes.items() if s in self.min)

    def describe(self) -> str:
        """One line, e.g. ``B 1..4 (opt 1), H 64..512 (opt 256), W 64..512 (opt 256)``."""
        return ", ".join(f"{s} {self.min[s]}..{self.max[s]} (opt {self.opt[s]})" for s in self.min)

    def to_json(self) -> dict:
        return {"min": dict(self.min), "opt": dict(self.opt), "max": dict(self.max)}

    @classmethod
    def from_json(cls, data: Mapping) -> "Profile":
        return cls(dict(data["min"]), dict(data["opt"]), dict(data["max"]))


def _fits(shape: Sequence[int], low: Sequence[int], high: Sequence[int]) -> bool:
    return len(shape) == len(low) and all(a <= n <= b for n, a, b in zip(shape, low, high, strict=True))


def _format_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(n)) for n in shape) + ")"


def select_profile(component: str, shapes: Mapping[str, Sequence[int]], ranges: Sequence[ShapeRanges]) -> int:
    """Index of the first profile under which every input shape lies within its [min, max] range.

    Raises a :class:`UserError` that names the first input outside the ranges and lists them.
    """
    for index, profile in enumerate(ranges):
        if all(_fits(shapes[name], *profile[name]) for name in shapes):
            return index
    name = next(n for n in shapes if not _fits(shapes[n], *ranges[0][n]))
    accepted = " or ".join(f"{_format_shape(p[name][0])}..{_format_shape(p[name][1])}" for p in ranges)
    raise UserError(
        f"component '{component}': input '{name}' has shape {_format_shape(shapes[name])}, outside the engine's "
        f"range {accepted}; tile the image or rebuild the engine with a larger profile"
    )
