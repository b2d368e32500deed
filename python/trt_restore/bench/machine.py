"""The machine under the measurements: its description, memory meters and limits, device synchronisation."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__

if TYPE_CHECKING:
    import torch


def machine_info(threads: int) -> dict:
    """CPU model, cores, threads, GPU, library versions and the git commit of this checkout."""
    import onnxruntime
    import torch

    from ..runtime.openvino_backend import has_native_bf16, openvino_version
    from ..runtime.trt_loader import installed_flavours

    commit, dirty = git_state()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino_version(),
        "native_bf16": has_native_bf16() if openvino_version() else None,
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


def default_device() -> torch.device:
    """Where the engines run: the current CUDA device if there is one, else the CPU."""
    from ..runtime.device import resolve_device

    return resolve_device()
