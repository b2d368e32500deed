"""The Engine interface: named torch tensors in, named torch tensors out, whatever runs the graph.

Pipelines call engines by keyword, ``unet(latent=z, timestep=t)["eps"]``, and never
see which backend (torch, onnxruntime, TensorRT) is underneath.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import ClassVar

import torch

from ..errors import UserError
from ..specs import ComponentSpec, TensorSpec

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a spec's dtype name (``"float32"``, ``"float16"``, …)."""
    try:
        return TORCH_DTYPES[name]
    except KeyError:
        raise UserError(f"unsupported tensor dtype '{name}'; use one of: {', '.join(TORCH_DTYPES)}") from None


def check_io_names(spec: ComponentSpec, inputs: Iterable[str], outputs: Iterable[str], graph: str) -> None:
    """Refuse a graph whose input or output names differ from its component spec."""
    for kind, found, expected in (
        ("inputs", list(inputs), [t.name for t in spec.inputs]),
        ("outputs", list(outputs), [t.name for t in spec.outputs]),
    ):
        if sorted(found) != sorted(expected):
            raise UserError(
                f"component '{spec.name}': the {graph} has {kind} {found} but its spec says {expected}; "
                "export and build it again"
            )


class Engine(ABC):
    """A network component behind its :class:`ComponentSpec`.

    Calling it checks the inputs (names, dtypes, ranks, fixed dims, size symbols that
    agree across inputs, height and width divisible by ``spec.multiple``), casts floating
    inputs to the graph's dtype (fp32 ↔ fp16), moves them to :attr:`device`, runs the
    backend and returns the outputs on :attr:`device`. Floating outputs come back as
    float32, so the arithmetic between network calls stays in fp32. :meth:`close` releases
    what the backend holds; a closed engine refuses to run.
    """

    backend: ClassVar[str]

    def __init__(self, spec: ComponentSpec, device: torch.device):
        self.spec = spec
        self.device = device
        self.closed = False

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_open()
        feeds, sizes = self.prepare(inputs)
        outputs = self._run(feeds, sizes)
        return {name: out.float() if out.is_floating_point() else out for name, out in outputs.items()}

    @abstractmethod
    def _run(self, feeds: dict[str, torch.Tensor], sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        """Run the graph on checked, cast, contiguous inputs; ``sizes`` binds the spec's symbols."""

    def close(self) -> None:
        """Release the backend's session, context or module; closing again does nothing."""
        if not self.closed:
            self.closed = True
            self._release()

    @abstractmethod
    def _release(self) -> None:
        """Drop what the backend holds (called once, by :meth:`close`)."""

    def statistics_of(self, **inputs: torch.Tensor) -> AbstractContextManager:
        """A block in which a tiled engine normalises every call with the whole-image statistics
        (and attention context) of ``inputs``; an engine that runs whole images, each with its
        own statistics, is unaffected (:class:`~.tiling.TiledEngine` overrides it)."""
        return nullcontext()

    def check_open(self) -> None:
        """A :class:`UserError` once the engine is closed."""
        if self.closed:
            raise self._error(f"its {self.backend} engine is closed; load the models again")

    def prepare(self, inputs: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """Checked inputs in spec order, cast and on :attr:`device`, and the size symbols they bind."""
        expected = [t.name for t in self.spec.inputs]
        if set(inputs) != set(expected):
            missing = [n for n in expected if n not in inputs]
            unknown = [n for n in inputs if n not in expected]
            problem = f"missing {missing}" if missing else f"unknown {unknown}"
            raise UserError(f"component '{self.spec.name}' takes inputs {expected}; got {problem}")
        for tensor_spec in self.spec.inputs:
            self._check_tensor(tensor_spec, inputs[tensor_spec.name])
        sizes = self._bind_sizes(inputs)
        self._check_multiple(sizes)
        feeds = {
            t.name: inputs[t.name].detach().to(device=self.device, dtype=torch_dtype(t.dtype)).contiguous()
            for t in self.spec.inputs
        }
        return feeds, sizes

    def _error(self, message: str) -> UserError:
        return UserError(f"component '{self.spec.name}': {message}")

    def _check_tensor(self, tensor_spec: TensorSpec, value: torch.Tensor) -> None:
        """A tensor of the spec's rank whose dtype casts to the graph's (any real type to a float one)."""
        name = tensor_spec.name
        if not isinstance(value, torch.Tensor):
            raise self._error(f"input '{name}' must be a torch.Tensor, got {type(value).__name__}")
        want = torch_dtype(tensor_spec.dtype)
        if value.dtype != want and not (want.is_floating_point and value.dtype != torch.bool):
            raise self._error(f"input '{name}' must be {tensor_spec.dtype}, got {str(value.dtype).removeprefix('torch.')}")
        if value.dim() != len(tensor_spec.shape):
            raise self._error(
                f"input '{name}' must have {len(tensor_spec.shape)} dims {list(tensor_spec.shape)}, got shape {tuple(value.shape)}"
            )

    def _bind_sizes(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, int]:
        """Size symbols (B, H, W) read off the inputs; exact dims (``"H"``) first, then divided ones (``"H/8"``)."""
        sizes: dict[str, int] = {}
        dims = [
            (t.name, axis, dim, int(inputs[t.name].shape[axis])) for t in self.spec.inputs for axis, dim in enumerate(t.shape)
        ]
        for name, axis, dim, actual in dims:
            if isinstance(dim, int) and actual != dim:
                raise self._error(f"input '{name}' must have {dim} at axis {axis}, got shape {tuple(inputs[name].shape)}")
        for divided in (False, True):
            for name, axis, dim, actual in dims:
                if not isinstance(dim, str) or ("/" in dim) != divided:
                    continue
                symbol, _, divisor = dim.partition("/")
                sizes.setdefault(symbol, actual * int(divisor or 1))
                if sizes[symbol] // int(divisor or 1) != actual:
                    raise self._error(
                        f"input '{name}' has {dim} = {actual} at axis {axis}, which disagrees with "
                        f"{symbol} = {sizes[symbol]} from the other inputs"
                    )
        return sizes

    def _check_multiple(self, sizes: Mapping[str, int]) -> None:
        multiple = self.spec.multiple
        if multiple > 1 and any(sizes.get(s, 0) % multiple for s in ("H", "W")):
            raise self._error(
                f"height and width must be multiples of {multiple}, got {sizes.get('H')}×{sizes.get('W')}; pad the image"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(component={self.spec.name!r}, device={str(self.device)!r})"
