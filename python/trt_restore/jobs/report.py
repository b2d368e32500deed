"""The batch report: a progress bar over the images, what became of each, the exit status and the summary JSON."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from .request import RestoreRequest

SUMMARY_NAME = "restore_summary.json"
"""The batch summary that ``restore`` writes beside its outputs (``--summary`` names another path)."""
IMAGE_STATUSES = ("done", "skipped", "failed", "not_run")
EXIT_SOME_FAILED = 1
"""The exit status of a batch in which some inputs failed."""


@dataclass
class ImageRecord:
    """What became of one input of a batch."""

    input: str
    output: str
    status: str = "not_run"
    """done, skipped (``--resume`` found a complete output), failed or not_run (the run stopped first)."""
    seconds: float | None = None
    sigma: float | None = None
    """The noise level the image was restored with: the given one, or its estimate for ``--sigma auto``."""
    reason: str | None = None


class BatchReport:
    """The progress bar over the images and each image's :class:`ImageRecord`; failures are
    reported on stderr as they happen.

    A context manager: leaving it closes the bar and, if inputs of a batch failed, prints how many.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], show: bool):
        from tqdm import tqdm

        self.records = {source: ImageRecord(str(source), str(target)) for source, target in pairs}
        self.interrupted = False
        self.bar = tqdm(total=len(pairs), unit="image", disable=not show, dynamic_ncols=True)

    def __enter__(self) -> BatchReport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()
        if self.count("failed") and self.total > 1:
            print(f"error: {self.count('failed')} of {self.total} images failed (see above)", file=sys.stderr)

    @property
    def total(self) -> int:
        return len(self.records)

    def count(self, status: str) -> int:
        return sum(record.status == status for record in self.records.values())

    @property
    def status(self) -> int:
        """0 when nothing failed; else 1 for a batch, or the user-error status when the only input failed."""
        if not self.count("failed"):
            return 0
        return EXIT_SOME_FAILED if self.total > 1 else UserError.exit_code

    def done(self, source: Path, seconds: float, sigma: float) -> None:
        self._settle(source, "done", seconds=seconds, sigma=sigma)

    def skip(self, source: Path) -> None:
        self._settle(source, "skipped", reason="the output exists and is complete (--resume)")

    def fail(self, source: Path, error: UserError) -> None:
        message = str(error) if str(source) in str(error) else f"{source}: {error}"
        self.bar.write(f"error: {message}", file=sys.stderr)
        self._settle(source, "failed", reason=str(error))

    def _settle(self, source: Path, status: str, **details: Any) -> None:
        self.records[source] = dataclasses.replace(self.records[source], status=status, **details)
        self.bar.update()

    def summary(self, request: RestoreRequest, backend: str) -> dict[str, Any]:
        """The batch as JSON: the request, the counts per status, the mean seconds per restored image, each file."""
        seconds = [record.seconds for record in self.records.values() if record.seconds is not None]
        return {
            "method": request.method,
            "task": request.task,
            "sigma": request.sigma,
            "seed": request.seed,
            "noise": request.noise,
            "backend": backend,
            "interrupted": self.interrupted,
            "counts": {status: self.count(status) for status in IMAGE_STATUSES},
            "seconds_per_image": sum(seconds) / len(seconds) if seconds else None,
            "files": [dataclasses.asdict(record) for record in self.records.values()],
        }


@contextmanager
def batch_report(
    pairs: Sequence[tuple[Any, Any]], show: bool, summarize: Callable[[BatchReport], object]
) -> Iterator[BatchReport]:
    """A :class:`BatchReport` over ``pairs``; when the block ends, also by Ctrl-C or SIGTERM,
    ``summarize(report)`` writes the summary and returns where it went (None: nowhere)."""
    with BatchReport(pairs, show) as report:
        try:
            yield report
        except KeyboardInterrupt:
            report.interrupted = True
            where = summarize(report)
            saved = f", summary in {where}" if where is not None else ""
            done = report.count("done") + report.count("skipped")
            raise KeyboardInterrupt(
                f"{done} of {report.total} images restored{saved}; rerun the same command with --resume to finish"
            ) from None
        summarize(report)


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Write the batch summary as JSON, atomically."""
    from ..files import atomic_output

    try:
        with atomic_output(path) as temporary:
            temporary.write_text(json.dumps(summary, indent=2) + "\n")
    except OSError as error:
        raise UserError(
            f"cannot write the summary {path} ({error.strerror or error}); choose another path with --summary"
        ) from None
