"""Joining a Ray cluster, and carrying a bundle to the workers that load it."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import ray

from ..errors import UserError
from . import RAY_LOCAL


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (see ``--ray``), unless this process has already joined one.

    Returns whether this call started the connection (and so should end it with ``ray.shutdown()``).
    """
    check_address(address)
    if ray.is_initialized():
        return False
    try:
        ray.init(address=None if address in (None, RAY_LOCAL) else address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise UserError(
            f"cannot join the Ray cluster at {address} ({error}); start one with `ray start --head`, "
            "or give a bare --ray to run on this machine"
        ) from None
    return True


def check_address(address: str | None) -> None:
    """Refuse an ``--ray`` value that is no address: most likely an INPUT that a bare ``--ray`` took."""
    if address not in (None, RAY_LOCAL, "auto") and ":" not in address:
        raise UserError(
            f"--ray took '{address}' as the cluster address; write --ray auto or --ray HOST:PORT, "
            "or put a bare --ray after the inputs"
        )


def gpus_in_cluster() -> int:
    """The number of GPUs that the cluster offers."""
    return int(ray.cluster_resources().get("GPU", 0))


def cpus_in_cluster() -> int:
    """The number of CPUs that the cluster offers."""
    return int(ray.cluster_resources().get("CPU", 1))


class ShippedBundle:
    """A ``.plan`` bundle put into Ray's object store by the driver, so that workers on any node
    load it without a shared file system; :meth:`path` writes it to a local file once."""

    def __init__(self, bundle: Path):
        self.name = bundle.name
        self.ref = ray.put(bundle.read_bytes())
        self._folder: Any = None

    def path(self) -> Path:
        """The bundle as a local file, kept while this object lives (in the worker)."""
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="trt-restore-bundle-")
            Path(self._folder.name, self.name).write_bytes(ray.get(self.ref))
        return Path(self._folder.name, self.name)

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "ref": self.ref, "_folder": None}
