"""kernels/*.cu compile without a GPU: with NVRTC (the runtime path, with its disk cache) and
with nvcc through CMakeLists.txt (the C library)."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from trt_restore import kernels
from trt_restore.errors import UserError

REPO = Path(__file__).resolve().parents[1]

EXPECTED_ENTRIES = {
    "fft_prox.cu": {"trt_restore::fft_prox_kernel<float>", "trt_restore::fft_prox_kernel<double>"},
    "sr_fft_prox.cu": {"trt_restore::sr_fft_prox_kernel<float>", "trt_restore::sr_fft_prox_kernel<double>"},
    "ddrm_update.cu": {"trt_restore::ddrm_update_kernel<float>", "trt_restore::ddrm_update_kernel<double>"},
    "permute.cu": {
        f"trt_restore::{kernel}<{element}>"
        for kernel in ("permute_kernel", "unpermute_kernel")
        for element in ("unsigned short", "unsigned int", "unsigned long long", "ulonglong2")
    },
}

C_API = [
    f"trt_restore_{name}"
    for name in (
        "fft_prox_f32", "fft_prox_f64", "sr_fft_prox_f32", "sr_fft_prox_f64", "ddrm_update_f32", "ddrm_update_f64",
        *(f"{kind}_b{size}" for kind in ("permute", "unpermute") for size in (2, 4, 8, 16)),
    )
]


@pytest.fixture(autouse=True, scope="module")
def private_kernel_cache(tmp_path_factory):
    """Compile into a fresh cache directory, starting with an empty in-memory cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        kernels._compile.cache_clear()
        yield
    kernels._compile.cache_clear()


def test_every_kernel_file_is_registered():
    sources = {p.name for p in (REPO / "kernels").glob("*.cu")}
    assert sources == set(kernels.KERNEL_ENTRIES) == set(EXPECTED_ENTRIES)


@pytest.mark.parametrize("arch", [87, 89, 90])
@pytest.mark.parametrize("source", sorted(EXPECTED_ENTRIES))
def test_nvrtc_compiles_every_kernel_for_the_target_gpus(source, arch):
    compiled = kernels.compile_kernels(source, arch)

    assert set(compiled.entries) == EXPECTED_ENTRIES[source]
    assert f".target sm_{arch}" in compiled.ptx
    for symbol in compiled.entries.values():
        assert f".entry {symbol}(" in compiled.ptx
    assert compiled.cubin.startswith(b"\x7fELF")


def test_compile_ptx_accepts_every_spelling_of_an_architecture():
    ptx = kernels.compile_ptx("ddrm_update", "sm_89")
    assert kernels.compile_ptx("ddrm_update.cu", 89) == ptx
    assert kernels.compile_ptx("ddrm_update", "compute_89") == ptx


def test_compilations_are_cached_on_disk():
    cache = kernels.kernel_cache_dir()
    before = set(cache.glob("*.json"))
    kernels.compile_kernels("fft_prox", 86)
    (entry,) = set(cache.glob("*.json")) - before

    record = json.loads(entry.read_text())
    record["ptx"] += "// served from the disk cache\n"
    entry.write_text(json.dumps(record))
    kernels._compile.cache_clear()

    assert kernels.compile_ptx("fft_prox", 86).endswith("// served from the disk cache\n")
    kernels.compile_kernels("fft_prox", 80)
    assert len(set(cache.glob("*.json")) - before) == 2  # another architecture is another entry


def test_an_unreadable_cache_entry_is_rebuilt():
    kernels.compile_kernels("permute", 75)
    kernels._compile.cache_clear()
    for entry in kernels.kernel_cache_dir().glob("*.json"):
        entry.write_text("{not json")
    assert ".entry" in kernels.compile_ptx("permute", 75)


@pytest.mark.parametrize(
    ("source", "arch", "message"),
    [("no_such_kernel", 90, "unknown kernel source"), ("fft_prox", "sm_9x", "must look like"), ("fft_prox", 30, "sm_30")],
)
def test_bad_compile_requests_are_user_errors(source, arch, message):
    with pytest.raises(UserError, match=message):
        kernels.compile_ptx(source, arch)


def _nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = Path(cuda_home) / "bin" / "nvcc"
    return shutil.which("nvcc") or (str(candidate) if candidate.exists() else None)


@pytest.mark.slow
def test_cmake_builds_the_kernel_library(tmp_path):
    nvcc, cmake = _nvcc(), shutil.which("cmake")
    if nvcc is None or cmake is None:
        pytest.skip(f"needs cmake and nvcc to build the kernel library (cmake: {cmake}, nvcc: {nvcc})")
    build = tmp_path / "build"
    # One architecture keeps the test fast; the default build targets 87, 89 and 90.
    configure = [cmake, "-S", str(REPO), "-B", str(build), f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DCMAKE_CUDA_ARCHITECTURES=90"]
    for command in (configure, [cmake, "--build", str(build), "-j", "2"]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    library = ctypes.CDLL(str(build / "libtrt_restore_kernels.so"))
    missing = [name for name in C_API if not hasattr(library, name)]
    assert not missing
