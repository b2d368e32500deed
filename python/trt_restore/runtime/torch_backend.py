"""The reference backend: runs the component's ``nn.Module`` eagerly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import UserError
from ..specs import ComponentSpec
from .device import resolve_device
from .engine import Engine


class TorchEngine(Engine):
    """``module(*inputs in spec order)`` under :func:`torch.inference_mode`, and under
    :func:`torch.autocast` to ``autocast`` (e.g. ``torch.bfloat16``) when that is given.

    The module returns one tensor, a sequence in the spec's output order, or a mapping
    by output name.
    """

    backend = "torch"

    def __init__(
        self,
        module: nn.Module,
        spec: ComponentSpec,
        device: str | torch.device | None = None,
        *,
        autocast: torch.dtype | None = None,
    ):
        super().__init__(spec, resolve_device(device))
        self.module = module.to(self.device).eval()
        self.autocast = autocast

    def _run(self, feeds: dict[str, torch.Tensor], sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        casting = torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None)
        with torch.inference_mode(), casting:
            result = self.module(*feeds.values())
        names = [t.name for t in self.spec.outputs]
        if isinstance(result, torch.Tensor):
            result = (result,)
        if isinstance(result, Mapping):
            result = [result[name] for name in names]
        if not isinstance(result, Sequence) or len(result) != len(names):
            raise UserError(
                f"component '{self.spec.name}': the module returned {type(result).__name__} but its spec has outputs {names}"
            )
        return dict(zip(names, result, strict=True))

    def _release(self) -> None:
        del self.module
