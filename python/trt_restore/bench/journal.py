"""Per-image quality scores written as they are measured, so that an interrupted run resumes.

A quality run on Set14 takes hours per method and task on a CPU. The journal sits beside the
results file (``bench.json`` → ``bench.json.scores.jsonl``): one JSON line of header with the
settings that the scores depend on, then one line per restored image. ``--resume`` reads it
back and restores only the images that it lacks; the journal is deleted once the results file
is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError

JOURNAL_FORMAT = "trt-restore-bench-scores"

SCORE_SETTINGS = ("model_set", "steps", "seed", "noise", "crop", "tile", "quality_variant", "lpips_weights", "lpips_net")
"""The run settings that change a restored image's scores; a journal only resumes a run with the same ones."""

ScoreKey = tuple[str, str, str, str, str]
"""(method, variant, task, data set, image name)."""


def journal_path(results_path: Path) -> Path:
    """Where the journal of the run that writes ``results_path`` lives."""
    return results_path.with_name(results_path.name + ".scores.jsonl")


class ScoreJournal:
    """An append-only JSON-lines file of per-image scores, flushed to disk after every image."""

    def __init__(self, path: Path, settings: dict, resume: bool, log: Callable[[str], None] = lambda message: None):
        self.path = path
        self.settings = {name: settings[name] for name in SCORE_SETTINGS}
        self.entries: dict[ScoreKey, tuple[dict, float]] = {}
        if path.exists() and not resume:
            raise UserError(
                f"'{path}' holds the per-image scores of an interrupted run; "
                "pass --resume to continue it, or delete the file to start over"
            )
        if path.exists():
            self.entries = self._read()
            log(f"resuming from {path}: {len(self.entries)} images already scored")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._append({"format": JOURNAL_FORMAT, "settings": self.settings})

    def get(self, key: ScoreKey) -> tuple[dict, float] | None:
        """The scores and seconds recorded for ``key``, or None."""
        return self.entries.get(key)

    def add(self, key: ScoreKey, scores: dict, seconds: float) -> None:
        self.entries[key] = (scores, seconds)
        self._append({"key": list(key), "scores": scores, "seconds": seconds})

    def discard(self) -> None:
        """Delete the journal: its scores are in the results file now."""
        self.path.unlink(missing_ok=True)

    def _append(self, record: dict) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def _read(self) -> dict[ScoreKey, tuple[dict, float]]:
        text = self.path.read_text()
        lines = text.splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        written = header.get("settings") if isinstance(header, dict) and header.get("format") == JOURNAL_FORMAT else None
        if not isinstance(written, dict):
            raise UserError(f"'{self.path}' is not a trt-restore score journal; delete it to start over")
        differing = sorted(name for name in SCORE_SETTINGS if written.get(name) != self.settings[name])
        if differing:
            raise UserError(
                f"'{self.path}' was written with other settings ({', '.join(differing)}); "
                "resume with the same settings, or delete the file to start over"
            )
        entries = {}
        for number, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
                entries[tuple(record["key"])] = (record["scores"], record["seconds"])
            except json.JSONDecodeError:
                if number == len(lines):  # the last line of a run killed while writing it
                    lines.pop()
                    break
                raise self._damaged(number) from None
            except (KeyError, TypeError):  # whole JSON, but not a score record
                raise self._damaged(number) from None
        if not text.endswith("\n"):  # keep the whole lines only, so that the next one starts on its own
            self.path.write_text("".join(line + "\n" for line in lines))
        return entries

    def _damaged(self, number: int) -> UserError:
        return UserError(f"'{self.path}' line {number} is damaged; delete the file to start over")
