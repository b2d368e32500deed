"""One benchmark run: the speed, scaling and quality sections in order, into the results document."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from ..errors import UserError
from .config import TASK_SETTINGS, BenchConfig, TaskSetting, Variant
from .images import dataset_label, make_task_operator, observe, synthetic_image
from .journal import ScoreJournal
from .machine import MemoryGuard, MemoryMeter, address_space_limit, available_mb, default_device, load_average, machine_info
from .models import Loaded, ModelCache
from .quality import LPIPS, Case, baseline, baseline_name, image_scores, quality_cases, quality_row
from .results import RESULTS_FORMAT, RESULTS_VERSION
from .speed import Run, Skips, speed_entries, throughput, timed_restore

if TYPE_CHECKING:
    import torch


class Harness:
    """One benchmark run: the models loaded so far, what was skipped, the memory guard."""

    def __init__(
        self, config: BenchConfig, log: Callable[[str], None] = lambda message: None, journal: ScoreJournal | None = None
    ):
        self.config = config
        self.log = log
        self.journal = journal
        self.skips = Skips(log)
        self.cache = ModelCache(config)
        self.guard = MemoryGuard()

    def run(self) -> dict:
        """Measure what the config asks for and return the results (the JSON document)."""
        import torch

        config = self.config
        torch.set_num_threads(config.threads)
        results: dict = {
            "format": RESULTS_FORMAT,
            "version": RESULTS_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                **machine_info(config.threads),
                "torch_threads": torch.get_num_threads(),
                "onnxruntime_intra_op_threads": config.threads,
            },
            "settings": config.to_json(),
            "task_settings": {name: dataclasses.asdict(s) for name, s in TASK_SETTINGS.items()},
            "speed": [],
            "throughput": [],
            "scaling": [],
            "quality": [],
            "skipped": self.skips.items,
        }
        with address_space_limit(self.memory_limit_mb()):
            if "speed" in config.sections:
                for method in config.methods:
                    results["speed"] += self.speed(method, config.size, config.batches)
                    self.release(method)
                results["throughput"] = throughput(results["speed"])
            if config.scaling:
                results["scaling"] = self.scaling()
            if "quality" in config.sections:
                results["quality"] = self.quality()
        results["machine"]["load_average_after"] = load_average()
        return results

    def memory_limit_mb(self) -> float | None:
        """The memory the runs may add on a CPU machine: ``--memory-limit``, else 90 % of what is available now."""
        if default_device().type == "cuda" or self.config.memory_limit_gb == 0:
            return None
        if self.config.memory_limit_gb is not None:
            return self.config.memory_limit_gb * 1024
        free = available_mb(default_device())
        return None if free is None else MemoryGuard.FILL * free

    def speed(self, method: str, size: int, batches: Sequence[int]) -> list[dict]:
        """Every variant on the same observation at each batch size: warm-up, then interleaved repeats."""
        from ..pipelines import pipeline_class

        config = self.config
        setting = TASK_SETTINGS[config.speed_task]
        x = synthetic_image(max(batches), 3, size, seed=config.seed)
        y_full, operator = observe(setting, x, seed=config.seed)
        if not pipeline_class(method).supports(operator):
            self.skips.add(f"speed {method}", f"{method} does not support task {setting.task}; pick another --speed-task")
            return []
        loaded = self._load_variants(method, size, setting.scale)
        entries = []
        for batch in batches:
            y = y_full[:batch]
            memory = {}
            for variant, models in loaded.items():
                record = self._warm_up(method, variant, models, setting, y, size)
                if record is not None:
                    memory[variant] = record
            runs: dict[Variant, list[Run]] = {variant: [] for variant in memory}
            for repeat in range(config.repeats):
                for variant in memory:
                    runs[variant].append(timed_restore(loaded[variant], method, setting, y, config.steps, config.seed, config.noise))
                if runs:
                    timings = ", ".join(f"{v.name} {r[-1].seconds:.3f}s" for v, r in runs.items())
                    self.log(f"{method} {size}px batch {batch} repeat {repeat + 1}/{config.repeats}: {timings}")
            entries += speed_entries(method, setting, size, batch, loaded, runs, memory)
        return entries

    def _load_variants(self, method: str, size: int, scale: int) -> dict[Variant, Loaded]:
        loaded = {}
        for variant in self.config.variants:
            what = f"speed {method} {variant.name} {size}px"
            reason = variant.unavailable_reason()
            if reason:
                self.skips.add(what, reason)
                continue
            self.log(f"loading {method} on {variant.name} ({size}×{size})")
            result = self.skips.attempt(what, lambda v=variant: self.cache.get(method, v, size, scale))
            if result is not None:
                loaded[variant] = result
        return loaded

    def _warm_up(
        self, method: str, variant: Variant, loaded: Loaded, setting: TaskSetting, y: torch.Tensor, size: int
    ) -> dict | None:
        """The untimed runs, with the memory they need; None (recorded) when the variant cannot run."""
        what = f"speed {method} {variant.name} {size}px batch {y.shape[0]}"
        pixels = size * size * y.shape[0]
        reason = self.guard.check((method, variant.name), loaded.device, pixels)
        if reason:
            self.skips.add(what, reason)
            return None
        self.log(f"warm-up {method} {variant.name} {size}px batch {y.shape[0]}")
        meter = MemoryMeter(loaded.device)
        config = self.config
        with meter.growth() as memory:
            done = self.skips.attempt(
                what,
                lambda: [timed_restore(loaded, method, setting, y, config.steps, config.seed, config.noise) for _ in range(config.warmup)],
            )
        if done is None:
            return None
        self.guard.record((method, variant.name), pixels, (loaded.memory_mb or 0.0) + memory.get("peak", 0.0))
        return {"kind": meter.kind, "load": loaded.memory_mb, "run_peak": memory.get("peak")}

    def scaling(self) -> list[dict]:
        """Two sweeps per method: image sizes at batch 1, then batch sizes at ``--size``."""
        config = self.config
        entries = []
        for method in config.methods:
            for size in config.scaling_sizes:
                entries += self.speed(method, size, [1])
                self.release(method)
            batches = [b for b in config.scaling_batches if b != 1]
            if batches:
                entries += self.speed(method, config.size, batches)
                self.release(method)
        return entries

    def release(self, method: str) -> None:
        """Let the method's models go, so that the next method's runs get their memory back
        (onnxruntime's arena keeps what a session's largest run needed)."""
        self.cache.release(method)

    def quality(self) -> list[dict]:
        """Baseline and methods, per task and data set: mean PSNR, SSIM (and LPIPS) over the images."""
        from ..pipelines import pipeline_class

        config = self.config
        lpips = LPIPS(config.lpips_weights, config.lpips_net) if config.lpips_weights else None
        variant = config.quality_variant
        reason = variant.unavailable_reason()
        if reason:
            raise UserError(f"--quality-variant {variant.name}: {reason}; pick another variant")
        settings = [TASK_SETTINGS[task] for task in config.tasks]
        cases = {
            (setting.task, dataset): quality_cases(setting, dataset, config.limit, config.seed)
            for setting in settings
            for dataset in config.datasets
        }
        rows = []
        for setting in settings:
            for dataset in config.datasets:
                observed = cases[setting.task, dataset]
                scores = {c.name: image_scores(baseline(c.y, tuple(c.x.shape[-2:])), c.x, config.crop, lpips) for c in observed}
                rows.append(quality_row(baseline_name(setting), "baseline", setting, dataset, scores, []))
        for method in config.methods:
            for setting in settings:
                if not pipeline_class(method).supports(make_task_operator(setting, (64, 64), 3)):
                    self.skips.add(f"quality {method} {setting.task}", f"{method} does not support {setting.task}")
                    continue
                for dataset in config.datasets:
                    observed = cases[setting.task, dataset]
                    self.log(f"quality {method} {setting.task} {dataset_label(dataset)} ({len(observed)} images, {variant.name})")
                    row = self.skips.attempt(
                        f"quality {method} {setting.task} {dataset_label(dataset)}",
                        partial(self._method_quality, method, variant, setting, dataset, observed, lpips),
                    )
                    if row is not None:
                        rows.append(row)
            self.release(method)
        return rows

    def _method_quality(
        self, method: str, variant: Variant, setting: TaskSetting, dataset: str, cases: list[Case], lpips: LPIPS | None
    ) -> dict:
        config = self.config
        scores, seconds = {}, []
        for case in cases:
            key = (method, variant.name, setting.task, dataset_label(dataset), case.name)
            recorded = self.journal.get(key) if self.journal else None
            if recorded is None:
                loaded = self.cache.get(method, variant, config.size, setting.scale)
                run = timed_restore(loaded, method, setting, case.y, config.steps, config.seed, config.noise)
                recorded = image_scores(run.output, case.x, config.crop, lpips), run.seconds
                if self.journal:
                    self.journal.add(key, *recorded)
            scores[case.name] = recorded[0]
            seconds.append(recorded[1])
        return {**quality_row(method, "method", setting, dataset, scores, seconds), "variant": variant.name}


def run_benchmarks(
    config: BenchConfig, log: Callable[[str], None] = lambda message: None, journal: ScoreJournal | None = None
) -> dict:
    """Measure what ``config`` asks for and return the results (the JSON document).

    With a ``journal``, each image's quality scores are written to it as they are measured,
    and the images that it already holds are not restored again.
    """
    return Harness(config, log, journal).run()
