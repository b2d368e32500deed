"""Peak memory and time of restoring one large image on the CPU, per method and backend.

``python benchmarks/large_image.py`` upscales a data-set image (``test/Set14``'s first
image by default) to 4000×3000, restores it with ``trt-restore restore`` once per method
and backend, each in its own process, and prints that process's peak resident set size
and wall time. Memory does not depend on the number of steps, so each method runs its
fewest (``--iterations`` / ``--steps``); pass ``--tile`` to compare tile sizes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from trt_restore.data import dataset_images

FEWEST_STEPS = {"reld": ("--iterations", "1")}
"""The option giving a method its fewest steps; the others take ``--steps``."""


def large_image(source: Path, size: tuple[int, int], path: Path) -> Path:
    """``source`` resized (bicubic) to ``size`` (width, height), saved as PNG at ``path``."""
    Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(path)
    return path


def peak_run(command: list[str]) -> tuple[float, float]:
    """Run ``command``; its wall time in seconds and peak RSS in GB (raises if it fails)."""
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return seconds, usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/large_image.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="4000x3000", help="WxH of the large image (default 4000x3000)")
    parser.add_argument("--source", type=Path, help="image to enlarge (default: the first of test/Set14)")
    parser.add_argument("--methods", default="reld,ddrm", help="comma-separated methods (default reld,ddrm)")
    parser.add_argument("--backends", default="torch,onnxruntime", help="comma-separated CPU backends")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--tile", type=int, help="--tile of the restorations (default: trt-restore's)")
    parser.add_argument("--model-set", default="bundled", help="networks to run (default bundled)")
    args = parser.parse_args(argv)
    width, height = (int(n) for n in args.size.lower().split("x"))
    source = args.source or dataset_images("test/Set14")[0]
    executable = Path(sys.executable).with_name("trt-restore")
    print(f"{'method':<14}{'backend':<13}{'size':<11}{'tile':<6}{'seconds':>9}{'peak RSS GB':>13}")
    with tempfile.TemporaryDirectory(prefix="large-image-") as folder:
        image = large_image(source, (width, height), Path(folder) / "large.png")
        for method in args.methods.split(","):
            for backend in args.backends.split(","):
                command = [
                    str(executable), "restore", str(image), "-o", str(Path(folder) / "out.png"),
                    "--method", method, "--task", "denoise", "--sigma", "0.05", "--backend", backend,
                    "--device", "cpu", "--threads", str(args.threads), "--model-set", args.model_set, "-q",
                    *FEWEST_STEPS.get(method, ("--steps", "2")),
                    *(["--tile", str(args.tile)] if args.tile else []),
                ]  # fmt: skip
                seconds, peak = peak_run(command)
                tile = str(args.tile or "auto")
                print(f"{method:<14}{backend:<13}{args.size:<11}{tile:<6}{seconds:>9.1f}{peak:>13.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
