"""Restore a batch on Ray Data: ``trt-restore restore --ray [ADDRESS]`` and :func:`restore_on_ray`.

The driver lists the inputs (paths or URIs), reads each image's size from its header
in Ray tasks, and orders the images by size, so that each batch holds images of one
size or of neighbouring sizes (one engine canvas, loaded once). A pool of actors, one
per GPU or one per ``threads`` CPUs, each load the engines once and restore batches;
each image is restored as it would be alone, with the request's seed, so the outputs
equal those of a run on one machine bit for bit. An image that cannot be read or
restored is reported as failed and the others go on. An actor that dies is started
again and its batch retried, at most :data:`MAX_RESTARTS` times per actor; outputs are
written atomically under fixed names, so a retried image is written once more, whole,
with the same content. An image whose worker process exited :data:`MAX_WORKER_EXITS`
times while restoring it (a crash in a native library, the kernel's OOM killer) is
recorded as failed with that reason instead of being tried again. The driver keeps
the progress bar and the summary JSON, which ``--resume`` and Ctrl-C treat as on one machine.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from ..errors import UserError
from ..jobs.engines import EngineSource
from ..jobs.outputs import check_bits, make_folder, write_restored
from ..jobs.report import SUMMARY_NAME, BatchReport, batch_report
from ..jobs.request import DEFAULT_MAX_PIXELS, RestoreRequest
from ..jobs.retry import restore_with_retry
from ..noise_level import NoiseLevel
from .cluster import (
    ShippedBundle,
    check_address,
    connect,
    cpus_in_cluster,
    gpus_in_cluster,
)
from .storage import (
    folder_of,
    image_size,
    is_complete,
    is_uri,
    join,
    list_sources,
    output_file,
    plan_targets,
    read_input,
    write_summary_to,
)

DEFAULT_BATCH_SIZE = 8
log = logging.getLogger(__name__)

PROBE_BLOCKS_PER_CPU = 4
"""Blocks per cluster CPU of the task that reads the image sizes."""
MAX_WORKER_EXITS = 2
"""Times an image may take its worker process down before it is recorded as failed."""
MAX_RESTARTS = 8
"""Restarts of each actor (and retries of its batches) before the job gives up."""


@ray.remote(num_cpus=0)
class ImageAttempts:
    """Which inputs a worker started and did not finish: each such start is a worker that exited on it."""

    def __init__(self):
        self.unfinished: dict[str, int] = {}

    def start(self, source: str) -> int:
        """Count a start of ``source``; returns how many earlier starts never finished."""
        exits = self.unfinished.get(source, 0)
        self.unfinished[source] = exits + 1
        return exits

    def finish(self, source: str) -> None:
        self.unfinished.pop(source, None)


@dataclass(frozen=True)
class BatchJob:
    """What every actor needs: the request, where its engines come from and how to write outputs."""

    request: RestoreRequest
    source: EngineSource
    bundle: ShippedBundle | None
    tile: int | None
    max_pixels: int
    bits: int | None
    resume: bool
    threads: int
    attempts: Any  # an ImageAttempts actor


class RestoreWorker:
    """A Ray actor that loads the engines once and restores batches of (input, output) rows."""

    def __init__(self, job: BatchJob):
        import torch

        torch.set_num_threads(job.threads)
        source = job.source if job.bundle is None else dataclasses.replace(job.source, engine=job.bundle.path())
        self.job = job
        self.engines = source.cache(job.tile)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, list]:
        """One row per input: its status (done, skipped, failed), seconds, failure reason and the backend."""
        columns: dict[str, list] = {"input": [], "status": [], "seconds": [], "sigma": [], "reason": [], "backend": []}
        for source, target in zip(batch["input"], batch["output"], strict=True):
            status, seconds, sigma, reason = self.restore(str(source), str(target))
            for name, value in zip(columns, (str(source), status, seconds, sigma, reason, self.engines.backend or "")):
                columns[name].append(value)
        return columns

    def restore(self, source: str, target: str) -> tuple[str, float, float, str]:
        """Restore one input into ``target``: (status, seconds, the σ it was restored with, the reason of a failure)."""
        if self.job.resume and is_complete(target):
            return "skipped", 0.0, math.nan, ""
        exits = ray.get(self.job.attempts.start.remote(source))
        if exits >= MAX_WORKER_EXITS:  # stays unfinished: a retried batch fails it again
            return "failed", 0.0, math.nan, f"the worker process exited {exits} times while restoring it"
        result = self._restore(source, target)
        ray.get(self.job.attempts.finish.remote(source))
        return result

    def _restore(self, source: str, target: str) -> tuple[str, float, float, str]:
        from ..io import output_format

        request, image = self.job.request, None
        try:
            image = read_input(source)
            request.check_size(image, self.job.max_pixels)
            request.check(image)
            self.engines.get(request.output_size(image))  # loaded once, not timed as part of this image
            start = time.perf_counter()
            request = request.for_image(image)
            restored = restore_with_retry(request, image, self.engines, None)
            bits = self.job.bits or min(image.bit_depth, max(output_format(target).bit_depths))
            with output_file(target) as written:
                write_restored(written, restored, image, bits)
        except UserError as error:
            reason = str(error) if image is None else str(error).replace(str(image.path), source)
            return "failed", 0.0, math.nan, reason
        return "done", time.perf_counter() - start, float(request.sigma), ""


def _with_size(row: dict[str, Any]) -> dict[str, Any]:
    row["height"], row["width"] = image_size(row["input"])
    return row


def restored_rows(
    job: BatchJob, pairs: Sequence[tuple[str, str]], workers: int, batch_size: int, gpus: bool
) -> Iterator[dict[str, Any]]:
    """Run the job on the cluster that this process joined; yield each input's row as it finishes."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows its own bar over the images
    logging.getLogger("ray.data").setLevel(logging.INFO if log.isEnabledFor(logging.INFO) else logging.ERROR)
    rows = [{"input": source, "output": target} for source, target in pairs]
    probe_blocks = min(len(rows), PROBE_BLOCKS_PER_CPU * cpus_in_cluster())
    sized = ray.data.from_items(rows, override_num_blocks=probe_blocks).map(_with_size).take_all()
    sized.sort(key=lambda row: (row["height"], row["width"]))
    batches = ray.data.from_items(sized, override_num_blocks=math.ceil(len(sized) / batch_size))
    restored = batches.map_batches(
        RestoreWorker,
        fn_constructor_args=(job,),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=job.threads,
        num_gpus=1 if gpus else 0,
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_RESTARTS,
    )
    yield from restored.iter_rows()


def run_batch(
    pairs: Sequence[tuple[str, str]],
    request: RestoreRequest,
    source: EngineSource,
    *,
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    tile: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bits: int | None = None,
    resume: bool = False,
    summary: str | None = None,
    show: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Restore ``pairs`` (input, output) on the Ray cluster at ``address``; the summary JSON goes
    to ``summary`` (default: beside the outputs). Returns the exit status and the summary."""
    check_address(address)
    check_bits(bits, pairs[0][1])
    _check_request(request, [input for input, _ in pairs], max_pixels)
    location = summary or join(folder_of(pairs[0][1]), SUMMARY_NAME)
    if not is_uri(pairs[0][1]):
        make_folder(Path(pairs[0][1]).parent)
    started = connect(address)
    try:
        gpus = source.device != "cpu" and gpus_in_cluster() > 0
        workers = workers or (gpus_in_cluster() if gpus else max(1, cpus_in_cluster() // threads))
        bundle = None if source.engine is None else ShippedBundle(source.engine)
        source = dataclasses.replace(source, threads=threads)  # onnxruntime sessions too
        job = BatchJob(request, source, bundle, tile, max_pixels, bits, resume, threads, ImageAttempts.remote())
        backend, written = source.backend, {}

        def summarize(report: BatchReport) -> str:
            written.update(report.summary(request, backend))
            write_summary_to(location, written)
            return location

        with batch_report(pairs, show, summarize) as report:
            for row in restored_rows(job, pairs, workers, batch_size, gpus):
                _settle(report, row)
                backend = row["backend"] or backend
    finally:
        if started:
            ray.shutdown()
    return report.status, written


def _settle(report: BatchReport, row: Mapping[str, Any]) -> None:
    if row["status"] == "done":
        report.done(row["input"], float(row["seconds"]), float(row["sigma"]))
    elif row["status"] == "skipped":
        report.skip(row["input"])
    else:
        report.fail(row["input"], UserError(row["reason"]))


def _check_request(request: RestoreRequest, sources: Sequence[str], max_pixels: int) -> None:
    """Refuse, before the cluster starts, a request that the first input that decodes shows to be wrong."""
    for source in sources:
        try:
            image = read_input(source)
            request.check_size(image, max_pixels)
        except UserError:
            continue
        request.check(image)
        return


def restore_on_ray(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    task: str,
    method: str | None = None,
    sigma: NoiseLevel | None = None,
    seed: int = 0,
    engine: str | Path | None = None,
    model_set: str | Path | None = None,
    backend: str = "auto",
    device: str | None = None,
    config: Mapping[str, Any] | None = None,
    task_params: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Restore images (files, folders, globs or URIs) into the folder or URI ``output`` on Ray; returns the summary.

    ``options`` are those of :func:`run_batch`: ``address`` (None: start Ray here; ``"auto"``;
    ``"HOST:PORT"``), ``workers``, ``threads``, ``batch_size``, ``tile``, ``max_pixels``,
    ``bits``, ``resume``, ``summary``.
    """
    from ..api import DEFAULT_MODEL_SET, sr_factor
    from ..methods import DEFAULT_METHOD

    engine = None if engine is None else Path(engine)
    if engine is not None:
        from ..runtime.bundle import Bundle

        method = method or Bundle.open(engine).method
    method = method or DEFAULT_METHOD
    request = RestoreRequest(method, task, sigma, seed, dict(config or {}), dict(task_params or {}))
    threads = options.get("threads", 1)
    adapt = bool(request.settings.get("adapt"))
    source = EngineSource(
        method, engine, str(model_set or DEFAULT_MODEL_SET), backend, device, threads, adapt, sr_factor(task)
    )
    pairs = plan_targets(list_sources([str(spec) for spec in inputs]), str(output))
    return run_batch(pairs, request, source, **options)[1]
