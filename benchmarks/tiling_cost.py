"""What whole-image tiling costs: time per network call, untiled and tiled, per CPU backend.

For each bundled network (pixel UNet, SR UNet, autoencoder encoder and decoder) on a
``--size`` image, one thread, this times in the same run:

- ``untiled``: the exported graph with the whole-image interface, on the whole image (as
  ``restore`` runs images up to a tile);
- ``per-tile``: the plain graph on ``--tile`` tiles, each normalised with its own statistics
  and attending over itself (tiling without the interface: the seams it had);
- ``whole-image``: the same tiles with whole-image GroupNorm statistics and attention context
  (``runtime/tiling.py``: the UNets gather once, the autoencoder until its statistics settle),
  each call gathering anew, as each step of a loop does;
- ``plain``: the plain graph untiled, so that ``untiled / plain`` is what the interface costs
  a call that needs no tiles.

Each figure is the best of ``--repeats`` calls; the report gives the ratios.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tiling_cost.py --json benchmarks/cpu/tiling/cost.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from groupnorm_forms import best_ms  # this folder's: the best of a few timed calls, in ms
from trt_restore.export.model_sets import load_model_set
from trt_restore.export.onnx_export import export_component
from trt_restore.runtime.onnxruntime_backend import OnnxRuntimeEngine
from trt_restore.runtime.tiling import TiledEngine, statistics_passes, tile_for, whole
from trt_restore.runtime.torch_backend import TorchEngine
from trt_restore.specs import without_group_stats

NETWORKS = (("pixel_unet", "ddrm"), ("sr_unet", "ldm-sr"), ("encoder", "ldm-sr"), ("decoder", "ldm-sr"))
"""(component, method) of the bundled networks measured."""


def engine(wrapper, backend: str, folder: Path):
    """``wrapper`` as an engine of ``backend`` (onnxruntime: exported to ``folder`` first)."""
    if backend == "torch":
        return TorchEngine(wrapper, wrapper.spec)
    path = folder / f"{wrapper.spec.name}-{len(list(folder.iterdir()))}.onnx"
    spec = export_component(wrapper, path, example_size=(64, 64))
    return OnnxRuntimeEngine(path, spec, threads=1)


def example(spec, size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    feeds = {}
    for tensor in without_group_stats(spec).inputs:
        shape = tensor.resolve({"B": 1, "H": size, "W": size})
        feeds[tensor.name] = torch.full(shape, 400.0) if tensor.name == "timestep" else torch.randn(shape, generator=g)
    return feeds


def network_times(interface, plain, tile: int, size: int, repeats: int) -> tuple[dict[str, float], int]:
    """The four figures of one network (ms), and the tile runs of its whole-image call."""
    plan = tile_for(interface.spec, tile)
    tiled = TiledEngine(interface, *plan, statistics_passes=statistics_passes(interface.spec))
    feeds = example(interface.spec, size)

    def whole_image():
        tiled.forget()
        tiled(**feeds)

    times = {
        "plain": best_ms(lambda: plain(**feeds), repeats),
        "untiled": best_ms(lambda: whole(interface)(**feeds), repeats),
        "per-tile": best_ms(lambda: TiledEngine(plain, *plan)(**feeds), repeats),
        "whole-image": best_ms(whole_image, repeats),
    }
    return times, 1 + tiled.passes_run


def measure(backend: str, size: int, tile: int, repeats: int) -> dict:
    model_set = load_model_set("bundled")
    results = {}
    with tempfile.TemporaryDirectory(prefix="tiling-cost-") as folder:
        for component, method in NETWORKS:
            interface = engine(model_set.wrapper(component, method, group_stats=True), backend, Path(folder))
            plain = engine(model_set.wrapper(component, method), backend, Path(folder))
            times, tile_runs = network_times(interface, plain, tile, size, repeats)
            results[component] = {**times, "tile_runs_per_call": tile_runs}
            print(f"{backend:<12}{component:<11}" + "".join(f"{k} {v:8.0f} ms  " for k, v in times.items()), flush=True)
    return results


def report(results: dict) -> str:
    lines = ["| backend | network | whole-image / per-tile | whole-image / untiled | untiled / plain |", "| --- | --- | --- | --- | --- |"]
    for backend, networks in results.items():
        for name, t in networks.items():
            lines.append(
                f"| {backend} | {name} | {t['whole-image'] / t['per-tile']:.2f}× | "
                f"{t['whole-image'] / t['untiled']:.2f}× | {t['untiled'] / t['plain']:.2f}× |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/tiling_cost.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--tile", type=int, default=128, help="tile side in pixels (default 128)")
    parser.add_argument("--backends", default="torch,onnxruntime", help="comma-separated CPU backends")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per figure (default 3)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {backend: measure(backend, args.size, args.tile, args.repeats) for backend in args.backends.split(",")}
    print(report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"size": args.size, "tile": args.tile, "threads": 1, "repeats": args.repeats}
        args.json.write_text(json.dumps({"settings": meta, "ms": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
