"""Speed: one timed restoration split into stages, percentiles, the per-variant entries and throughput."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from .config import REFERENCE, TaskSetting, Variant, steps_override
from .machine import synchronize

if TYPE_CHECKING:
    import torch

    from .models import Loaded


NESTED_STAGES = frozenset({"inn guidance"})
"""Pipeline stages whose time includes component calls (left out of the "glue" sum)."""
GLUE = "glue"
COPIES = "copies"
STAGE_LABELS = {
    "encoder": "encode",
    "decoder": "decode",
    "decoder_vjp": "decoder VJP",
    "unet": "UNet step",
    "sr_unet": "UNet step",
    "pixel_unet": "UNet step",
    "inn_forward": "INN forward",
    "inn_inverse": "INN inverse",
    "data step": "data step / t-update",
    "svd projections": "SVD projections",
    "inn guidance": "INN guidance (incl. its calls)",
    COPIES: "host↔device copies",
    GLUE: "glue (Python, setup, maths)",
}


@dataclass
class Run:
    """One timed restoration: the result (on the CPU), its wall time and per-stage times."""

    output: torch.Tensor
    seconds: float
    stages: dict[str, float]
    calls: dict[str, list[float]]


def timed_restore(
    loaded: Loaded, method: str, setting: TaskSetting, y: torch.Tensor, steps: int | None, seed: int, noise: str = "host"
) -> Run:
    """Restore ``y`` (host memory) and time it end to end, result back in host memory included.

    Stages: each component's and pipeline stage's total time from ``Models.timings``, the
    host↔device copies on a GPU, and ``glue`` = end to end minus everything else (stages
    in :data:`NESTED_STAGES` contain component calls and are not subtracted).
    """
    from ..api import restore

    models, device = loaded.models, loaded.device
    models.timings.clear()
    synchronize(device)
    start = time.perf_counter()
    y_device = y.to(device)
    synchronize(device)
    copy_in = time.perf_counter() - start
    out = restore(
        y_device, method, task=setting.task, sigma=setting.sigma, models=models, config=steps_override(method, steps),
        task_params=setting.params, seed=seed, noise=noise,
    )
    synchronize(device)
    before_copy_out = time.perf_counter()
    out = out.cpu()
    end = time.perf_counter()
    calls = {name: list(values) for name, values in models.timings.items()}
    stages = {name: sum(values) for name, values in calls.items()}
    if device.type == "cuda":
        stages[COPIES] = copy_in + end - before_copy_out
    stages[GLUE] = (end - start) - sum(t for name, t in stages.items() if name not in NESTED_STAGES)
    return Run(out, end - start, stages, calls)


def percentiles(values: Sequence[float]) -> dict:
    """p50 and p95 (linear interpolation between order statistics) and the values themselves."""
    ordered = sorted(values)

    def at(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {"p50": at(0.5), "p95": at(0.95), "runs": list(values)}


def stage_summary(runs: Sequence[Run]) -> dict:
    """Per stage: calls per run, per-call p50/p95 (ms) and per-run total p50 (s)."""
    summary = {}
    for name in dict.fromkeys(n for run in runs for n in run.stages):
        per_call = [t for run in runs for t in run.calls.get(name, [])]
        summary[name] = {
            "calls_per_run": len(per_call) / len(runs) if per_call else None,
            "per_call_ms": {k: v * 1e3 for k, v in percentiles(per_call).items() if k != "runs"} if per_call else None,
            "per_run_s": statistics.median(run.stages.get(name, 0.0) for run in runs),
        }
    return summary


class Skips:
    """What was not measured, and why."""

    def __init__(self, log: Callable[[str], None]):
        self.items: list[dict] = []
        self.log = log

    def add(self, what: str, reason: str) -> None:
        self.items.append({"what": what, "reason": reason})
        self.log(f"skipped {what}: {reason}")

    def attempt(self, what: str, action: Callable[[], Any]) -> Any:
        """``action()``, or None with the failure recorded: one variant failing (an unsupported
        shape, out of memory) must not stop the others from being measured."""
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - recorded in the results, the run goes on
            text = str(error).strip().splitlines()[0] if str(error).strip() else ""
            self.add(what, text if isinstance(error, UserError) else f"{type(error).__name__}: {text}")
            return None


def speed_entries(
    method: str,
    setting: TaskSetting,
    size: int,
    batch: int,
    loaded: dict[Variant, Loaded],
    runs: dict[Variant, list[Run]],
    memory: dict[Variant, dict],
) -> list[dict]:
    """One JSON entry per variant, with ratios to torch eager and the output's distance to it (max |Δ| and PSNR)."""
    from ..metrics import psnr

    reference = runs.get(Variant(REFERENCE))
    reference_p50 = percentiles([r.seconds for r in reference])["p50"] if reference else None
    entries = []
    for variant, variant_runs in runs.items():
        latency = percentiles([r.seconds for r in variant_runs])
        entries.append({
            "method": method,
            "task": setting.task,
            "variant": variant.name,
            "backend": variant.backend,
            "precision": variant.precision,
            "device": str(loaded[variant].device),
            "size": size,
            "batch": batch,
            "load_s": loaded[variant].seconds,
            "latency_s": latency,
            "images_per_s": batch / latency["p50"],
            "speedup_vs_torch": reference_p50 / latency["p50"] if reference_p50 else None,
            "max_abs_diff_vs_torch": (
                float((variant_runs[-1].output - reference[-1].output).abs().max()) if reference else None
            ),
            "psnr_vs_torch": psnr(variant_runs[-1].output, reference[-1].output) if reference and variant.name != REFERENCE else None,
            "stages": stage_summary(variant_runs),
            "memory_mb": memory[variant],
        })
    return entries


def throughput(entries: Sequence[dict]) -> list[dict]:
    """Per method and variant: images/s at batch 1 and at the batch size that gives the most."""
    groups: dict[tuple, list[dict]] = {}
    for entry in entries:
        groups.setdefault((entry["method"], entry["variant"], entry["size"]), []).append(entry)
    rows = []
    for (method, variant, size), group in groups.items():
        best = max(group, key=lambda e: e["images_per_s"])
        single = next((e for e in group if e["batch"] == 1), None)
        rows.append({
            "method": method,
            "variant": variant,
            "size": size,
            "batch1_images_per_s": single["images_per_s"] if single else None,
            "best_batch": best["batch"],
            "best_images_per_s": best["images_per_s"],
        })
    return rows
