"""The results document: its format marker, writing and reading a results file, merging several."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from ..files import atomic_output
from .speed import throughput


RESULTS_FORMAT = "trt-restore-bench"
RESULTS_VERSION = 1


# Entries that measure the same thing: a later run's replaces an earlier run's.
MERGE_KEYS = {
    "quality": ("method", "task", "dataset"),
    "speed": ("method", "variant", "size", "batch"),
    "scaling": ("method", "variant", "size", "batch"),
}


def merge_results(runs: Sequence[dict]) -> dict:
    """One results document from several runs (e.g. a subset measured again after a model update).

    The machine and settings are the first run's; ``merged_from`` lists every run's date, commit and
    device (its GPU, else its CPU), so that a table merged from several machines says where each run was.
    """
    merged = json.loads(json.dumps(runs[0]))
    for run in runs[1:]:
        for section, keys in MERGE_KEYS.items():
            replaced = {tuple(entry[k] for k in keys) for entry in run[section]}
            kept = [entry for entry in merged[section] if tuple(entry[k] for k in keys) not in replaced]
            merged[section] = kept + run[section]
        merged["skipped"] += [item for item in run["skipped"] if item not in merged["skipped"]]
    merged["throughput"] = throughput(merged["speed"])
    if len(runs) > 1:
        merged["merged_from"] = [
            {"created": r["created"], "commit": r["machine"].get("git_commit"), "device": r["machine"].get("gpu") or r["machine"].get("cpu")}
            for r in runs
        ]
    return merged


def write_results(results: dict, path: Path) -> None:
    """Write a results document where :func:`read_results` reads it, creating the folder.

    The file appears whole or not at all (:func:`~trt_restore.files.atomic_output`).
    """
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(results, indent=1) + "\n")


def read_results(path: Path) -> dict:
    """A results file written by this harness."""
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read benchmark results '{path}': {error}") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise UserError(f"'{path}' is not a trt-restore benchmark results file")
    return results
