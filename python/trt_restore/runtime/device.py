"""Devices, compute capability, CUDA streams and the device scratch memory that engines share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import UserError

SCRATCH_ALIGNMENT = 256
"""TensorRT wants user-managed device memory aligned to 256 bytes (torch's allocator gives at least 512)."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`; None means the current CUDA device if there is one, else the CPU."""
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device '{device}'; use 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{device}' needs an NVIDIA GPU with CUDA, and this machine has none; use 'cpu'")
        index = torch.cuda.current_device() if resolved.index is None else resolved.index
        if index >= torch.cuda.device_count():
            raise UserError(f"device '{device}' does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if resolved.type != "cpu":
        raise UserError(f"device '{device}' is not supported; use 'cpu', 'cuda' or 'cuda:N'")
    return resolved


def compute_capability(device: str | torch.device | None = None) -> str | None:
    """Compute capability (e.g. ``"8.6"``) of ``device`` (None: the current CUDA device); None for the CPU."""
    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(resolved)
    return f"{major}.{minor}"


@contextmanager
def on_stream(stream: torch.cuda.Stream) -> Iterator[torch.cuda.Stream]:
    """Run a block on ``stream``, ordered after the caller's current stream and before its later work.

    The caller's stream waits for ``stream`` afterwards, so tensors made in the block can be
    used and freed on the caller's stream without further synchronisation.
    """
    caller = torch.cuda.current_stream(stream.device)
    if stream == caller:
        yield stream
        return
    stream.wait_stream(caller)
    with torch.cuda.stream(stream):
        yield stream
    caller.wait_stream(stream)


class ScratchBuffer:
    """One device byte buffer that engines borrow in turn for their activations.

    Engines run one after another on one stream, so they can all use the same memory:
    each :meth:`reserve` s what it needs, and the buffer grows to the largest request.
    Each engine :meth:`release` s its reservation when it closes; the last one frees the memory.
    """

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self._buffer = self._allocate(SCRATCH_ALIGNMENT)
        self._holders = 0

    def reserve(self, nbytes: int) -> None:
        """Grow the buffer to at least ``nbytes`` bytes (it never shrinks) for one more engine."""
        self._holders += 1
        if nbytes > self.nbytes:
            self._buffer = self._allocate(nbytes)

    def release(self) -> None:
        """End one engine's reservation; after the last one the buffer is back to its initial size."""
        self._holders -= 1
        if self._holders == 0:
            self._buffer = self._allocate(SCRATCH_ALIGNMENT)

    def _allocate(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, device=self.device)

    @property
    def nbytes(self) -> int:
        return self._buffer.numel()

    @property
    def pointer(self) -> int:
        """Device address of the buffer; valid until the next :meth:`reserve` that grows it."""
        return self._buffer.data_ptr()
