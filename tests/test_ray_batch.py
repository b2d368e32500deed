"""``restore --ray`` on a local 2-CPU Ray cluster: the same outputs as one process, a worker killed mid-job, resume."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")  # the imports below need it

from trt_restore.cli import main  # noqa: E402
from trt_restore.distributed.batch import restore_on_ray  # noqa: E402
from trt_restore.io import read_image, write_image  # noqa: E402
from trt_restore.jobs.report import EXIT_SOME_FAILED  # noqa: E402

FLAGS = ("--method", "ddrm", "--task", "denoise", "--sigma", "0.05", "--seed", "3", "--steps", "2")
FLAGS += ("--model-set", "tiny", "--backend", "torch", "--threads", "1", "--quiet")
IMAGES = 20
WORKER_TITLE = b"RestoreWorker"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """20 small images of two sizes (two size buckets) and one file that does not decode."""
    folder = tmp_path_factory.mktemp("inputs")
    generator = torch.Generator().manual_seed(0)
    for index in range(IMAGES):
        side = 32 if index % 2 else 48
        write_image(folder / f"img{index:02d}.png", torch.rand(3, side, side, generator=generator))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


@pytest.fixture(scope="module")
def single_process(inputs, tmp_path_factory, one_torch_thread) -> Path:
    """The outputs of the same batch in this process, without Ray."""
    outputs = tmp_path_factory.mktemp("single")
    assert main(["restore", *FLAGS, str(inputs), "-o", str(outputs)]) == EXIT_SOME_FAILED
    return outputs


def assert_same_outputs(outputs: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.glob("img*.png"))
    assert len(names) == IMAGES
    assert sorted(p.name for p in outputs.glob("*.png")) == names
    for name in names:
        assert torch.equal(read_image(outputs / name).data, read_image(reference / name).data), name


def summary_statuses(path: Path) -> dict[str, str]:
    """Input name to status; each input is listed exactly once."""
    files = json.loads(path.read_text())["files"]
    names = [Path(record["input"]).name for record in files]
    assert len(names) == len(set(names)) == IMAGES + 1
    return {name: record["status"] for name, record in zip(names, files, strict=True)}


def test_ray_batch_equals_the_single_process_run(cluster, inputs, single_process, tmp_path, capsys):
    outputs = tmp_path / "ray"
    argv = ["restore", *FLAGS, str(inputs), "-o", str(outputs), "--ray", "--workers", "2", "--batch-size", "3"]
    assert main(argv) == EXIT_SOME_FAILED  # the broken file fails; the job goes on
    assert_same_outputs(outputs, single_process)
    summary = json.loads((outputs / "restore_summary.json").read_text())
    assert summary["counts"] == {"done": IMAGES, "skipped": 0, "failed": 1, "not_run": 0}
    assert summary["backend"] == "torch" and summary["seed"] == 3
    assert summary_statuses(outputs / "restore_summary.json")["broken.png"] == "failed"
    assert "broken.png" in capsys.readouterr().err

    for name in ("img03.png", "img10.png"):
        (outputs / name).unlink()
    (outputs / "img11.png").write_bytes(b"half a file")  # does not decode: restored again
    assert main([*argv, "--resume"]) == EXIT_SOME_FAILED
    statuses = summary_statuses(outputs / "restore_summary.json")
    assert sorted(name for name, status in statuses.items() if status == "done") == [
        "img03.png",
        "img10.png",
        "img11.png",
    ]
    assert list(statuses.values()).count("skipped") == IMAGES - 3
    assert_same_outputs(outputs, single_process)


def worker_pids() -> list[int]:
    """The processes of the Ray actors that restore (their title names the class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and WORKER_TITLE in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the worker processes through /proc")
def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(cluster, inputs, single_process, tmp_path):
    outputs = tmp_path / "ray-killed"
    job = partial(
        restore_on_ray,
        [inputs.as_uri()],  # a URI, read and written through pyarrow.fs
        outputs.as_uri(),
        method="ddrm",
        task="denoise",
        sigma=0.05,
        seed=3,
        model_set="tiny",
        backend="torch",
        config={"steps": 2},
        workers=2,
        threads=1,
        batch_size=2,
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(job)
        deadline = time.monotonic() + 120
        while len(list(outputs.glob("img*.png"))) < 2 and not running.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        victims = worker_pids()
        written_before_kill = len(list(outputs.glob("img*.png")))
        assert victims, "no restoring worker found"
        os.kill(victims[0], signal.SIGKILL)
        summary = running.result(timeout=180)
    assert written_before_kill < IMAGES  # the kill came mid-job
    assert victims[0] not in worker_pids()  # the killed worker is gone; a restarted one took over
    assert_same_outputs(outputs, single_process)
    assert not list(outputs.glob(".*"))  # no temporary files left behind
    assert summary["counts"] == {"done": IMAGES, "skipped": 0, "failed": 1, "not_run": 0}
    assert summary_statuses(outputs / "restore_summary.json")["broken.png"] == "failed"


def test_an_address_that_is_not_one_is_a_user_error(inputs, tmp_path, capsys):
    argv = ["restore", *FLAGS, "--ray", str(inputs), str(inputs), "-o", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --ray took") and err.count("\n") == 1
