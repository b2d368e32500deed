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
    CONTEXT_SYMBOL,
    CONTEXT_TOKENS,
    TensorSpec,
    attention_context_names,
)
from trt_restore.runtime.attention_context import empty_context

from . import attention_context
from .components import Component



class StatsContext:
    """What the GroupNorms and attention blocks of one network read while a :class:`GroupStats`
    runs it: the given statistics, the weight map, how many groups are consumed so far, and the
    tiles' statistics; the attention blocks' context tokens, and their reported feature maps."""

    def __init__(self):
        self.stats: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None
        self.offset = 0
        self.collected: list[torch.Tensor] = []
        self.attention: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.reported_context: list[torch.Tensor] = []
        self.last_moments: tuple[torch.Tensor, torch.Tensor] | None = None

    @contextmanager
    def running(
        self, stats: torch.Tensor, weight: torch.Tensor, attention: list[tuple[torch.Tensor, torch.Tensor]] = ()
    ) -> Iterator[list[torch.Tensor]]:
        self.stats, self.weight, self.offset, self.collected = stats, weight, 0, []
        self.attention, self.reported_context = list(attention), []
        try:
            yield self.collected
        finally:  # nothing of the run stays behind (the network may be deep-copied next)
            self.stats = self.weight = self.last_moments = None
            self.collected, self.attention, self.reported_context = [], [], []

    def next_attention_context(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next attention block's ``(tokens (B, C, M), offsets (B, M))``; one dropped token
        past the given ones (the dry run that counts the blocks)."""
        index = len(self.reported_context) - 1
        if index < len(self.attention):
            return self.attention[index]
        reported = self.reported_context[-1]
        batch, channels = reported.shape[:2]
        return empty_context(batch, channels, 1, reported.device, reported.dtype)


class StatsGroupNorm(nn.Module):
    """A GroupNorm (same parameters) that reads and reports statistics through its :class:`StatsContext`."""

    def __init__(self, norm: nn.GroupNorm, context: StatsContext):
        super().__init__()
        self.num_groups, self.num_channels, self.eps, self.affine = norm.num_groups, norm.num_channels, norm.eps, norm.affine
        self.weight, self.bias = norm.weight, norm.bias
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.context
        if context.stats is None:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        batch, channels, groups = x.shape[0], x.shape[1], self.num_groups
        flat = x.float().reshape(batch, channels, -1)  # (B, C, N)
        own_mean = flat.reshape(batch, groups, -1).mean(-1)  # (B, g)
        centred = flat - self._per_channel(own_mean)[:, :, None]
        squared = centred * centred
        own_var = squared.reshape(batch, groups, -1).mean(-1)
        # the tile's weighted statistics, by products with ω, shifted by the own mean m for precision:
        # μ_i = m + Σω(x − m)/n,  v_i = Σω(x − m)²/n − (μ_i − m)²
        omega = self._pixel_weight(x, context.weight).transpose(1, 2)  # (B, N, 1)
        count = omega.sum((1, 2))[:, None] * (channels // groups)  # (B, 1)
        first = torch.bmm(centred, omega).reshape(batch, groups, -1).sum(-1) / count.clamp_min(1e-12)
        second = torch.bmm(squared, omega).reshape(batch, groups, -1).sum(-1) / count.clamp_min(1e-12)
        tile_mean, tile_var = own_mean + first, (second - first * first).clamp_min(0)
        given = context.stats[:, :, context.offset : context.offset + groups].float()  # (B, 3, g)
        context.offset += groups
        context.collected.append(torch.stack((count.expand_as(tile_mean), tile_mean, tile_var), 1).detach())
        use_given = given[:, 0] > 0
        mean = torch.where(use_given, given[:, 1], own_mean)
        var = torch.where(use_given, given[:, 2], own_var)
        context.last_moments = (mean, var)
        return self._normalise(flat, mean, var).reshape(x.shape).to(x.dtype)

    def normalise_like_last(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, N) normalised with the statistics of this layer's last call (an attention
        block's context tokens, with the tile's statistics)."""
        return self._normalise(x.float(), *self.context.last_moments).to(x.dtype)

    def _normalise(self, flat: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """``flat`` (B, C, N) in float32 with the groups' ``mean`` and ``var`` (B, g), as one affine
        map per channel: ``x·a + b`` with ``a = γ/√(v + ε)``, ``b = β − μ·a``."""
        scale, mean = self._per_channel(torch.rsqrt(var + self.eps)), self._per_channel(mean)  # (B, C)
        if self.affine:
            scale = scale * self.weight.float()
        shift = -mean * scale + (self.bias.float() if self.affine else 0)
        return torch.addcmul(shift[:, :, None], flat, scale[:, :, None])

    def _per_channel(self, values: torch.Tensor) -> torch.Tensor:
        """Per-group ``values`` (B, g) repeated for each channel of the group: (B, C)."""
        batch, groups = values.shape
        return values[:, :, None].expand(batch, groups, self.num_channels // groups).reshape(batch, -1)

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
    attention_context.install(network, context)
    return context


def finest_divisor(spec: ComponentSpec) -> int:
    """The smallest divisor ``d`` of the ``H/d`` grids of the spec's 4-D tensors."""
    return min(int(str(t.shape[-2]).partition("/")[2] or 1) for t in (*spec.inputs, *spec.outputs) if len(t.shape) == 4)


class GroupStats(Component):
    """``component`` with whole-image GroupNorm statistics in and the tile's out (module docstring),
    and for each spatial attention block ``i`` its whole-image context in and its feature map out
    (:mod:`.attention_context`): inputs ``attention_context_i`` (B, C_i, M) and ``attention_bias_i``
    (B, M), output ``tile_context_i`` (B, C_i, H/d_i, W/d_i)."""

    def __init__(self, component: Component):
        super().__init__()
        self.inner = component
        self.context = stats_context(component)
        spec = component.spec
        divisor = finest_divisor(spec)
        grid = ("B", 1) + tuple(d if divisor == 1 else f"{d}/{divisor}" for d in ("H", "W"))
        groups, layers, blocks = self._dry_run(component, grid)
        stats = ("B", 3, groups)
        context_inputs, context_outputs = [], []
        for index, (channels, block_divisor) in enumerate(blocks):
            tokens, offsets, reported = attention_context_names(index)
            context_inputs += [TensorSpec(tokens, ("B", channels, CONTEXT_SYMBOL)), TensorSpec(offsets, ("B", CONTEXT_SYMBOL))]
            context_outputs.append(TensorSpec(reported, ("B", channels, f"H/{block_divisor}", f"W/{block_divisor}")))
        self.fp32_inputs = (
            *component.fp32_inputs, GROUP_STATS_INPUT, STATS_WEIGHT_INPUT, *(t.name for t in context_inputs)
        )
        self.unit_range_inputs = component.unit_range_inputs
        self.spec = ComponentSpec(
            spec.name,
            (*spec.inputs, TensorSpec(GROUP_STATS_INPUT, stats), TensorSpec(STATS_WEIGHT_INPUT, grid), *context_inputs),
            (*spec.outputs, TensorSpec(TILE_STATS_OUTPUT, stats), *context_outputs),
            spec.multiple,
            {
                **spec.meta,
                "group_stats": groups,
                "statistics_depth": layers + len(blocks),
                **({"context_tokens": CONTEXT_TOKENS} if blocks else {}),
            },
        )
        self.attention_blocks = len(blocks)

    def _dry_run(self, component: Component, grid: tuple) -> tuple[int, int, list[tuple[int, int]]]:
        """How many groups the component's GroupNorms normalise in one call, how many GroupNorm
        calls that takes, and each attention block's (channels, divisor of its grid): a dry run at
        its smallest size."""
        size = component.spec.multiple
        bound = sum(m.num_groups for m in component.modules() if isinstance(m, StatsGroupNorm))
        weight = torch.ones(TensorSpec(STATS_WEIGHT_INPUT, grid).resolve({"B": 1, "H": size, "W": size}))
        with torch.no_grad(), self.context.running(torch.zeros(1, 3, bound), weight):
            component(*component.example_inputs(1, size, size))
            blocks = [(f.shape[1], size // f.shape[-2]) for f in self.context.reported_context]
            return self.context.offset, len(self.context.collected), blocks

    def example_inputs(self, batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """The component's example inputs, no given statistics (``n = 0``), unit weights and no
        context: one dropped token, or all of them for a graph with static shapes."""
        inputs = self.inner.example_inputs(batch, height, width, seed)
        tokens = CONTEXT_TOKENS if self.spec.meta.get("static_shapes") else 1
        sizes = {"B": batch, "H": height, "W": width, CONTEXT_SYMBOL: tokens}
        extra = self.spec.inputs[len(inputs) :]
        stats, weight = (t.resolve(sizes) for t in extra[:2])
        context = [part for t in extra[2::2] for part in empty_context(*t.resolve(sizes))]
        return (*inputs, torch.zeros(stats), torch.ones(weight), *context)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = len(inputs) - 2 - 2 * self.attention_blocks
        args, (stats, weight, *context) = inputs[:count], inputs[count:]
        with torch.inference_mode(False):  # copies that a VJP's autograd may use
            stats, weight = stats.clone(), weight.clone()
            context = [t.clone() for t in context]
        attention = list(zip(context[::2], context[1::2], strict=True))
        with self.context.running(stats, weight, attention) as collected:
            outputs = self.inner(*args)
            reported = list(self.context.reported_context)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return (*outputs, torch.cat(collected, -1), *reported)


def has_group_norm(component: Component) -> bool:
    """Whether ``component``'s network has GroupNorms (replaced or not)."""
    return any(isinstance(m, (nn.GroupNorm, StatsGroupNorm)) for m in component.modules())
