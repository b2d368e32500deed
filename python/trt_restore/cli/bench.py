"""``trt-restore bench``: quality and speed per method, task and backend (:mod:`trt_restore.bench`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..bench.config import DEFAULT_VARIANTS, SECTIONS, TASK_SETTINGS, BenchConfig, Variant
from ..bench.images import DATASETS
from ..errors import UserError
from ..methods import METHODS, NOISE_SOURCES
from .arguments import comma_list, one_of, positive_int, usage_errors
from .parser import Subcommand

DEFAULT_JSON = Path("benchmarks/results/bench.json")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``trt-restore bench`` flags."""
    methods, positives = comma_list(one_of(METHODS)), comma_list(positive_int)
    what = parser.add_argument_group("what to measure")
    what.add_argument("--methods", type=methods, default=list(METHODS), help="comma-separated methods (default: all)")
    what.add_argument("--model-set", default="bundled", metavar="NAME|FOLDER", help="bundled (default), tiny, or a model-set folder")
    what.add_argument("--sections", type=comma_list(one_of(SECTIONS)), default=list(SECTIONS), help="quality,speed (default both)")
    what.add_argument("--steps", type=positive_int, help="override every method's steps/iterations (default: each method's own)")
    what.add_argument("--seed", type=int, default=0, help="seed of the observation noise and the samplers (default 0)")
    what.add_argument("--noise", choices=NOISE_SOURCES, default="host",
                      help="where the samplers draw their noise: host (default) or device (as restore --noise)")
    what.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                      help="torch threads and onnxruntime intra-op threads, the same for fairness (default: all cores)")
    what.add_argument("--tile", type=positive_int, help="run the networks on tiles of this many pixels (default: each backend's own, as restore)")
    what.add_argument("--memory-limit", type=float, metavar="GB",
                      help="CPU only: memory the runs may add; a run that needs more is listed as not measured "
                           "(default: 90%% of the memory available at the start; 0: no limit)")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--variants", type=comma_list(Variant.parse), default=[Variant.parse(v) for v in DEFAULT_VARIANTS],
                       help=f"backends to compare, torch eager first (default: {','.join(DEFAULT_VARIANTS)})")
    speed.add_argument("--size", type=positive_int, default=256, help="output image side in pixels (default 256)")
    speed.add_argument("--batches", type=positives, default=[1, 4], help="batch sizes (default 1,4)")
    speed.add_argument("--repeats", type=positive_int, default=3, help="timed runs per variant (default 3)")
    speed.add_argument("--warmup", type=positive_int, default=1, help="untimed runs first, at least 1 (default 1)")
    speed.add_argument("--speed-task", type=one_of(tuple(TASK_SETTINGS)), default="sr4-bicubic",
                       help="task of the speed runs (default sr4-bicubic, which every method supports)")
    speed.add_argument("--scaling", action="store_true", help="also sweep image sizes (batch 1) and batch sizes")
    speed.add_argument("--scaling-sizes", type=positives, default=[64, 128, 256, 512, 1024], help="default 64,128,256,512,1024")
    speed.add_argument("--scaling-batches", type=positives, default=[1, 2, 4, 8, 16], help="default 1,2,4,8,16")
    quality = parser.add_argument_group("quality")
    quality.add_argument("--tasks", type=comma_list(one_of(tuple(TASK_SETTINGS))), default=list(TASK_SETTINGS),
                         help=f"default {','.join(TASK_SETTINGS)}")
    quality.add_argument("--datasets", type=comma_list(str), default=["Set5"],
                         help=f"{', '.join(DATASETS)} or folders of images (default Set5)")
    quality.add_argument("--limit", type=positive_int, help="at most this many images per data set")
    quality.add_argument("--quality-variant", type=usage_errors(Variant.parse), default=Variant("onnxruntime"),
                         help="variant that restores the quality images (default onnxruntime)")
    quality.add_argument("--crop", type=int, default=0, help="border pixels left out of the metrics (default 0)")
    quality.add_argument("--lpips-weights", type=Path, metavar="PATH", help="state dict of lpips.LPIPS; enables LPIPS")
    quality.add_argument("--lpips-net", choices=("alex", "vgg", "squeeze"), default="alex", help="LPIPS backbone (default alex)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", type=Path, help=f"results file (default {DEFAULT_JSON}; with --from-json, the merged results, "
                                                 "written only when this is given)")
    output.add_argument("--resume", action="store_true",
                        help="continue an interrupted run: reuse the per-image quality scores that it wrote beside "
                             "the results file (JSON.scores.jsonl) and restore only the images it lacks")
    output.add_argument("--report-dir", type=Path, default=Path("benchmarks"), help="where RESULTS.md and the plots go (default benchmarks)")
    output.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    output.add_argument("--from-json", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: write RESULTS.md and the plots of earlier runs' results files; "
                             "a later file's entries replace an earlier one's for the same method, task and data set "
                             "(quality) or method, variant, size and batch (speed)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The run's configuration from the flags, after the checks that argparse cannot make alone."""
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
    from ..bench.harness import run_benchmarks
    from ..bench.journal import ScoreJournal, journal_path
    from ..bench.report import write_report
    from ..bench.results import merge_results, read_results, write_results

    journal = None
    if args.from_json is not None:
        results = merge_results([read_results(path) for path in args.from_json])
        json_path = args.json
    else:
        config = config_from_args(args)
        json_path = args.json or DEFAULT_JSON
        if "quality" in config.sections:
            journal = ScoreJournal(journal_path(json_path), config.to_json(), args.resume, _log)
        results = run_benchmarks(config, _log, journal)
    if json_path is not None:
        write_results(results, json_path)
    if journal is not None:
        journal.discard()
    written = [*([json_path] if json_path else []), *write_report(results, args.report_dir, plots=not args.no_plots)]
    for path in written:
        print(path)
    return 0


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


COMMAND = Subcommand("bench", "measure quality and speed per method, task and backend", add_bench_arguments, run_bench)
