"""Shared test helpers: seeded generators, the data folder (skip when absent) and the gpu marker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trt_restore.data import data_root


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with a CUDA build of torch")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU generator seeded with 0, for reproducible random tensors."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def data_path():
    """``data_path("kernels")`` -> that path under the data root; skips the test when it is absent."""

    def locate(relative: str) -> Path:
        path = data_root() / relative
        if not path.exists():
            pytest.skip(f"{path} not found; set TRT_RESTORE_DATA to the folder holding test/, train/ and kernels/")
        return path

    return locate


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine the second one only waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
