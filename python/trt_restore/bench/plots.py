"""The PNG plots of a results document (matplotlib, imported when a plot is drawn)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import UserError
from ..methods import METHODS
from .speed import NESTED_STAGES, STAGE_LABELS


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
