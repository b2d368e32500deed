"""A batch of files restored on this machine with engines loaded once; a failed input is reported, the others go on."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .outputs import check_bits, make_folder, write_restored
from .progress import StepMonitor
from .report import BatchReport, batch_report, write_summary
from .request import DEFAULT_MAX_PIXELS
from .resume import is_complete
from .retry import restore_with_retry
from .timing import log_stage_timings, stage

if TYPE_CHECKING:
    from ..io import Image
    from .engines import EngineCache, EngineSource
    from .request import RestoreRequest

log = logging.getLogger(__name__)


def run_batch(
    pairs: Sequence[tuple[Path, Path]],
    request: RestoreRequest,
    source: EngineSource,
    *,
    tile: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bits: int | None = None,
    resume: bool = False,
    summary: Path | None = None,
    intermediates: Path | None = None,
    every: int = 1,
    show: bool = False,
) -> int:
    """Restore ``pairs`` (input, output) with engines loaded once; returns the exit status.

    The request (method, task, parameters, engines) is checked on the first input that
    decodes, before anything is written: a problem there stops the run with a
    :class:`UserError`. ``resume`` skips the inputs whose output is complete; ``summary``
    (None: none) gets the JSON summary, saved also when the run is interrupted;
    ``intermediates`` gets every ``every``-th step's estimate of each image.

    Args:
        pairs: (input file, output file) per image, outputs in one folder; at least one pair.
        request: method, task, σ, seed, settings and task parameters, the same for every image.
        source: where the engines come from; its ``threads`` (if set) become torch's CPU threads.
        tile: side in pixels of the overlapping tiles the networks run on (None: the engines' default).
        max_pixels: refuse (report as failed) an input whose restored size exceeds this many pixels.
        bits: output bits per sample, 8 or 16 (None: the input's, where the output format allows).
        resume: skip the inputs whose output is already complete.
        summary: where to write the JSON summary (None: no summary).
        intermediates: folder for ``<stem>_stepNNN.png`` estimates (None: none written).
        every: with ``intermediates``, write every this many steps, ≥ 1.
        show: draw progress bars over the images and each image's steps.
    """
    import torch

    check_bits(bits, pairs[0][1])
    if source.threads is not None:
        torch.set_num_threads(source.threads)
    engines = source.cache(tile)

    def summarize(report: BatchReport) -> Path | None:
        if summary is not None:
            write_summary(summary, report.summary(request, engines.backend or source.backend))
            log.info("summary: %s", summary)
        return summary

    with closing(engines), batch_report(pairs, show, summarize) as report:
        _restore_pending(
            request,
            pairs,
            engines,
            report,
            resume=resume,
            max_pixels=max_pixels,
            bits=bits,
            intermediates=intermediates,
            every=every,
        )
    return report.status


def _restore_pending(
    request: RestoreRequest,
    pairs: Sequence[tuple[Path, Path]],
    engines: EngineCache,
    report: BatchReport,
    *,
    resume: bool,
    max_pixels: int,
    bits: int | None,
    intermediates: Path | None,
    every: int,
) -> None:
    """Restore each input of ``pairs`` (with ``resume``, not those whose output is complete),
    recording each outcome in ``report``."""
    from ..io import output_format

    pending = []
    for source, target in pairs:
        if resume and is_complete(target):
            report.skip(source)
        else:
            pending.append((source, target))
    images = _read_inputs(pending, report, request, max_pixels)
    first = next(images, None)
    if first is None:
        return
    request.check(first[2])
    engines.get(request.output_size(first[2]))
    make_folder(pairs[0][1].parent)
    if intermediates is not None:
        make_folder(intermediates)
    largest_depth = max(output_format(pairs[0][1]).bit_depths)
    show = not report.bar.disable
    for source, target, image in itertools.chain([first], images):
        size = request.output_size(image)
        monitor = StepMonitor(show, size, intermediates, source.stem, every)
        start = time.perf_counter()
        try:
            image_request = request.for_image(image)
            with stage(f"restore {source}"), closing(monitor):
                restored = restore_with_retry(image_request, image, engines, monitor)
            log_stage_timings(engines.timings)
            write_restored(target, restored, image, bits or min(image.bit_depth, largest_depth))
        except UserError as error:
            report.fail(source, error)
        else:
            report.done(source, time.perf_counter() - start, image_request.sigma)


def _read_inputs(
    pairs: Sequence[tuple[Path, Path]], report: BatchReport, request: RestoreRequest, max_pixels: int
) -> Iterator[tuple[Path, Path, Image]]:
    """(input, output, decoded image) for each input that decodes and is not too large;
    the others are reported as failed."""
    from ..io import read_image

    for source, target in pairs:
        try:
            image = read_image(source)
            request.check_size(image, max_pixels)
        except UserError as error:
            report.fail(source, error)
            continue
        yield source, target, image
