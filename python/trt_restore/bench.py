"""The benchmark harness behind ``trt-restore bench``: restoration quality and speed in one run.

Quality: PSNR and SSIM (LPIPS where its weights are supplied) of every method on every task
it supports, per data set, next to the trivial baseline: the degraded input itself, or for
super-resolution its bicubic upsampling. Metrics are on full images in [0, 1] (no border
crop unless ``--crop``); ground truths are cropped to a multiple of the SR factor.

Speed: every variant (backend × precision) runs the same method on the same observation in
the same process, repeats interleaved round-robin so that load drift hits all alike. Per run:
end-to-end wall time, each component's and each pipeline stage's time (``Models.timings``),
host↔device copies on a GPU, and the rest ("glue": Python, operator setup, tensor maths
between calls). Reported: p50/p95, images/s at batch 1 and the best batch, the ratio to
torch eager, and memory (resident set size on the CPU, torch's CUDA allocator on a GPU).

The results go to one JSON file; :func:`render_markdown` and the plots read only that JSON.
Module-level imports stay light so that ``trt-restore --help`` is fast; torch and the
backends are imported where they are used.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import UserError
from .methods import METHODS, NOISE_SOURCES

if TYPE_CHECKING:
    import torch

    from .operators import Operator
    from .pipelines import Models

RESULTS_FORMAT = "trt-restore-bench"
RESULTS_VERSION = 1


@dataclass(frozen=True)
class TaskSetting:
    """A benchmark task: the operator's name and parameters and the noise level σ on the [0, 1] scale."""

    task: str
    sigma: float
    params: dict = field(default_factory=dict)

    @property
    def scale(self) -> int:
        from .api import sr_factor

        return sr_factor(self.task)


TASK_SETTINGS: dict[str, TaskSetting] = {
    "denoise": TaskSetting("denoise", 25 / 255),
    "sr4-bicubic": TaskSetting("sr4-bicubic", 0.0),
    "deblur-gauss": TaskSetting("deblur-gauss", 0.01, {"kernel_sigma": 1.6, "kernel_size": 25}),
}
"""The tasks of the README's quality table."""

DATASETS = {name: f"test/{name}" for name in ("Set5", "Set14", "set3c", "Set12", "BSD68")}

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16")
REFERENCE = "torch"
DEFAULT_VARIANTS = ("torch", "onnxruntime", "torch-fp16", "onnxruntime-fp16", "tensorrt", "tensorrt-fp16")
SECTIONS = ("quality", "speed")

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


@dataclass(frozen=True)
class Variant:
    """A backend at a precision, named ``backend`` (fp32) or ``backend-fp16``."""

    backend: str
    precision: str = "fp32"

    @property
    def name(self) -> str:
        return self.backend if self.precision == "fp32" else f"{self.backend}-{self.precision}"

    @classmethod
    def parse(cls, text: str) -> Variant:
        backend, _, precision = text.partition("-")
        if backend not in BACKENDS or (precision or "fp32") not in PRECISIONS:
            raise UserError(
                f"unknown variant '{text}'; use a backend ({', '.join(BACKENDS)}) with an optional -fp16, e.g. onnxruntime-fp16"
            )
        return cls(backend, precision or "fp32")

    def unavailable_reason(self) -> str | None:
        """Why this machine cannot run the variant, or None."""
        import torch

        if self.backend != "tensorrt":
            return None
        from .runtime.trt_loader import installed_flavours

        if not torch.cuda.is_available():
            return "TensorRT runs engines on an NVIDIA GPU, and this machine has none (torch.cuda.is_available() is False)"
        if not installed_flavours():
            return "no TensorRT is installed; `pip install tensorrt` (or tensorrt-rtx)"
        return None


@dataclass
class BenchConfig:
    """Everything a run depends on, checked; recorded in the results as ``settings``."""

    methods: list[str]
    model_set: str
    variants: list[Variant]
    sections: list[str]
    threads: int
    size: int
    batches: list[int]
    repeats: int
    warmup: int
    steps: int | None
    speed_task: str
    tasks: list[str]
    datasets: list[str]
    limit: int | None
    quality_variant: Variant
    crop: int
    lpips_weights: Path | None
    lpips_net: str
    scaling: bool
    scaling_sizes: list[int]
    scaling_batches: list[int]
    tile: int | None
    seed: int
    memory_limit_gb: float | None = None
    noise: str = "host"

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["variants"] = [v.name for v in self.variants]
        data["quality_variant"] = self.quality_variant.name
        data["lpips_weights"] = str(self.lpips_weights) if self.lpips_weights else None
        return data

    @property
    def profile_sizes(self) -> list[int]:
        return [self.size, *(self.scaling_sizes if self.scaling else ())]

    @property
    def profile_batches(self) -> list[int]:
        return [*self.batches, *(self.scaling_batches if self.scaling else ())]


# Machine ------------------------------------------------------------------------------------


def machine_info(threads: int) -> dict:
    """CPU model, cores, threads, GPU, library versions and the git commit of this checkout."""
    import onnxruntime
    import torch

    from .runtime.trt_loader import installed_flavours

    commit, dirty = git_state()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "tensorrt": installed_flavours(),
        "trt_restore": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,
        "load_average": load_average(),
    }


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages: other processes competing for the cores skew the timings."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state() -> tuple[str | None, bool | None]:
    """The commit of the checkout this module runs from and whether tracked files differ from it."""
    folder = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return commit, (bool(status) if status is not None else None)


# Memory -------------------------------------------------------------------------------------


def _proc_status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class MemoryMeter:
    """Memory now and the peak since :meth:`reset`, in MB.

    CPU: resident set size from ``/proc/self/status`` (``VmRSS``; the peak ``VmHWM`` is reset
    by writing 5 to ``/proc/self/clear_refs``). GPU: torch's CUDA allocator, which holds the
    torch and TensorRT tensors but not memory that onnxruntime allocates itself.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda allocator" if device.type == "cuda" else "rss"

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass

    def current(self) -> float | None:
        if self.device.type == "cuda":
            import torch

            return torch.cuda.memory_allocated(self.device) / 2**20
        return _proc_status_mb("VmRSS")

    def peak(self) -> float | None:
        if self.device.type == "cuda":
            import torch

            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return _proc_status_mb("VmHWM")

    @contextmanager
    def growth(self) -> Iterator[dict]:
        """Over the block: ``"peak"``, the peak minus the memory before, and ``"kept"``, the memory after
        minus before (both floored at 0: the block may free garbage of earlier work)."""
        self.reset()
        before = self.current()
        record: dict = {}
        yield record
        after, peak = self.current(), self.peak()
        if before is not None and peak is not None and after is not None:
            record.update(peak=max(peak - before, 0.0), kept=max(after - before, 0.0))


def available_mb(device: torch.device) -> float | None:
    """Memory a run can still take: ``MemAvailable`` of /proc/meminfo, or the free CUDA memory."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class MemoryGuard:
    """Refuses a run that would not fit: the memory of the same variant's previous run, scaled
    by the ratio of pixels × batch, must stay below 90 % of what is available.

    Linear scaling is a lower bound (attention over all pixels grows quadratically), so this
    only stops the sweeps before the certain failures, where the operating system would kill
    the whole process instead of one variant failing.
    """

    FILL = 0.9

    def __init__(self):
        self._last: dict[tuple[str, str], tuple[int, float]] = {}

    def check(self, key: tuple[str, str], device: torch.device, pixels: int) -> str | None:
        if key not in self._last:
            return None
        last_pixels, last_mb = self._last[key]
        need, free = last_mb * pixels / last_pixels, available_mb(device)
        if free is None or need <= self.FILL * free:
            return None
        return f"needs at least {need / 1024:.1f} GiB (scaled from {last_mb / 1024:.1f} GiB at a smaller size), {free / 1024:.1f} GiB available"

    def record(self, key: tuple[str, str], pixels: int, megabytes: float) -> None:
        self._last[key] = (pixels, megabytes)


@contextmanager
def address_space_limit(megabytes: float | None) -> Iterator[None]:
    """Cap the process's virtual memory at its current size plus ``megabytes`` (Linux).

    An allocation beyond the cap fails with an error that the harness records for that one
    variant, where the operating system would otherwise kill the whole process. Only for
    CPU runs: CUDA reserves far more address space than it uses. The old limit comes back
    afterwards.
    """
    import resource

    current = _proc_status_mb("VmSize")
    if megabytes is None or current is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = int((current + megabytes) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


# Models -------------------------------------------------------------------------------------


@dataclass
class Loaded:
    """A method's models on one variant, with what loading them cost."""

    models: Models
    seconds: float
    memory_mb: float | None

    @property
    def device(self) -> torch.device:
        return next(iter(self.models.engines.values())).device


class ModelCache:
    """Models per (method, variant, image size, SR scale), loaded on first use.

    fp32 on torch and onnxruntime load through :func:`trt_restore.api.load_models`; fp16
    and TensorRT go the deployment way, exported and built into a ``.plan`` bundle (in a
    temporary folder) for the run's sizes and batches, then loaded from it; torch fp16
    runs an fp16 copy of each component with the normalisations in fp32 and torch's fused
    attention, as torch eager would run it.
    """

    def __init__(self, config: BenchConfig):
        self.config = config
        self._loaded: dict[tuple, Loaded] = {}
        self._model_set = None

    def get(self, method: str, variant: Variant, size: int, scale: int) -> Loaded:
        key = (method, variant, size, scale)
        if key not in self._loaded:
            meter = MemoryMeter(default_device())
            start = time.perf_counter()
            with meter.growth() as memory:
                models = self._load(method, variant, size, scale)
            self._loaded[key] = Loaded(models, time.perf_counter() - start, memory.get("kept"))
        return self._loaded[key]

    def release(self, method: str) -> None:
        """Forget the method's models."""
        for key in [key for key in self._loaded if key[0] == method]:
            del self._loaded[key]
        gc.collect()

    @property
    def model_set(self):
        if self._model_set is None:
            from .export.model_sets import load_model_set

            self._model_set = load_model_set(self.config.model_set)
        return self._model_set

    def _load(self, method: str, variant: Variant, size: int, scale: int) -> Models:
        from .api import load_models

        cfg = self.config
        if variant.precision == "fp32" and variant.backend != "tensorrt":
            _, models = load_models(
                method, model_set=cfg.model_set, backend=variant.backend, image_size=(size, size), scale=scale,
                threads=cfg.threads, tile=cfg.tile,
            )
            return models
        if variant.backend == "torch":
            return self._torch_half(method)
        return self._from_bundle(method, variant, size, scale)

    def _torch_half(self, method: str) -> Models:
        from .api import tiled
        from .export.precision import HalfPrecision
        from .methods import components_for
        from .pipelines import Models
        from .runtime.torch_backend import TorchEngine

        wrappers = {name: self.model_set.wrapper(name, method) for name in components_for(method)}
        engines = {name: TorchEngine(HalfPrecision(w, fused_attention=True), w.spec) for name, w in wrappers.items()}
        return Models(tiled(engines, self.config.tile))

    def _from_bundle(self, method: str, variant: Variant, size: int, scale: int) -> Models:
        from .api import load_models, padded_size
        from .engine.bundle_writer import build_bundle
        from .export.onnx_export import export_method
        from .methods import components_for

        cfg = self.config
        multiple = math.lcm(scale, *(self.model_set.wrapper(c, method).spec.multiple for c in components_for(method)))
        canvas = padded_size((size, size), multiple)
        smallest, largest = min(64, *cfg.profile_sizes), max(cfg.profile_sizes)
        profile = ((smallest, smallest), canvas, padded_size((largest, largest), multiple))
        with tempfile.TemporaryDirectory(prefix="trt-restore-bench-") as folder:
            exported = export_method(method, self.model_set, folder, precision=variant.precision, example_size=canvas)
            bundle = build_bundle(
                method, exported, Path(folder) / f"{method}.plan", backend=variant.backend,
                precision=variant.precision, profile=profile, batch=(1, 1, max(cfg.profile_batches)),
                meta=self.model_set.meta, model_set=self.model_set.name,
            )
            _, models = load_models(method, engine=bundle, backend=variant.backend, threads=cfg.threads, tile=cfg.tile)
        return models


def default_device() -> torch.device:
    """Where the engines run: the current CUDA device if there is one, else the CPU."""
    from .runtime.device import resolve_device

    return resolve_device()


def steps_override(method: str, steps: int | None) -> dict | None:
    """``{"steps": n}`` or ``{"iterations": n}``, whichever the method's Config has."""
    if steps is None:
        return None
    from .pipelines import pipeline_class
    from .pipelines.base import config_fields

    names = {f.name for f in config_fields(pipeline_class(method).Config)}
    return {"steps" if "steps" in names else "iterations": steps}


# Images -------------------------------------------------------------------------------------


def synthetic_image(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """A deterministic stand-in photo in [0, 1]: colour gradients, a disc, stripes and fine noise."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    axis = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    phase = torch.rand(batch, channels, 1, 1, generator=generator)
    gradient = 0.5 + 0.35 * torch.sin(2 * math.pi * (xx + 0.6 * yy + phase))
    disc = ((xx - 0.6) ** 2 + (yy - 0.4) ** 2 < 0.06).float() * 0.3
    stripes = 0.1 * torch.sign(torch.sin(40 * math.pi * xx)) * (yy > 0.7).float()
    grain = 0.03 * torch.randn(batch, channels, size, size, generator=generator)
    return (gradient + disc + stripes + grain).clamp(0, 1)


def make_task_operator(setting: TaskSetting, size: tuple[int, int], channels: int) -> Operator:
    from .operators import make_operator

    return make_operator(setting.task, size=size, channels=channels, **setting.params)


def observe(setting: TaskSetting, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, Operator]:
    """``y = A x + σ n`` for the task's operator on x's size, with noise seeded by ``seed``."""
    from .operators import Degradation

    operator = make_task_operator(setting, tuple(x.shape[-2:]), x.shape[1])
    return Degradation(operator, setting.sigma).observe(x, seed=seed), operator


def baseline(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The trivial restoration: the degraded input itself, or its bicubic upsampling to ``size`` for SR; in [0, 1]."""
    import torch.nn.functional as F

    if tuple(y.shape[-2:]) != tuple(size):
        y = F.interpolate(y, size=size, mode="bicubic", align_corners=False)
    return y.clamp(0, 1)


def baseline_name(setting: TaskSetting) -> str:
    return "bicubic" if setting.scale > 1 else "degraded input"


def modcrop(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` cropped at the bottom and right to sides divisible by ``multiple``."""
    height, width = x.shape[-2:]
    return x[..., : height - height % multiple, : width - width % multiple]


def dataset_paths(name: str) -> list[Path]:
    """Images of a named test set (Set5, Set14, set3c, Set12, BSD68) or of a folder."""
    from .data import IMAGE_SUFFIXES, dataset_images

    if name in DATASETS:
        return dataset_images(DATASETS[name])
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise UserError(f"unknown data set '{name}'; choose {', '.join(DATASETS)} or give a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def dataset_label(name: str) -> str:
    return name if name in DATASETS else Path(name).name


# Timing -------------------------------------------------------------------------------------


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
    from .api import restore

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
    """One JSON entry per variant, with ratios to torch eager and the output's distance to it."""
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


# Quality ------------------------------------------------------------------------------------


class LPIPS:
    """LPIPS distance with weights from a local file (nothing is downloaded).

    The file is the full state dict of ``lpips.LPIPS(net=NET)`` (backbone and linear
    layers), e.g. written once with ``torch.save(lpips.LPIPS(net='alex').state_dict(), PATH)``.
    """

    def __init__(self, weights: Path, net: str = "alex"):
        import torch

        try:
            import lpips
        except ImportError as error:
            raise UserError(
                f"--lpips-weights needs the 'lpips' package, which is not installed ({error}); "
                "`pip install lpips`, or drop --lpips-weights"
            ) from None
        if not weights.is_file():
            raise UserError(f"LPIPS weights {weights} not found; pass the state dict of lpips.LPIPS(net='{net}')")
        self.model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False).eval()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, _ = self.model.load_state_dict(state, strict=False)
        if missing:
            raise UserError(
                f"{weights} lacks {len(missing)} of LPIPS({net})'s parameters (e.g. {missing[0]}); "
                f"save the full state dict of lpips.LPIPS(net='{net}')"
            )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        import torch

        x, y = (t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t for t in (x, y))
        with torch.inference_mode():
            return float(self.model(2 * x - 1, 2 * y - 1).mean())


@dataclass
class Case:
    """One test image and its observation."""

    name: str
    x: torch.Tensor
    y: torch.Tensor


def quality_cases(setting: TaskSetting, dataset: str, limit: int | None, seed: int) -> list[Case]:
    """The data set's images (cropped to the SR factor) and their observations, the k-th seeded with seed + k."""
    from .io import read_image

    cases = []
    for index, path in enumerate(dataset_paths(dataset)[:limit]):
        x = modcrop(read_image(path).data[None], setting.scale)
        y, _ = observe(setting, x, seed + index)
        cases.append(Case(path.name, x, y))
    return cases


def image_scores(out: torch.Tensor, x: torch.Tensor, crop: int, lpips: LPIPS | None) -> dict[str, float]:
    from .metrics import psnr, ssim

    if crop:
        out, x = out[..., crop:-crop, crop:-crop], x[..., crop:-crop, crop:-crop]
    scores = {"psnr": psnr(out, x), "ssim": ssim(out, x)}
    if lpips is not None:
        scores["lpips"] = lpips(out, x)
    return scores


def quality_row(name: str, kind: str, setting: TaskSetting, dataset: str, scores: list[dict], seconds: list[float]) -> dict:
    return {
        "method": name,
        "kind": kind,
        "task": setting.task,
        "sigma": setting.sigma,
        "dataset": dataset_label(dataset),
        "images": len(scores),
        **{metric: statistics.fmean(s[metric] for s in scores) for metric in scores[0]},
        "seconds_per_image": statistics.fmean(seconds) if seconds else None,
    }


# The run ------------------------------------------------------------------------------------


class Harness:
    """One benchmark run: the models loaded so far, what was skipped, the memory guard."""

    def __init__(self, config: BenchConfig, log: Callable[[str], None] = lambda message: None):
        self.config = config
        self.log = log
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
        from .pipelines import pipeline_class

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
        from .pipelines import pipeline_class

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
                scores = [image_scores(baseline(c.y, tuple(c.x.shape[-2:])), c.x, config.crop, lpips) for c in observed]
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
                        lambda: self._method_quality(method, variant, setting, dataset, observed, lpips),
                    )
                    if row is not None:
                        rows.append(row)
            self.release(method)
        return rows

    def _method_quality(
        self, method: str, variant: Variant, setting: TaskSetting, dataset: str, cases: list[Case], lpips: LPIPS | None
    ) -> dict:
        config = self.config
        loaded = self.cache.get(method, variant, config.size, setting.scale)
        scores, seconds = [], []
        for case in cases:
            run = timed_restore(loaded, method, setting, case.y, config.steps, config.seed, config.noise)
            scores.append(image_scores(run.output, case.x, config.crop, lpips))
            seconds.append(run.seconds)
        return {**quality_row(method, "method", setting, dataset, scores, seconds), "variant": variant.name}


def run_benchmarks(config: BenchConfig, log: Callable[[str], None] = lambda message: None) -> dict:
    """Measure what ``config`` asks for and return the results (the JSON document)."""
    return Harness(config, log).run()


# Report -------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def machine_line(results: dict) -> str:
    m = results["machine"]
    device = m["gpu"] or f"{m['cpu']}, {m['cores']} cores"
    commit = (m["git_commit"] or "unknown")[:10] + (" (modified)" if m.get("git_dirty") else "")
    trt = ", ".join(f"{k} {v}" for k, v in (m.get("tensorrt") or {}).items()) or "none"
    load = m.get("load_average")
    return (
        f"{device}; {m['threads']} threads (torch and onnxruntime intra-op); torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, TensorRT {trt}; commit {commit}; {results['created']}"
        + (f"; load average {load[0]:.2f} at the start" if load else "")
    )


def quality_markdown(results: dict) -> list[str]:
    rows = results["quality"]
    if not rows:
        return []
    has_lpips = any("lpips" in r for r in rows)
    columns = list(dict.fromkeys(r["method"] for r in rows if r["kind"] == "baseline"))
    columns += sorted({r["method"] for r in rows if r["kind"] == "method"}, key=METHODS.index)
    cells: dict[tuple, dict[str, str]] = {}
    for r in rows:
        key = (r["task"], r["dataset"], r["images"])
        text = f"{_number(r['psnr'])} / {_number(r['ssim'], 3)}" + (f" / {_number(r.get('lpips'), 3)}" if has_lpips else "")
        cells.setdefault(key, {})[r["method"]] = text
    settings = results["settings"]
    metric = "PSNR (dB) / SSIM" + (" / LPIPS" if has_lpips else "")
    lines = [
        f"### Quality: {metric}",
        "",
        f"Model set `{settings['model_set']}`, backend {settings['quality_variant']}, "
        f"border crop {settings['crop']} px, steps {settings['steps'] or 'method default'}. "
        "σ on the [0, 1] scale; the baseline is the degraded input (bicubic upsampling for SR).",
        "",
    ]
    table_rows = [
        [task, f"{dataset} ({images})", *(cell.get(c, "–") for c in columns)] for (task, dataset, images), cell in cells.items()
    ]
    return lines + _table(["task", "data set (images)", *columns], table_rows) + [""]


def speed_markdown(results: dict) -> list[str]:
    """The end-to-end and per-stage tables, one pair per image size (merged runs may hold several)."""
    entries = [e for e in results["speed"] if e["batch"] == results["settings"]["batches"][0]] or results["speed"]
    lines = []
    for size in dict.fromkeys(e["size"] for e in entries):
        lines += _speed_tables(results, [e for e in entries if e["size"] == size])
    return lines


def _speed_tables(results: dict, entries: Sequence[dict]) -> list[str]:
    best = {(r["method"], r["variant"], r["size"]): r for r in results["throughput"]}
    rows = []
    for e in entries:
        t = best.get((e["method"], e["variant"], e["size"]), {})
        memory = e["memory_mb"]
        rows.append([
            e["method"], e["variant"], _number(e["latency_s"]["p50"], 3), _number(e["latency_s"]["p95"], 3),
            _number(e["speedup_vs_torch"]) + "×" if e["speedup_vs_torch"] else "–",
            _number(t.get("batch1_images_per_s"), 3),
            f"{_number(t.get('best_images_per_s'), 3)} (b={t.get('best_batch', '–')})",
            f"{_number(memory.get('load'), 0)} + {_number(memory.get('run_peak'), 0)}",
            f"{e['max_abs_diff_vs_torch']:.1e}" if e["max_abs_diff_vs_torch"] is not None else "–",
        ])
    first = entries[0]
    memory_kind = "RSS" if first["memory_mb"]["kind"] == "rss" else "CUDA allocator"
    lines = [
        "### Speed: end to end",
        "",
        f"Model set `{results['settings']['model_set']}`, task {first['task']}, {first['size']}×{first['size']} output, "
        f"batch {first['batch']}, "
        f"{results['settings']['repeats']} repeats after {results['settings']['warmup']} warm-up, "
        f"steps {results['settings']['steps'] or 'method default'}; × torch is the speed-up over torch eager fp32.",
        "",
    ]
    header = ["method", "variant", "p50 (s)", "p95 (s)", "× torch", "images/s b=1", "images/s best",
              f"{memory_kind} MB load + run", "max |Δ| vs torch"]
    return lines + _table(header, rows) + [""] + stages_markdown(entries)


def stages_markdown(entries: Sequence[dict]) -> list[str]:
    stages = list(dict.fromkeys(STAGE_LABELS.get(s, s) for e in entries for s in e["stages"]))
    rows = []
    for e in entries:
        per_label: dict[str, float] = {}
        for name, stat in e["stages"].items():
            label = STAGE_LABELS.get(name, name)
            per_label[label] = per_label.get(label, 0.0) + stat["per_run_s"]
        rows.append([e["method"], e["variant"], *(_number(per_label.get(s), 3) for s in stages)])
    lines = ["### Speed: seconds per run by stage (p50)", ""]
    return lines + _table(["method", "variant", *stages], rows) + [""]


def scaling_markdown(results: dict) -> list[str]:
    entries = results["scaling"]
    if not entries:
        return []
    rows = [
        [e["method"], e["variant"], str(e["size"]), str(e["batch"]), _number(e["latency_s"]["p50"], 3),
         _number(e["images_per_s"], 3), _number(e["memory_mb"].get("run_peak"), 0)]
        for e in entries
    ]
    header = ["method", "variant", "size", "batch", "p50 (s)", "images/s", "run peak MB"]
    return ["### Scaling", ""] + _table(header, rows) + [""]


def render_markdown(results: dict, plots: Sequence[str] = ()) -> str:
    """The README's benchmark section, from the results JSON alone."""
    lines = ["## Benchmark results", "", machine_line(results), ""]
    if results.get("merged_from"):
        parts = ", ".join(f"{r['created']} (commit {(r['commit'] or 'unknown')[:10]})" for r in results["merged_from"])
        lines += [f"Merged from {len(results['merged_from'])} runs, later entries replacing earlier ones: {parts}.", ""]
    lines += quality_markdown(results) + speed_markdown(results) + scaling_markdown(results)
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + ([""] if plots else [])
    if results["skipped"]:
        lines += ["### Not measured", ""] + [f"- {s['what']}: {s['reason']}" for s in results["skipped"]] + [""]
    return "\n".join(lines)


# Plots --------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib, which is not installed; `pip install matplotlib` or pass --no-plots") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_stages(results: dict, path: Path) -> Path | None:
    """Stacked horizontal bars: seconds per run in each stage, one bar per method and variant (first batch)."""
    entries = [e for e in results["speed"] if e["batch"] == results["settings"]["batches"][0]]
    if not entries:
        return None
    plt = _pyplot()
    labels = list(dict.fromkeys(STAGE_LABELS.get(s, s) for e in entries for s in e["stages"] if s not in NESTED_STAGES))
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(entries) + 1.8))
    colours = plt.get_cmap("tab20").colors
    for row, e in enumerate(entries):
        left = 0.0
        for index, label in enumerate(labels):
            width = sum(s["per_run_s"] for n, s in e["stages"].items() if STAGE_LABELS.get(n, n) == label and n not in NESTED_STAGES)
            axes.barh(row, width, left=left, color=colours[index % len(colours)], label=label if row == 0 else None)
            left += width
    axes.set_yticks(range(len(entries)), [f"{e['method']} · {e['variant']}" for e in entries])
    axes.invert_yaxis()
    axes.set_xlabel("seconds per run (p50)")
    axes.set_title(f"Latency per stage, {entries[0]['task']} {entries[0]['size']}×{entries[0]['size']}, batch {entries[0]['batch']}")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_quality_speed(results: dict, path: Path) -> Path | None:
    """PSNR against seconds per image, one panel per task: a colour per method, a marker per
    data set; the baselines as dashed lines."""
    rows = results["quality"]
    if not any(r["kind"] == "method" for r in rows):
        return None
    plt = _pyplot()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    colours = plt.get_cmap("tab10").colors
    markers = "osD^vP*X"
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4.2), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for r in (r for r in rows if r["task"] == task):
            marker = markers[datasets.index(r["dataset"]) % len(markers)]
            if r["kind"] == "baseline":
                axis.axhline(r["psnr"], linestyle="--", color="grey", linewidth=1)
                axis.annotate(
                    f"{r['method']}, {r['dataset']}", (0.01, r["psnr"]), xycoords=("axes fraction", "data"),
                    fontsize="x-small", va="bottom",
                )
                continue
            colour = colours[METHODS.index(r["method"]) % len(colours)]
            axis.scatter(r["seconds_per_image"], r["psnr"], color=colour, marker=marker, label=f"{r['method']}, {r['dataset']}")
        axis.set(xscale="log", title=task, xlabel="seconds per image", ylabel="PSNR (dB)")
        if axis.collections:  # the methods' points; a task that no method supports has only baselines
            axis.legend(fontsize="xx-small", loc="best", framealpha=0.6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_scaling(results: dict, path: Path) -> Path | None:
    """Latency against image size (batch 1) and images/s against batch size, a line per method and variant."""
    entries = results["scaling"]
    if not entries:
        return None
    plt = _pyplot()
    figure, (by_size, by_batch) = plt.subplots(1, 2, figsize=(11, 4))
    lines: dict[tuple, list[dict]] = {}
    for e in entries:
        lines.setdefault((e["method"], e["variant"]), []).append(e)
    size = results["settings"]["size"]
    for (method, variant), group in lines.items():
        sizes = sorted((e for e in group if e["batch"] == 1), key=lambda e: e["size"])
        batches = sorted((e for e in group if e["size"] == size), key=lambda e: e["batch"])
        by_size.plot([e["size"] for e in sizes], [e["latency_s"]["p50"] for e in sizes], marker="o", label=f"{method} · {variant}")
        by_batch.plot([e["batch"] for e in batches], [e["images_per_s"] for e in batches], marker="o", label=f"{method} · {variant}")
    by_size.set(xscale="log", yscale="log", xlabel="image side (pixels)", ylabel="seconds per image (p50)", title="batch 1")
    by_batch.set(xscale="log", xlabel="batch", ylabel="images/s", title=f"{size}×{size}")
    by_size.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


PLOTS: dict[str, Callable[[dict, Path], Path | None]] = {
    "latency_stages.png": plot_stages,
    "quality_speed.png": plot_quality_speed,
    "scaling.png": plot_scaling,
}


def write_report(results: dict, folder: Path, plots: bool = True) -> list[Path]:
    """``RESULTS.md`` and the PNG plots in ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [p for name, plot in PLOTS.items() if plots and (p := plot(results, folder / name)) is not None]
    report = folder / "RESULTS.md"
    report.write_text(render_markdown(results, [p.name for p in written]) + "\n")
    return [report, *written]


# Command line -------------------------------------------------------------------------------


def _comma_list(kind: Callable[[str], Any]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item]
        except (ValueError, UserError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text}")
    return value


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"'{text}' is not one of {', '.join(choices)}")
        return text

    return parse


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``trt-restore bench`` flags."""
    methods, positives = _comma_list(_choice(METHODS)), _comma_list(_positive)
    what = parser.add_argument_group("what to measure")
    what.add_argument("--methods", type=methods, default=list(METHODS), help="comma-separated methods (default: all)")
    what.add_argument("--model-set", default="bundled", metavar="NAME|FOLDER", help="bundled (default), tiny, or a model-set folder")
    what.add_argument("--sections", type=_comma_list(_choice(SECTIONS)), default=list(SECTIONS), help="quality,speed (default both)")
    what.add_argument("--steps", type=_positive, help="override every method's steps/iterations (default: each method's own)")
    what.add_argument("--seed", type=int, default=0, help="seed of the observation noise and the samplers (default 0)")
    what.add_argument("--noise", choices=NOISE_SOURCES, default="host",
                      help="where the samplers draw their noise: host (default) or device (as restore --noise)")
    what.add_argument("--threads", type=_positive, default=os.cpu_count() or 1,
                      help="torch threads and onnxruntime intra-op threads, the same for fairness (default: all cores)")
    what.add_argument("--tile", type=_positive, help="run the networks on tiles of this many pixels (default: whole images)")
    what.add_argument("--memory-limit", type=float, metavar="GB",
                      help="CPU only: memory the runs may add; a run that needs more is listed as not measured "
                           "(default: 90%% of the memory available at the start; 0: no limit)")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--variants", type=_comma_list(Variant.parse), default=[Variant.parse(v) for v in DEFAULT_VARIANTS],
                       help=f"backends to compare, torch eager first (default: {','.join(DEFAULT_VARIANTS)})")
    speed.add_argument("--size", type=_positive, default=256, help="output image side in pixels (default 256)")
    speed.add_argument("--batches", type=positives, default=[1, 4], help="batch sizes (default 1,4)")
    speed.add_argument("--repeats", type=_positive, default=3, help="timed runs per variant (default 3)")
    speed.add_argument("--warmup", type=_positive, default=1, help="untimed runs first, at least 1 (default 1)")
    speed.add_argument("--speed-task", type=_choice(tuple(TASK_SETTINGS)), default="sr4-bicubic",
                       help="task of the speed runs (default sr4-bicubic, which every method supports)")
    speed.add_argument("--scaling", action="store_true", help="also sweep image sizes (batch 1) and batch sizes")
    speed.add_argument("--scaling-sizes", type=positives, default=[64, 128, 256, 512, 1024], help="default 64,128,256,512,1024")
    speed.add_argument("--scaling-batches", type=positives, default=[1, 2, 4, 8, 16], help="default 1,2,4,8,16")
    quality = parser.add_argument_group("quality")
    quality.add_argument("--tasks", type=_comma_list(_choice(tuple(TASK_SETTINGS))), default=list(TASK_SETTINGS),
                         help=f"default {','.join(TASK_SETTINGS)}")
    quality.add_argument("--datasets", type=_comma_list(str), default=["Set5"],
                         help=f"{', '.join(DATASETS)} or folders of images (default Set5)")
    quality.add_argument("--limit", type=_positive, help="at most this many images per data set")
    quality.add_argument("--quality-variant", type=Variant.parse, default=Variant("onnxruntime"),
                         help="variant that restores the quality images (default onnxruntime)")
    quality.add_argument("--crop", type=int, default=0, help="border pixels left out of the metrics (default 0)")
    quality.add_argument("--lpips-weights", type=Path, metavar="PATH", help="state dict of lpips.LPIPS; enables LPIPS")
    quality.add_argument("--lpips-net", choices=("alex", "vgg", "squeeze"), default="alex", help="LPIPS backbone (default alex)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", type=Path, default=Path("benchmarks/results/bench.json"), help="results file (default benchmarks/results/bench.json)")
    output.add_argument("--report-dir", type=Path, default=Path("benchmarks"), help="where RESULTS.md and the plots go (default benchmarks)")
    output.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    output.add_argument("--from-json", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: write RESULTS.md and the plots of earlier runs' results files; "
                             "a later file's entries replace an earlier one's for the same method, task and data set "
                             "(quality) or method, variant, size and batch (speed)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Check the flags that argparse cannot check alone."""
    if args.crop < 0:
        raise UserError(f"--crop must be >= 0, got {args.crop}")
    if args.memory_limit is not None and args.memory_limit < 0:
        raise UserError(f"--memory-limit must be >= 0 GB, got {args.memory_limit}")
    if not args.methods or not args.variants or not args.batches:
        raise UserError("--methods, --variants and --batches each need at least one value")
    if "quality" in args.sections and not (args.tasks and args.datasets):
        raise UserError("the quality section needs --tasks and --datasets")
    names = [v.name for v in args.variants]
    if len(set(names)) != len(names):
        raise UserError(f"--variants lists a variant twice: {','.join(names)}")
    return BenchConfig(
        methods=args.methods, model_set=str(args.model_set), variants=args.variants, sections=args.sections,
        threads=args.threads, size=args.size, batches=args.batches, repeats=args.repeats, warmup=args.warmup,
        steps=args.steps, speed_task=args.speed_task, tasks=args.tasks, datasets=args.datasets, limit=args.limit,
        quality_variant=args.quality_variant, crop=args.crop, lpips_weights=args.lpips_weights,
        lpips_net=args.lpips_net, scaling=args.scaling, scaling_sizes=args.scaling_sizes,
        scaling_batches=args.scaling_batches, tile=args.tile, seed=args.seed, memory_limit_gb=args.memory_limit,
        noise=args.noise,
    )


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks, write the JSON, ``RESULTS.md`` and the plots; print where they are."""
    if args.from_json is not None:
        results = merge_results([read_results(path) for path in args.from_json])
        written = write_report(results, args.report_dir, plots=not args.no_plots)
    else:
        config = config_from_args(args)

        def log(message: str) -> None:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

        results = run_benchmarks(config, log)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        written = [args.json, *write_report(results, args.report_dir, plots=not args.no_plots)]
    for path in written:
        print(path)
    return 0


# Entries that measure the same thing: a later run's replaces an earlier run's.
MERGE_KEYS = {
    "quality": ("method", "task", "dataset"),
    "speed": ("method", "variant", "size", "batch"),
    "scaling": ("method", "variant", "size", "batch"),
}


def merge_results(runs: Sequence[dict]) -> dict:
    """One results document from several runs (e.g. a subset measured again after a model update).

    The machine and settings are the first run's; ``merged_from`` lists every run's date and commit.
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
        merged["merged_from"] = [{"created": r["created"], "commit": r["machine"].get("git_commit")} for r in runs]
    return merged


def read_results(path: Path) -> dict:
    """A results file written by this harness."""
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read benchmark results '{path}': {error}") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise UserError(f"'{path}' is not a trt-restore benchmark results file")
    return results


__all__ = [
    "TASK_SETTINGS",
    "BenchConfig",
    "Harness",
    "Variant",
    "add_bench_arguments",
    "render_markdown",
    "run_bench",
    "run_benchmarks",
]
