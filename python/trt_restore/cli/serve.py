"""``trt-restore serve``: restoration over HTTP with Ray Serve, until Ctrl-C (:mod:`trt_restore.distributed.serve`)."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from ..errors import UserError
from ..jobs.engines import EngineSource
from ..jobs.request import DEFAULT_TASK_KEY
from ..methods import BACKENDS, DEFAULT_METHOD, METHODS
from .arguments import (
    add_model_source_arguments,
    add_max_pixels_argument,
    add_method_settings,
    add_ray_argument,
    given_settings,
    model_set_name,
    positive_int,
)
from .parser import CommandParser, Subcommand

if TYPE_CHECKING:
    from ..distributed.serve import ServeOptions


def add_serve_arguments(parser: CommandParser) -> None:
    add_model_source_arguments(parser)
    parser.add_argument(
        "--method",
        choices=METHODS,
        help=f"method of requests that name none (default: the bundle's, else {DEFAULT_METHOD})",
    )
    parser.add_argument("--task", help="task of requests that name none (default: the bundle's; else requests must)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default), torch, onnxruntime or tensorrt (needs --engine)",
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU if the cluster has one)")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads of each replica (default 1)")
    parser.add_argument("--tile", type=positive_int, metavar="N", help="run the networks on overlapping N×N tiles")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=positive_int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument(
        "--replicas", type=positive_int, default=1, metavar="N", help="replicas, each holding the engines (default 1)"
    )
    parser.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=8,
        metavar="N",
        help="concurrent requests batched together (default 8)",
    )
    parser.add_argument(
        "--batch-wait-ms", type=float, default=20.0, metavar="MS", help="how long a batch waits to fill up (default 20)"
    )
    parser.add_argument(
        "--max-request-mb", type=float, default=32.0, metavar="MB", help="largest request body accepted (default 32)"
    )
    add_max_pixels_argument(parser)
    add_ray_argument(parser, "serve from")
    parser.defer(add_method_settings)


def run_serve(args: argparse.Namespace) -> int:
    """Serve restoration over HTTP with Ray Serve; keep the server up until Ctrl-C or SIGTERM."""
    import ray
    from ray import serve

    from ..distributed.cluster import connect
    from ..distributed.serve import HEALTH_PATH, RESTORE_PATH, start_server

    started = connect(args.ray)
    try:
        url = start_server(serve_options(args), host=args.host, port=args.port, replicas=args.replicas)
        print(f"serving on {url}{RESTORE_PATH} (health: {url}{HEALTH_PATH}); Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", flush=True)
        serve.shutdown()
    finally:
        if started:
            ray.shutdown()
    return 0


def serve_options(args: argparse.Namespace) -> ServeOptions:
    """The server's options from the flags of ``trt-restore serve``."""
    from ..distributed.cluster import ShippedBundle
    from ..distributed.serve import ServeOptions
    from ..runtime.bundle import Bundle

    method, task = args.method, args.task
    if args.engine is not None:
        bundle = Bundle.open(args.engine)
        if method not in (None, bundle.method):
            raise UserError(f"{args.engine} holds a '{bundle.method}' bundle, not '{method}'; drop --method")
        method, task = bundle.method, task or bundle.meta.get(DEFAULT_TASK_KEY)
    method = method or DEFAULT_METHOD
    source = EngineSource(method, None, model_set_name(args), args.backend, args.device, args.threads or 1, False, 1)
    return ServeOptions(
        source,
        None if args.engine is None else ShippedBundle(args.engine),
        task,
        given_settings(args),
        tile=args.tile,
        max_bytes=int(args.max_request_mb * 1e6),
        max_pixels=args.max_pixels,
        max_batch_size=args.max_batch_size,
        batch_wait_s=args.batch_wait_ms / 1000,
    )


COMMAND = Subcommand(
    "serve",
    "serve restoration over HTTP with Ray Serve (POST an image, get the restored PNG)",
    add_serve_arguments,
    run_serve,
)
