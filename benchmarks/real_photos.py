"""Real noisy photographs restored with ``--sigma auto``: a contact sheet for the README, for eyes only.

``OMP_NUM_THREADS=1 python benchmarks/real_photos.py`` takes a centre crop of a few RNI15 photographs
(``real/RNI15`` under ``TRT_RESTORE_DATA``; they have no ground truth), estimates each one's noise
level, denoises it with DDRM and RELD on the bundled networks with that estimate (``sigma="auto"``),
and writes ``docs/real_photos.png``: one row per photograph, noisy input | DDRM | RELD, with σ̂
written under each. Crops keep it short: 4 minutes at one thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from trt_restore.api import load_models, restore
from trt_restore.bench.images import centre_crop
from trt_restore.data import dataset_dir
from trt_restore.demo import Cell, contact_sheet
from trt_restore.io import read_image
from trt_restore.noise_level import AUTO, estimate_noise_sigma

OUT = Path(__file__).resolve().parents[1] / "docs" / "real_photos.png"
PHOTOS = "Flowers.png,Frog.png,Dog.png,Postcards.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/real_photos.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default=PHOTOS, help=f"comma-separated RNI15 files (default {PHOTOS})")
    parser.add_argument("--crop", type=int, default=160, help="side of the centre crop in pixels (default 160)")
    parser.add_argument("--methods", default="ddrm,reld", help="comma-separated methods (default ddrm,reld)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the contact sheet (default {OUT})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = dataset_dir("real/RNI15")
    photos = {name: centre_crop(read_image(folder / name).data, args.crop) for name in args.photos.split(",")}
    estimates = {name: estimate_noise_sigma(y) for name, y in photos.items()}
    rows = {name: [Cell(y, name, f"noisy, est. sigma {estimates[name] * 255:.1f}/255")] for name, y in photos.items()}
    for method in args.methods.split(","):
        _, models = load_models(method, model_set="bundled", backend="torch")
        with models:
            for name, y in photos.items():
                start = time.perf_counter()
                out = restore(y, method, "denoise", AUTO, models=models, seed=args.seed)
                seconds = time.perf_counter() - start
                print(f"{name} {method}: sigma {estimates[name] * 255:.1f}/255, {seconds:.0f} s", flush=True)
                rows[name].append(Cell(out, method, f"sigma auto = {estimates[name] * 255:.1f}/255, {seconds:.0f} s"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(list(rows.values())).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
