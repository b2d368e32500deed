"""The Markdown report (``RESULTS.md``), rendered from the results JSON alone, with the plots beside it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..methods import METHODS
from .plots import PLOTS
from .speed import STAGE_LABELS


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
    openvino = f"OpenVINO {m['openvino']}" if m.get("openvino") else "no OpenVINO"
    bf16 = {True: ", native bf16", False: ", no native bf16"}.get(m.get("native_bf16"), "")
    return (
        f"{device}{bf16}; {m['threads']} threads (torch, onnxruntime, OpenVINO); torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, {openvino}, TensorRT {trt}; commit {commit}; {results['created']}"
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
            _number(e.get("psnr_vs_torch"), 1),
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
              f"{memory_kind} MB load + run", "max |Δ| vs torch", "PSNR vs torch (dB)"]
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
        parts = ", ".join(
            f"{r['created']} (commit {(r['commit'] or 'unknown')[:10]}{', ' + r['device'] if r.get('device') else ''})"
            for r in results["merged_from"]
        )
        lines += [f"Merged from {len(results['merged_from'])} runs, later entries replacing earlier ones: {parts}.", ""]
    lines += quality_markdown(results) + speed_markdown(results) + scaling_markdown(results)
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + ([""] if plots else [])
    if results["skipped"]:
        lines += ["### Not measured", ""] + [f"- {s['what']}: {s['reason']}" for s in results["skipped"]] + [""]
    return "\n".join(lines)


def write_report(results: dict, folder: Path, plots: bool = True) -> list[Path]:
    """``RESULTS.md`` and the PNG plots in ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [p for name, plot in PLOTS.items() if plots and (p := plot(results, folder / name)) is not None]
    report = folder / "RESULTS.md"
    report.write_text(render_markdown(results, [p.name for p in written]) + "\n")
    return [report, *written]
