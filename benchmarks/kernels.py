"""The CUDA kernels against the torch ops they replace, on the GPU, at the sizes the pipelines use.

Each step of ``trt_restore.kernels`` runs twice on the same inputs: through its custom
kernel, and through its torch reference (``kernels.torch_reference()``). Times are the
median of CUDA-event timings after warm-up, in microseconds; the speed-up is torch / kernel.

    python benchmarks/kernels.py --sizes 256,1024 --batches 1,4 --json benchmarks/results/kernels.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from trt_restore import kernels


def time_us(step: Callable[[], torch.Tensor], warmup: int, repeats: int) -> float:
    """Median wall time of ``step`` on the GPU, in microseconds, from CUDA events."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000)
    return statistics.median(times)


def cases(size: int, batch: int, generator: torch.Generator) -> dict[str, Callable[[], torch.Tensor]]:
    """One call per kernel family on a (batch, 3, size, size) image, as the pipelines make it."""
    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=generator, dtype=dtype).cuda()

    image = (batch, 3, size, size)
    k_hat, b_hat, z_hat = randn(size, size, dtype=torch.complex64), randn(*image, dtype=torch.complex64), randn(*image, dtype=torch.complex64)
    mu = torch.rand(batch, 1, 1, 1, generator=generator).cuda() + 0.05
    n = 3 * size * size
    vt_x0, vt_eps, ut_y, noise = (randn(batch, n) for _ in range(4))
    singulars = torch.rand(n, generator=generator).cuda().where(torch.rand(n, generator=generator).cuda() > 0.25, torch.zeros((), device="cuda"))
    index = torch.randperm(n, generator=generator).cuda()
    vector = randn(batch, n)
    return {
        "fft_prox (deblur t-update)": lambda: kernels.fft_prox(k_hat, b_hat, z_hat, mu),
        "sr_fft_prox ×4 (SR data step)": lambda: kernels.sr_fft_prox(k_hat, b_hat, z_hat, mu, 4),
        "ddrm_spectral_update": lambda: kernels.ddrm_spectral_update(vt_x0, vt_eps, ut_y, singulars, noise, 0.4, 0.05, 0.85, 1.0),
        "permute (Vᵀ, inpainting / box SR)": lambda: kernels.permute(vector, index),
        "unpermute (V)": lambda: kernels.unpermute(vector, index),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024", help="image sides (default 256,1024)")
    parser.add_argument("--batches", default="1,4", help="batch sizes (default 1,4)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py needs a CUDA GPU", file=sys.stderr)
        return 2
    if not kernels.cuda_kernels_available():
        print("the CUDA kernels did not compile or load on this GPU (see the warning)", file=sys.stderr)
        return 2
    generator = torch.Generator().manual_seed(0)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            for name, step in cases(size, batch, generator).items():
                kernel = time_us(step, args.warmup, args.repeats)
                with kernels.torch_reference():
                    reference = time_us(step, args.warmup, args.repeats)
                rows.append({"kernel": name, "size": size, "batch": batch, "torch_us": reference, "kernel_us": kernel,
                             "speedup": reference / kernel})
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| step | image | torch ops (µs) | kernel (µs) | speed-up |\n| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['kernel']} | {r['batch']}×3×{r['size']}² | {r['torch_us']:.1f} | {r['kernel_us']:.1f} | {r['speedup']:.2f}× |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
