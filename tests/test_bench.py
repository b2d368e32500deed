"""The benchmark harness on a tiny configuration: one method, one 32×32 synthetic image, one repeat."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F

from trt_restore.bench.config import Variant, steps_override
from trt_restore.bench.images import synthetic_image
from trt_restore.bench.report import render_markdown
from trt_restore.bench.speed import GLUE, NESTED_STAGES, percentiles
from trt_restore.cli.bench import add_bench_arguments, config_from_args, run_bench
from trt_restore.errors import UserError
from trt_restore.io import write_image
from trt_restore.metrics import psnr
from trt_restore.operators import Degradation, make_operator

SIZE = 32
STEPS = 2


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_image(folder / "synthetic.png", synthetic_image(1, 3, SIZE)[0])
    return folder


@pytest.fixture(scope="module")
def run(image_folder, tmp_path_factory):
    """The harness through its command-line entry: ldm-sr on the tiny models, torch against onnxruntime, with
    torch's bf16 autocast and OpenVINO in bf16."""
    out = tmp_path_factory.mktemp("bench")
    args = parse(
        "--model-set", "tiny", "--methods", "ldm-sr", "--variants", "torch,onnxruntime,torch-bf16,openvino-bf16", "--size", str(SIZE),
        "--batches", "1", "--repeats", "1", "--steps", str(STEPS), "--threads", "1",
        "--tasks", "denoise,sr4-bicubic", "--datasets", str(image_folder),
        "--json", str(out / "bench.json"), "--report-dir", str(out),
    )
    assert run_bench(args) == 0
    return json.loads((out / "bench.json").read_text()), out


def test_results_record_the_machine_and_settings(run):
    results, _ = run
    machine = results["machine"]
    for key in ("cpu", "cores", "threads", "torch", "onnxruntime", "git_commit", "torch_threads", "onnxruntime_intra_op_threads"):
        assert key in machine
    assert machine["threads"] == machine["torch_threads"] == machine["onnxruntime_intra_op_threads"] == 1
    assert results["settings"]["variants"] == ["torch", "onnxruntime", "torch-bf16", "openvino-bf16"]
    assert machine["openvino"] and isinstance(machine["native_bf16"], bool)
    assert results["settings"]["steps"] == STEPS


def test_speed_entries_have_consistent_ratios_and_stages(run):
    results, _ = run
    entries = {e["variant"]: e for e in results["speed"]}
    assert set(entries) == {"torch", "onnxruntime", "torch-bf16", "openvino-bf16"}
    torch_p50 = entries["torch"]["latency_s"]["p50"]
    for entry in entries.values():
        p50 = entry["latency_s"]["p50"]
        assert entry["speedup_vs_torch"] == pytest.approx(torch_p50 / p50)
        assert entry["images_per_s"] == pytest.approx(1 / p50)
        stages = entry["stages"]
        # STEPS UNet calls and one decode per run, as the LDM-SR loop makes them
        assert stages["sr_unet"]["calls_per_run"] == STEPS
        assert stages["decoder"]["calls_per_run"] == 1
        # with one run, the stages (glue included) add up to the end-to-end time
        total = sum(s["per_run_s"] for name, s in stages.items() if name not in NESTED_STAGES)
        assert total == pytest.approx(entry["latency_s"]["runs"][0], rel=1e-9)
        assert stages[GLUE]["per_run_s"] >= 0
        assert entry["memory_mb"]["kind"] == "rss"
    assert entries["torch"]["speedup_vs_torch"] == 1.0
    # the same seed on both backends gives the same image (fp32 parity)
    assert entries["onnxruntime"]["max_abs_diff_vs_torch"] < 1e-3
    assert entries["onnxruntime"]["psnr_vs_torch"] >= 45 and entries["torch"]["psnr_vs_torch"] is None
    for name in ("torch-bf16", "openvino-bf16"):  # bf16 results are reported against torch fp32
        assert entries[name]["precision"] == "bf16" and math.isfinite(entries[name]["psnr_vs_torch"])
    (throughput,) = [t for t in results["throughput"] if t["variant"] == "onnxruntime"]
    assert throughput["best_images_per_s"] == pytest.approx(entries["onnxruntime"]["images_per_s"])


def test_baselines_score_the_degraded_input(run, image_folder):
    results, _ = run
    rows = {(r["task"], r["method"]): r for r in results["quality"]}
    x = synthetic_image(1, 3, SIZE)
    x = torch.round(x * 255) / 255  # what the PNG holds
    noisy = Degradation(make_operator("denoise", size=(SIZE, SIZE), channels=3), 25 / 255).observe(x, seed=0)
    assert rows[("denoise", "degraded input")]["psnr"] == pytest.approx(psnr(noisy.clamp(0, 1), x), abs=1e-9)
    low = Degradation(make_operator("sr4-bicubic", size=(SIZE, SIZE), channels=3), 0.0).observe(x, seed=0)
    upsampled = F.interpolate(low, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
    assert rows[("sr4-bicubic", "bicubic")]["psnr"] == pytest.approx(psnr(upsampled, x), abs=1e-9)
    method = rows[("sr4-bicubic", "ldm-sr")]
    assert method["images"] == 1 and math.isfinite(method["psnr"]) and -1 <= method["ssim"] <= 1
    assert ("denoise", "ldm-sr") not in rows  # LDM-SR only does super-resolution
    assert any(s["what"] == "quality ldm-sr denoise" for s in results["skipped"])


def test_markdown_renders_the_numbers_of_the_json(run):
    results, out = run
    edited = json.loads(json.dumps(results))
    baseline = next(r for r in edited["quality"] if r["method"] == "degraded input")
    baseline["psnr"], baseline["ssim"] = 12.3456, 0.4321
    fast = next(e for e in edited["speed"] if e["variant"] == "onnxruntime")
    fast["latency_s"]["p50"], fast["speedup_vs_torch"] = 0.9876, 4.321
    text = render_markdown(edited)
    assert "| denoise |" in text and "12.35 / 0.432" in text
    assert "| ldm-sr | onnxruntime | 0.988 |" in text and "4.32×" in text
    written = (out / "RESULTS.md").read_text()
    assert f"{results['quality'][0]['psnr']:.2f}" in written
    for plot in ("latency_stages.png", "quality_speed.png"):
        assert f"({plot})" in written
        assert (out / plot).read_bytes().startswith(b"\x89PNG")


def test_percentiles_interpolate_between_order_statistics():
    summary = percentiles([5.0, 1.0, 3.0, 2.0, 4.0])
    assert summary["p50"] == 3.0
    assert summary["p95"] == pytest.approx(4.8)
    assert percentiles([2.0])["p95"] == 2.0


def test_steps_override_names_the_methods_own_field():
    assert steps_override("reld", 3) == {"iterations": 3}
    assert steps_override("ddrm", 3) == {"steps": 3}
    assert steps_override("ldm-sr", None) is None


def test_variants_parse_and_tensorrt_needs_a_gpu():
    assert Variant.parse("onnxruntime-fp16") == Variant("onnxruntime", "fp16")
    assert Variant.parse("torch").name == "torch"
    with pytest.raises(UserError, match="unknown variant 'onnx'"):
        Variant.parse("onnx")
    if not torch.cuda.is_available():
        assert "NVIDIA GPU" in Variant.parse("tensorrt-fp16").unavailable_reason()
    assert Variant.parse("onnxruntime").unavailable_reason() is None
    assert Variant.parse("openvino-bf16") == Variant("openvino", "bf16")
    assert Variant.parse("openvino").unavailable_reason() is None
    assert "bf16 runs on torch and openvino only" in Variant.parse("onnxruntime-bf16").unavailable_reason()
    assert "use openvino or openvino-bf16" in Variant.parse("openvino-fp16").unavailable_reason()


def test_reports_from_earlier_results_files_and_their_merge(run, tmp_path, capsys):
    results, out = run
    assert run_bench(parse("--from-json", str(out / "bench.json"), "--report-dir", str(tmp_path), "--no-plots")) == 0
    assert (tmp_path / "RESULTS.md").read_text() == render_markdown(results) + "\n"

    remeasured = json.loads(json.dumps(results))
    remeasured["quality"] = [dict(remeasured["quality"][-1], psnr=99.5)]
    remeasured["speed"], remeasured["scaling"], remeasured["created"] = [], [], "later"
    remeasured["machine"] = dict(remeasured["machine"], gpu="Some GPU")  # a run on another machine
    (tmp_path / "later.json").write_text(json.dumps(remeasured))
    run_bench(parse("--from-json", str(out / "bench.json"), str(tmp_path / "later.json"), "--report-dir", str(tmp_path), "--no-plots"))
    merged = (tmp_path / "RESULTS.md").read_text()
    assert "Merged from 2 runs" in merged and "99.50" in merged
    assert f"{results['created']} (commit " in merged and "later (commit " in merged and ", Some GPU)" in merged  # each run's device
    assert not (tmp_path / "merged.json").exists()  # no results file unless --json names one
    run_bench(parse("--from-json", str(out / "bench.json"), str(tmp_path / "later.json"), "--json", str(tmp_path / "merged.json"),
                    "--report-dir", str(tmp_path / "again"), "--no-plots"))
    assert render_markdown(json.loads((tmp_path / "merged.json").read_text())) + "\n" == merged
    assert merged.count("| sr4-bicubic |") == render_markdown(results).count("| sr4-bicubic |")
    assert f"{results['speed'][0]['latency_s']['p50']:.3f}" in merged

    larger = json.loads(json.dumps(results))
    for entry in larger["speed"]:
        entry.update(size=entry["size"] * 4, images_per_s=entry["images_per_s"] / 100)
    larger["quality"], larger["created"] = [], "larger"
    (tmp_path / "larger.json").write_text(json.dumps(larger))
    run_bench(parse("--from-json", str(out / "bench.json"), str(tmp_path / "larger.json"), "--report-dir", str(tmp_path), "--no-plots"))
    two_sizes = (tmp_path / "RESULTS.md").read_text()
    assert two_sizes.count("### Speed: end to end") == 2  # one table per size, each with its own images/s
    first = results["speed"][0]
    assert f"{first['size']}×{first['size']} output" in two_sizes and f"{first['size'] * 4}×{first['size'] * 4} output" in two_sizes
    b1 = next(t for t in results["throughput"] if (t["method"], t["variant"]) == (first["method"], first["variant"]))
    assert f"| {b1['batch1_images_per_s']:.3f} |" in two_sizes and f"| {b1['batch1_images_per_s'] / 100:.3f} |" in two_sizes

    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(UserError, match="is not a trt-restore benchmark results file"):
        run_bench(parse("--from-json", str(tmp_path / "other.json"), "--report-dir", str(tmp_path)))


def test_bad_flags_are_refused_clearly(tmp_path):
    with pytest.raises(SystemExit):
        parse("--variants", "torch,onnx")
    with pytest.raises(SystemExit):
        parse("--methods", "nope")
    with pytest.raises(SystemExit):  # a usage error, not a traceback
        parse("--quality-variant", "nope")
    with pytest.raises(UserError, match="lists a variant twice"):
        config_from_args(parse("--variants", "torch,torch"))
    from trt_restore.bench.images import dataset_paths

    with pytest.raises(UserError, match="unknown data set 'Set99'"):
        dataset_paths("Set99")
    with pytest.raises(UserError, match="holds no images"):
        dataset_paths(str(tmp_path))


def test_lpips_without_its_package_says_so(tmp_path):
    try:
        import lpips  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the lpips package is installed here")
    from trt_restore.bench.quality import LPIPS

    with pytest.raises(UserError, match="needs the 'lpips' package"):
        LPIPS(tmp_path / "weights.pth")


def test_memory_guard_refuses_runs_that_cannot_fit():
    from trt_restore.bench.machine import MemoryGuard, available_mb

    guard = MemoryGuard()
    cpu = torch.device("cpu")
    assert guard.check(("ddrm", "onnxruntime"), cpu, 10**12) is None  # nothing measured yet
    guard.record(("ddrm", "onnxruntime"), 256 * 256, 1024.0)
    assert guard.check(("ddrm", "onnxruntime"), cpu, 256 * 256) is None
    free = available_mb(cpu)
    if free is None:
        pytest.skip("this system does not report its available memory")
    pixels = int(256 * 256 * 2 * free / 1024)  # twice what is available, scaled linearly
    assert "GiB available" in guard.check(("ddrm", "onnxruntime"), cpu, pixels)
    assert guard.check(("reld", "onnxruntime"), cpu, pixels) is None  # another variant's record


def test_address_space_limit_turns_exhaustion_into_an_error():
    from trt_restore.bench.machine import address_space_limit
    from trt_restore.bench.speed import Skips

    skips = Skips(lambda message: None)
    with address_space_limit(256):
        result = skips.attempt("huge", lambda: torch.empty(2**36, dtype=torch.uint8).fill_(1))
    assert result is None and skips.items[0]["what"] == "huge"
    assert torch.empty(2**26, dtype=torch.uint8).fill_(1).sum() == 2**26  # the limit is lifted again


def test_an_interrupted_quality_run_resumes_from_its_score_journal(tmp_path):
    """The journal keeps each image's scores as they come; ``--resume`` restores only the images it lacks,
    refuses a journal of other settings, and a finished run deletes it."""
    from trt_restore.bench.harness import run_benchmarks
    from trt_restore.bench.journal import ScoreJournal, journal_path

    images = tmp_path / "images"
    images.mkdir()
    for seed in range(2):
        write_image(images / f"image{seed}.png", synthetic_image(1, 3, SIZE, seed=seed)[0])
    flags = ("--model-set", "tiny", "--methods", "ldm-sr", "--sections", "quality", "--steps", str(STEPS), "--threads", "1",
             "--tasks", "sr4-bicubic", "--datasets", str(images), "--quality-variant", "torch", "--report-dir", str(tmp_path), "--no-plots")
    whole = tmp_path / "whole.json"
    run_bench(parse(*flags, "--json", str(whole)))
    assert not journal_path(whole).exists()
    row = next(r for r in json.loads(whole.read_text())["quality"] if r["method"] == "ldm-sr")

    # a run that stopped after the first image: its journal holds that image only
    resumed = tmp_path / "resumed.json"
    config = config_from_args(parse(*flags, "--limit", "1"))
    run_benchmarks(config, journal=ScoreJournal(journal_path(resumed), config.to_json(), resume=False))
    lines = journal_path(resumed).read_text().splitlines()
    assert len(lines) == 2  # the header and one image
    first = json.loads(lines[1])
    assert first["key"] == ["ldm-sr", "torch", "sr4-bicubic", images.name, "image0.png"]
    measured = first["scores"]["psnr"]
    # mark the recorded score, and leave a half-written line as a killed run would
    first["scores"]["psnr"] = 99.0
    journal_path(resumed).write_text(lines[0] + "\n" + json.dumps(first) + "\n" + '{"key": ["ldm-sr"')

    with pytest.raises(UserError, match="--resume"):
        run_bench(parse(*flags, "--json", str(resumed)))
    with pytest.raises(UserError, match=r"other settings \(seed\)"):
        run_bench(parse(*flags, "--json", str(resumed), "--resume", "--seed", "1"))
    # a journal resumed after a half-written line takes new lines whole, and can be resumed again
    again = ScoreJournal(journal_path(resumed), config.to_json(), resume=True)
    again.add(("ldm-sr", "torch", "denoise", images.name, "image0.png"), {"psnr": 1.0}, 2.0)
    assert len(ScoreJournal(journal_path(resumed), config.to_json(), resume=True).entries) == 2
    run_bench(parse(*flags, "--json", str(resumed), "--resume"))
    assert not journal_path(resumed).exists()
    resumed_row = next(r for r in json.loads(resumed.read_text())["quality"] if r["method"] == "ldm-sr")
    second = 2 * row["psnr"] - measured
    # the first image's score came from the journal, the second was restored again, as in the whole run
    assert resumed_row["psnr"] == pytest.approx((99.0 + second) / 2)
    assert resumed_row["images"] == 2
    # each image's scores are kept beside the means, so that two runs compare image by image
    assert resumed_row["per_image"]["image0.png"]["psnr"] == 99.0
    assert resumed_row["per_image"]["image1.png"] == row["per_image"]["image1.png"]
    assert row["per_image"]["image0.png"]["psnr"] == measured


def test_a_damaged_score_journal_is_refused_with_one_line(tmp_path):
    """A journal whose header lacks its settings, or a whole line that is not a score record, is a clear error."""
    from trt_restore.bench.journal import JOURNAL_FORMAT, SCORE_SETTINGS, ScoreJournal

    settings = dict.fromkeys(SCORE_SETTINGS)
    header = json.dumps({"format": JOURNAL_FORMAT, "settings": settings})
    record = json.dumps({"key": ["ldm-sr", "torch", "sr4-bicubic", "Set5", "bird.png"], "scores": {"psnr": 30.0}, "seconds": 1.0})
    path = tmp_path / "bench.json.scores.jsonl"
    cases = [
        (json.dumps({"format": JOURNAL_FORMAT}) + "\n", "is not a trt-restore score journal"),
        (json.dumps({"format": JOURNAL_FORMAT, "settings": []}) + "\n", "is not a trt-restore score journal"),
        (header + "\n" + json.dumps({"key": ["ldm-sr"]}) + "\n" + record + "\n", "line 2 is damaged"),
        (header + "\n" + record + "\n" + "[1, 2]\n", "line 3 is damaged"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(UserError, match=message):
            ScoreJournal(path, settings, resume=True)
    path.write_text(header + "\n" + record + "\n")
    assert len(ScoreJournal(path, settings, resume=True).entries) == 1
