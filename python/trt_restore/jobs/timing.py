"""Wall time of a run's stages and of its components' calls, logged at INFO level (shown with ``--verbose``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Log the wall time of the enclosed block at INFO level (shown with ``--verbose``)."""
    start = time.perf_counter()
    yield
    log.info("%s: %.3f s", name, time.perf_counter() - start)


def log_stage_timings(timings: Mapping[str, list[float]]) -> None:
    """Log each component's and each pipeline stage's calls and total time (``--verbose``)."""
    for name, seconds in sorted(timings.items()):
        log.info("  %s: %d calls, %.3f s", name, len(seconds), sum(seconds))
