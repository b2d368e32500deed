"""Whole-image GroupNorm statistics as graph inputs and outputs, for tiled runs.

A tile's GroupNorms normalise with the tile's own statistics, so tiles of one image come
out with shifted colour and contrast. :class:`GroupStats` wraps a component so that every
GroupNorm it calls (in call order, ``G`` groups in all) takes its statistics from a graph
input and reports the tile's own as a graph output:

- input ``group_stats`` ``(B, 3, G)``: per group the whole image's ``(n, μ, v)``: weight,
  mean and variance. A group with ``n = 0`` normalises with the tile's own statistics, as
  ``nn.GroupNorm`` does (an untiled run, and pass 1 of a tiled one);
- input ``stats_weight`` ``(B, 1, h, w)`` on the component's finest grid: how much each
  pixel of the tile counts in the whole image (1 where the tile owns the pixel, 0 elsewhere
  and on padding; ones untiled); a layer on a grid ``k`` times coarser averages it over ``k × k`` blocks
  and broadcasts it over the group's channels: ``ω``;
- output ``tile_stats`` ``(B, 3, G)``: the tile's weighted statistics of each group's input,

      n_i = Σ ω,   μ_i = Σ ω x / n_i,   v_i = Σ ω (x − μ_i)² / n_i,

  which combine exactly over the tiles (:func:`trt_restore.runtime.tiling.combine_stats`).

Each group then computes ``(x − μ) / √(v + ε) · γ + β`` in float32, whatever the graph's
precision. The GroupNorms are replaced in place by :class:`StatsGroupNorm`, which is the
plain GroupNorm whenever no wrapper is running it, so the other users of the network
(training, the plain wrappers) see no change.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from trt_restore.specs import (
    GROUP_STATS_INPUT,
    STATS_WEIGHT_INPUT,
    TILE_STATS_OUTPUT,
    ComponentSpec,
    TensorSpec,
)

from .components import Component


class StatsContext:
    """What the GroupNorms of one network read while a :class:`GroupStats` runs it: the given
    statistics, the weight map, how many groups are consumed so far, and the tiles' statistics."""

    def __init__(self):
        self.stats: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None
        self.offset = 0
        self.collected: list[torch.Tensor] = []

    @contextmanager
    def running(self, stats: torch.Tensor, weight: torch.Tensor) -> Iterator[list[torch.Tensor]]:
        self.stats, self.weight, self.offset, self.collected = stats, weight, 0, []
        try:
            yield self.collected
        finally:
            self.stats = self.weight = None


class StatsGroupNorm(nn.Module):
    """A GroupNorm (same parameters) that reads and reports statistics through its :class:`StatsContext`."""

    def __init__(self, norm: nn.GroupNorm, context: StatsContext):
        super().__init__()
        self.num_groups, self.eps, self.affine = norm.num_groups, norm.eps, norm.affine
        self.weight, self.bias = norm.weight, norm.bias
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.context
        if context.stats is None:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        batch, channels, groups = x.shape[0], x.shape[1], self.num_groups
        grouped = x.float().reshape(batch, groups, channels // groups, -1)
        omega = self._pixel_weight(x, context.weight)[:, :, None, :]  # (B, 1, 1, N)
        count = omega.sum(-1, keepdim=True) * (channels // groups)
        tile_mean = (grouped * omega).sum((-1, -2), keepdim=True) / count.clamp_min(1e-12)
        tile_var = ((grouped - tile_mean) ** 2 * omega).sum((-1, -2), keepdim=True) / count.clamp_min(1e-12)
        given = context.stats[:, :, context.offset : context.offset + groups, None, None].float()  # (B, 3, g, 1, 1)
        context.offset += groups
        context.collected.append(
            torch.stack((count.expand_as(tile_mean), tile_mean, tile_var), 1).reshape(batch, 3, groups).detach()
        )
        use_given = given[:, 0] > 0
        mean = torch.where(use_given, given[:, 1], grouped.mean((-1, -2), keepdim=True))
        var = torch.where(use_given, given[:, 2], grouped.var((-1, -2), unbiased=False, keepdim=True))
        out = ((grouped - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        if self.affine:
            shape = (1, channels) + (1,) * (x.dim() - 2)
            out = out * self.weight.float().reshape(shape) + self.bias.float().reshape(shape)
        return out.to(x.dtype)

    @staticmethod
    def _pixel_weight(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` (B, 1, h, w) averaged onto the grid of ``x`` and flattened: (B, 1, N).

        A 3-D ``x`` (B, C, N) is an attention block's flattened square-grid feature map."""
        height, width = weight.shape[-2:]
        pixels = x.shape[-2] * x.shape[-1] if x.dim() == 4 else x.shape[-1]
        factor = math.isqrt(int(height * width) // int(pixels))
        pooled = F.avg_pool2d(weight, factor) if factor > 1 else weight
        return pooled.flatten(2)


def stats_context(network: nn.Module) -> StatsContext:
    """The :class:`StatsContext` of ``network``, replacing its GroupNorms by :class:`StatsGroupNorm` the first time."""
    for module in network.modules():
        if isinstance(module, StatsGroupNorm):
            return module.context
    context = StatsContext()

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, StatsGroupNorm(child, context))
            else:
                replace(child)

    replace(network)
    return context


def finest_divisor(spec: ComponentSpec) -> int:
    """The smallest divisor ``d`` of the ``H/d`` grids of the spec's 4-D tensors."""
    return min(int(str(t.shape[-2]).partition("/")[2] or 1) for t in (*spec.inputs, *spec.outputs) if len(t.shape) == 4)


class GroupStats(Component):
    """``component`` with whole-image GroupNorm statistics in and the tile's out (module docstring)."""

    def __init__(self, component: Component):
        super().__init__()
        self.inner = component
        self.context = stats_context(component)
        self.fp32_inputs = (*component.fp32_inputs, GROUP_STATS_INPUT, STATS_WEIGHT_INPUT)
        self.unit_range_inputs = component.unit_range_inputs
        spec = component.spec
        divisor = finest_divisor(spec)
        grid = ("B", 1) + tuple(d if divisor == 1 else f"{d}/{divisor}" for d in ("H", "W"))
        groups = self._count_groups(component, grid)
        stats = ("B", 3, groups)
        self.spec = ComponentSpec(
            spec.name,
            (*spec.inputs, TensorSpec(GROUP_STATS_INPUT, stats), TensorSpec(STATS_WEIGHT_INPUT, grid)),
            (*spec.outputs, TensorSpec(TILE_STATS_OUTPUT, stats)),
            spec.multiple,
            {**spec.meta, "group_stats": groups},
        )

    def _count_groups(self, component: Component, grid: tuple) -> int:
        """How many groups the component's GroupNorms normalise in one call (a dry run at its smallest size)."""
        size = component.spec.multiple
        bound = sum(m.num_groups for m in component.modules() if isinstance(m, StatsGroupNorm))
        weight = torch.ones(TensorSpec(STATS_WEIGHT_INPUT, grid).resolve({"B": 1, "H": size, "W": size}))
        with torch.no_grad(), self.context.running(torch.zeros(1, 3, bound), weight):
            component(*component.example_inputs(1, size, size))
            return self.context.offset

    def example_inputs(self, batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """The component's example inputs, no given statistics (``n = 0``) and unit weights."""
        inputs = self.inner.example_inputs(batch, height, width, seed)
        sizes = {"B": batch, "H": height, "W": width}
        stats, weight = (t.resolve(sizes) for t in self.spec.inputs[-2:])
        return (*inputs, torch.zeros(stats), torch.ones(weight))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        *args, stats, weight = inputs
        with torch.inference_mode(False):  # copies that a VJP's autograd may use
            stats, weight = stats.clone(), weight.clone()
        with self.context.running(stats, weight) as collected:
            outputs = self.inner(*args)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return (*outputs, torch.cat(collected, -1))


def has_group_norm(component: Component) -> bool:
    """Whether ``component``'s network has GroupNorms (replaced or not)."""
    return any(isinstance(m, (nn.GroupNorm, StatsGroupNorm)) for m in component.modules())
