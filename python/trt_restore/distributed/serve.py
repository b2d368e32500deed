"""Restoration over HTTP with Ray Serve: ``trt-restore serve`` and :func:`start_server`.

``POST /restore?task=sr4&sigma=0.01[&method=…&seed=…&param=key=value]`` with the image
as the request body returns the restored PNG; ``sigma=auto`` estimates the noise level
from the image, and the ``X-Noise-Sigma`` header returns the σ used (left out, σ is 0,
except for denoise, which needs it). ``GET /healthz`` answers while replicas
work. Concurrent requests are batched (``@serve.batch``): a batch is ordered by method,
task, noise level and size, so that requests which share engines and a canvas run one
after the other on engines loaded once. Each image is restored as it would be alone,
with its own seed, so a response equals the single-process result bit for bit.

Status codes: 400 for a body that does not decode or a bad parameter (unknown method
or task, bad noise level, a task the method cannot solve, an image too large to
restore), 413 for a body over the size limit, 404/405 for other paths and verbs, 500
when the server fails (engines that do not load or run); every error is JSON
``{"error": "..."}`` with a one-line message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..api import sr_factor
from ..errors import UserError
from ..jobs.engines import EngineCache, EngineSource
from ..jobs.outputs import write_restored
from ..jobs.request import DEFAULT_MAX_PIXELS, RestoreRequest, settings_of
from ..jobs.retry import restore_with_retry
from ..jobs.values import BadValue, observed_noise_level, task_parameter
from .cluster import ShippedBundle, gpus_in_cluster

if TYPE_CHECKING:
    from ..io import Image

log = logging.getLogger(__name__)

RESTORE_PATH = "/restore"
HEALTH_PATH = "/healthz"
DEFAULT_PORT = 8000
DEFAULT_MAX_REQUEST_MB = 32.0
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_WAIT_S = 0.02
PNG = "image/png"
SIGMA_HEADER = "X-Noise-Sigma"
"""The response header with the σ the image was restored with: the request's, or its estimate for ``sigma=auto``."""


@dataclass(frozen=True)
class ServeOptions:
    """What every replica serves: the engines' source, the defaults of a request and the limits."""

    source: EngineSource
    bundle: ShippedBundle | None
    task: str | None
    """The task of a request that names none (None: requests must name one)."""
    settings: Mapping[str, Any]
    """Method settings, each applied to the methods that have it."""
    tile: int | None = None
    max_bytes: int = int(DEFAULT_MAX_REQUEST_MB * 1e6)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_wait_s: float = DEFAULT_BATCH_WAIT_S


@dataclass(frozen=True)
class Job:
    """One decoded, checked request."""

    request: RestoreRequest
    image: Image

    @property
    def group(self) -> tuple:
        """Requests with the same group run on the same engines and canvas."""
        return (self.request.method, self.request.task, self.request.sigma, *self.request.output_size(self.image))


class BadRequest(Exception):
    """A request that the client must change: the HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Restorer:
    """The Serve deployment: one replica holds the engines of each method it was asked for, loaded once."""

    def __init__(self, options: ServeOptions):
        import torch

        if options.source.threads is not None:
            torch.set_num_threads(options.source.threads)
        engine = None if options.bundle is None else options.bundle.path()
        self.source = dataclasses.replace(options.source, engine=engine)
        self.options = options
        self.caches: dict[tuple[str, int], EngineCache] = {}
        scale = 1 if options.task is None else sr_factor(options.task)
        self.engines(self.source.method, scale).get((64, 64))  # a server that cannot load its engines does not start
        self.restore_batch.set_max_batch_size(options.max_batch_size)
        self.restore_batch.set_batch_wait_timeout_s(options.batch_wait_s)

    def close(self) -> None:
        """Close every method's engines (idempotent)."""
        for cache in getattr(self, "caches", {}).values():
            cache.close()

    def __del__(self):
        """Ray Serve calls this when it shuts the replica down (and Python when a replica's start failed)."""
        self.close()

    def engines(self, method: str, scale: int) -> EngineCache:
        """The engine cache of ``method`` for a task of SR factor ``scale``, made on first use."""
        if (method, scale) not in self.caches:
            adapt = bool(self.settings_of(method).get("adapt"))
            source = dataclasses.replace(self.source, method=method, scale=scale, adapt=adapt)
            self.caches[method, scale] = source.cache(self.options.tile)
        return self.caches[method, scale]

    async def __call__(self, http: Request) -> Response:
        path = http.url.path.rstrip("/") or "/"
        if path == HEALTH_PATH:
            return JSONResponse({"status": "ok", "methods": sorted({method for method, _ in self.caches})})
        try:
            if path != RESTORE_PATH:
                raise BadRequest(404, f"no such path {path}; POST images to {RESTORE_PATH}")
            if http.method != "POST":
                raise BadRequest(405, f"{RESTORE_PATH} takes POST with the image as the body")
            body = await self.read_body(http)
            job = await asyncio.to_thread(self.parse, http.query_params, body)
        except BadRequest as error:
            return _error(error.status, str(error))
        return await self.restore_batch(job)

    async def read_body(self, http: Request) -> bytes:
        """The request body, refused (413) as soon as it exceeds the limit."""
        limit = self.options.max_bytes
        too_large = BadRequest(
            413, f"the image is larger than the server's limit of {limit:,} bytes; send a smaller one"
        )
        declared = http.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in http.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        if not body:
            raise BadRequest(
                400, "the request has no body; send the image file as the body (curl --data-binary @in.png)"
            )
        return bytes(body)

    def parse(self, query: Mapping[str, str], body: bytes) -> Job:
        """The job of a request: its parameters and decoded image, checked (400 when wrong)."""
        from ..io import read_image

        try:
            method = query.get("method", self.source.method)
            task = query.get("task", self.options.task)
            if task is None:
                raise UserError("the server has no default task; add task=… (e.g. task=sr4 or task=denoise)")
            sigma = observed_noise_level(query["sigma"]) if "sigma" in query else None
            seed = query.get("seed", "0")
            if not seed.removeprefix("-").isdigit():
                raise UserError(f"seed must be a whole number, got {seed!r}")
            params = dict(task_parameter(text) for text in query.getlist("param"))
            request = RestoreRequest(method, task, sigma, int(seed), self.settings_of(method), params)
            with tempfile.TemporaryDirectory(prefix="trt-restore-serve-") as folder:
                upload = Path(folder) / "image"
                upload.write_bytes(body)
                try:
                    image = read_image(upload)
                except UserError as error:
                    raise UserError(str(error).replace(str(upload), "the request body")) from None
            image = dataclasses.replace(image, path=Path("the request body"))
            request.check_size(image, self.options.max_pixels)
            request.check(image)
            request = request.for_image(image)
        except (UserError, BadValue) as error:
            raise BadRequest(400, str(error)) from None
        return Job(request, image)

    def settings_of(self, method: str) -> dict[str, Any]:
        """The served method settings that ``method`` has; an unknown method, or another than the bundle's, is refused."""
        settings = settings_of(method, self.options.settings)
        if self.source.engine is not None and method != self.source.method:
            raise UserError(
                f"this server runs a '{self.source.method}' bundle; drop method= or ask for {self.source.method}"
            )
        return settings

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def restore_batch(self, jobs: list[Job]) -> list[Response]:
        """Restore concurrent requests, grouped by engines and canvas, off the event loop."""
        return await asyncio.to_thread(self.run_jobs, jobs)

    def run_jobs(self, jobs: Sequence[Job]) -> list[Response]:
        responses: list[Response | None] = [None] * len(jobs)
        for index in sorted(range(len(jobs)), key=lambda i: jobs[i].group):
            responses[index] = self.run_job(jobs[index])
        return responses

    def run_job(self, job: Job) -> Response:
        """The restored PNG of one job; a failure of the server is a 500 with its message."""
        start = time.perf_counter()
        try:
            engines = self.engines(job.request.method, job.request.scale)
            restored = restore_with_retry(job.request, job.image, engines, None)
            with tempfile.TemporaryDirectory(prefix="trt-restore-serve-") as folder:
                written = Path(folder) / "restored.png"
                write_restored(written, restored, job.image, job.image.bit_depth)
                png = written.read_bytes()
        except UserError as error:
            return _error(500, str(error))
        except Exception as error:  # a fault of the server, reported to the client as such
            log.exception("restoring a request failed")
            return _error(500, f"the server failed to restore the image ({type(error).__name__}: {error})")
        seconds = time.perf_counter() - start
        headers = {"X-Restore-Seconds": f"{seconds:.3f}", SIGMA_HEADER: f"{job.request.sigma:.6g}"}
        return Response(png, media_type=PNG, headers=headers)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


def build_app(options: ServeOptions, *, replicas: int = 1, gpus: bool = False) -> serve.Application:
    """The Serve application: ``replicas`` replicas of :class:`Restorer`, each on one GPU or on its CPU threads."""
    deployment = serve.deployment(Restorer).options(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": options.source.threads or 1, "num_gpus": 1 if gpus else 0},
        max_ongoing_requests=4 * options.max_batch_size,
    )
    return deployment.bind(options)


def start_server(options: ServeOptions, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, replicas: int = 1) -> str:
    """Start the server on the Ray cluster this process joined; returns its base URL. It runs until
    ``ray.serve.shutdown()`` (or until Ray stops)."""
    gpus = options.source.device != "cpu" and gpus_in_cluster() > 0
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(build_app(options, replicas=replicas, gpus=gpus), name="trt-restore", route_prefix="/")
    except RuntimeError as error:  # Serve reports the replicas' own errors in the log above
        raise UserError(
            f"the server did not start ({error}); the replicas' errors are logged above: "
            "check --engine or --model-set, --backend and --device"
        ) from None
    return f"http://{host}:{port}"
