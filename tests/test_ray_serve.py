"""``trt-restore serve`` on a local 2-CPU Ray cluster: 50 concurrent requests, bit-identical results, 4xx for bad input."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")  # the imports below need it

from ray import serve  # noqa: E402
from trt_restore.api import restore  # noqa: E402
from trt_restore.cli import build_parser  # noqa: E402
from trt_restore.cli.serve import serve_options  # noqa: E402
from trt_restore.distributed.serve import SIGMA_HEADER, start_server  # noqa: E402
from trt_restore.io import read_image, write_image  # noqa: E402
from trt_restore.noise_level import estimate_noise_sigma  # noqa: E402

REQUESTS = 50
RETRIES = 3
MAX_REQUEST_MB = 0.05
CASES = [
    (side, sigma, seed) for side in (32, 48) for sigma, seed in ((0.0, 0), (0.05, 1), (0.1, 2), (0.05, 7), (0.02, 4))
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> str:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    argv = ["serve", "--model-set", "tiny", "--method", "ddrm", "--task", "denoise", "--steps", "2"]
    argv += ["--backend", "torch", "--threads", "1", "--max-request-mb", str(MAX_REQUEST_MB), "--max-batch-size", "4"]
    port = free_port()
    url = start_server(serve_options(build_parser().parse_args(argv)), port=port)
    yield url
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("requests")
    generator = torch.Generator().manual_seed(0)
    paths = {side: folder / f"{side}.png" for side in (32, 48)}
    for side, path in paths.items():
        write_image(path, torch.rand(3, side, side, generator=generator))
    return paths


def post(url: str, body: bytes, timeout: float = 120) -> tuple[int, bytes]:
    """POST with bounded retries on refused connections and 5xx answers; returns the last (status, body)."""
    for attempt in range(RETRIES):
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "image/png"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            if error.code < 500 or attempt == RETRIES - 1:
                return error.code, error.read()
        except (ConnectionError, urllib.error.URLError):
            if attempt == RETRIES - 1:
                raise
        time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def single_process_png(image: Path, sigma: float | str, seed: int, folder: Path) -> torch.Tensor:
    """What one process writes for the same request, decoded."""
    restored = restore(
        read_image(image).data,
        method="ddrm",
        task="denoise",
        sigma=sigma,
        seed=seed,
        model_set="tiny",
        backend="torch",
        config={"steps": 2},
    )
    path = folder / f"{image.stem}-{sigma}-{seed}.png"
    write_image(path, restored)
    return read_image(path).data


def test_50_concurrent_requests_equal_the_single_process_run(server, images, tmp_path, one_torch_thread):
    def ask(index: int) -> tuple[int, bytes]:
        side, sigma, seed = CASES[index % len(CASES)]
        return post(f"{server}/restore?sigma={sigma}&seed={seed}", images[side].read_bytes())

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, range(REQUESTS)))
    assert [status for status, _ in answers] == [200] * REQUESTS
    expected = {case: single_process_png(images[case[0]], *case[1:], tmp_path) for case in CASES}
    for index, (_, body) in enumerate(answers):
        received = tmp_path / f"answer{index}.png"
        received.write_bytes(body)
        assert torch.equal(read_image(received).data, expected[CASES[index % len(CASES)]]), index
    # different seeds give different images: the comparison could fail
    assert not torch.equal(expected[(32, 0.05, 1)], expected[(32, 0.05, 7)])


@pytest.mark.parametrize(
    ("query", "body", "status", "message"),
    [
        ("?sigma=0.1", b"not an image at all", 400, "not a PNG, JPEG, TIFF or BMP image"),
        ("", None, 400, "needs the noise level: --sigma auto (sigma=auto)"),
        ("?sigma=loud", None, 400, "or auto"),
        ("?task=sr5x", None, 400, "unknown task"),
        ("?method=nope", None, 400, "unknown method"),
        ("?sigma=-1", None, 400, "must be finite and >= 0"),
        ("?sigma=0.1&seed=x", None, 400, "seed must be a whole number"),
        ("?method=ldm-sr&sigma=0.1", None, 400, "does not support task 'denoise'"),
        ("", bytes(int(MAX_REQUEST_MB * 1e6) + 1), 413, "larger than the server's limit"),
        ("?sigma=0.1", b"", 400, "has no body"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_one_line_reason(server, images, query, body, status, message):
    code, answer = post(f"{server}/restore{query}", images[32].read_bytes() if body is None else body)
    assert code == status
    assert message in json.loads(answer)["error"]


def test_sigma_auto_is_estimated_and_returned_in_a_header(server, images, tmp_path, one_torch_thread):
    request = urllib.request.Request(f"{server}/restore?sigma=auto", data=images[48].read_bytes(), method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        header, body = response.headers[SIGMA_HEADER], response.read()
    assert float(header) == pytest.approx(estimate_noise_sigma(read_image(images[48]).data), rel=1e-5)
    (tmp_path / "auto.png").write_bytes(body)
    assert torch.equal(read_image(tmp_path / "auto.png").data, single_process_png(images[48], "auto", 0, tmp_path))


def test_health_and_unknown_routes(server):
    with urllib.request.urlopen(f"{server}/healthz", timeout=30) as response:
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    for path, status in (("/restore", 405), ("/nowhere", 404)):
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"{server}{path}", timeout=30)
        assert answer.value.code == status


def test_a_replica_closes_its_engines_when_serve_shuts_it_down(one_torch_thread):
    """Ray Serve calls ``__del__`` on a replica it stops; the replica's engines are closed then."""
    from trt_restore.distributed.serve import Restorer

    argv = ["serve", "--model-set", "tiny", "--method", "ddrm", "--task", "denoise", "--steps", "2", "--backend", "torch"]
    replica = Restorer(serve_options(build_parser().parse_args(argv)))
    engines = replica.engines("ddrm", 1)
    assert engines.backend == "torch"  # loaded when the replica started
    replica.__del__()
    assert engines.backend is None
    replica.close()  # a second close is harmless
