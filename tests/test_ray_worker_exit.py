"""``restore --ray`` with an image that makes its worker process exit: bounded retries, the image recorded as failed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")  # the imports below need it

from trt_restore.distributed.batch import MAX_WORKER_EXITS, restore_on_ray  # noqa: E402
from trt_restore.io import write_image  # noqa: E402

POISON = "poison.png"


def exit_on_poison() -> None:
    """Runs in every Ray worker before anything else: reading ``poison.png`` ends the process at once,
    as a crash in a native library would."""
    from trt_restore.distributed import batch

    read_input = batch.read_input

    def read_or_exit(source: str):
        if source.endswith(POISON):
            os._exit(1)
        return read_input(source)

    batch.read_input = read_or_exit


@pytest.fixture(scope="module")
def cluster_with_poison():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env={"worker_process_setup_hook": exit_on_poison},
    )
    yield
    ray.shutdown()


def test_an_image_that_kills_its_worker_is_recorded_as_failed_and_the_rest_restored(cluster_with_poison, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    generator = torch.Generator().manual_seed(0)
    for name in ("a.png", POISON, "b.png", "c.png"):
        write_image(inputs / name, torch.rand(3, 32, 32, generator=generator))
    summary = restore_on_ray(
        [str(inputs)],
        str(outputs),
        method="ddrm",
        task="denoise",
        sigma=0.05,
        model_set="tiny",
        backend="torch",
        config={"steps": 2},
        workers=1,
        threads=1,
        batch_size=2,
    )
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 1, "not_run": 0}
    assert sorted(p.name for p in outputs.glob("*.png")) == ["a.png", "b.png", "c.png"]
    files = json.loads(Path(outputs / "restore_summary.json").read_text())["files"]
    (poison,) = [entry for entry in files if entry["input"].endswith(POISON)]
    assert poison["status"] == "failed"
    assert f"exited {MAX_WORKER_EXITS} times" in poison["reason"]
