"""The noise-level estimator of ``--sigma auto``, measured: its error per task and noise level, its
channel combination against simpler ones on held-out images, and restoration with σ̂ against the true σ.

``OMP_NUM_THREADS=1 python benchmarks/noise_level.py`` writes ``benchmarks/cpu/noise_level/noise_level.json``
and the Markdown tables beside it (``RESULTS.md``), which the README quotes. The restoration part
(``--sections quality``) runs the bundled networks on the CPU: Set5 only, every image twice per method,
on each image's centre 128×128 crop by default (``--crop 0``: whole images, about 10× the CPU time).
Each run updates the sections (and the methods) it measured, so they may run as separate processes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from trt_restore.bench.machine import machine_info
from trt_restore.bench.noise_level import (
    COMBINATIONS,
    auto_sigma_quality,
    estimator_errors,
    noise_level_markdown,
)

OUT = Path(__file__).resolve().parent / "cpu" / "noise_level" / "noise_level.json"
LEVELS = [5 / 255, 15 / 255, 25 / 255, 50 / 255]
"""The denoising levels of the estimator's test (tests/test_noise_level.py)."""
OPERATOR_LEVELS = [0.01, 0.02, 0.03, 0.05]
"""The noise on blurred and low-resolution observations."""
HELD_OUT = ["train/BSDS400", "train/CUrban100-half", "train/CSunHays80"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/noise_level.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"results JSON, updated in place (default {OUT})")
    parser.add_argument(
        "--sections", default="estimator,quality", help="estimator (errors and combinations), quality, or both"
    )
    parser.add_argument("--methods", default="ddrm,reld", help="methods of the restoration comparison")
    parser.add_argument(
        "--crop", type=int, default=128, help="restore each Set5 image's centre N×N crop (default 128; 0: whole images)"
    )
    parser.add_argument("--held-out-limit", type=int, default=30, help="images per held-out set (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from trt_restore.data import data_root

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    sections = args.sections.split(",")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["machine"] = machine_info(1)
    if "estimator" in sections:
        test_sets = ["Set5", "Set14"]
        results["estimator"] = estimator_errors(test_sets, ["denoise"], LEVELS, seed=args.seed, log=log)
        results["estimator"] += estimator_errors(
            test_sets, ["sr4-bicubic", "deblur-gauss"], OPERATOR_LEVELS, seed=args.seed, log=log
        )
        results["estimator"] += estimator_errors(test_sets, ["denoise"], LEVELS, saved=True, seed=args.seed, log=log)
        results["combinations"] = estimator_errors(
            [str(data_root() / name) for name in HELD_OUT], ["denoise"], LEVELS,
            combinations=list(COMBINATIONS), limit=args.held_out_limit, seed=args.seed, log=log,
        )
    if "quality" in sections:
        methods = args.methods.split(",")
        rows = auto_sigma_quality(methods, "Set5", 25 / 255, crop=args.crop or None, seed=args.seed, log=log)
        kept = [row for row in results.get("quality", []) if row["method"] not in methods]
        results["quality"] = kept + rows
    results["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    markdown = noise_level_markdown(results)
    args.out.with_name("RESULTS.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
