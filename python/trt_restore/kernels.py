"""Fused elementwise steps between network calls.

Each public function here has a torch implementation, which is the reference
and what runs on the CPU. On a CUDA device the same math runs in the custom
kernels of ``kernels/*.cu``: NVRTC compiles them for the GPU's compute
capability (cached in memory and under ``~/.cache/trt-restore/kernels``), the
driver API loads them into the primary context torch uses, and they are
launched on torch's current stream with the tensors' device pointers, so they
order with torch's own work and can be captured in CUDA graphs.

A call takes the CUDA path when its tensors are on one CUDA device, contiguous
(inputs may broadcast as described in ``kernels/operand.h``), of a dtype the
kernels cover, not tracked by autograd, and the kernels loaded on that device;
otherwise it runs the torch reference. If the kernels cannot be compiled or
loaded on a GPU, a warning says why, once per device.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import math
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .errors import UserError

Tensor = torch.Tensor
Mu = float | Tensor


# --------------------------------------------------------------------------- the public steps


def fft_prox(k_hat: Tensor, b_hat: Tensor, z_hat: Tensor, mu: Mu) -> Tensor:
    """FFT-domain solve of ``(KᵀK + μI) t = Kᵀ b + μ z`` for a circular convolution K.

    ``t̂ = (conj(K̂) B̂ + μ Ẑ) / (|K̂|² + μ)``, elementwise over broadcastable complex spectra
    (kernels/fft_prox.cu).
    """
    gpu = _gpu_for(k_hat, b_hat, z_hat, mu)
    if gpu is not None and (out := _launch_fft_prox(gpu, k_hat, b_hat, z_hat, mu)) is not None:
        return out
    return (k_hat.conj() * b_hat + mu * z_hat) / (k_hat.abs().square() + mu)


def _block_mean(x: Tensor, scale: int) -> Tensor:
    """Mean over the s×s tiling of a (…, H, W) spectrum into blocks of size (H/s, W/s)."""
    *lead, h, w = x.shape
    blocks = x.reshape(*lead, scale, h // scale, scale, w // scale)
    return blocks.mean(dim=(-4, -2))


def sr_fft_prox(k_hat: Tensor, atb_hat: Tensor, z_hat: Tensor, mu: Mu, scale: int) -> Tensor:
    """Closed-form data step for blur + s-fold decimation (Zhao et al. 2016, as in USRNet).

    Solves ``(AᵀA + μI) t = Aᵀb + μ z`` with ``A = S_s K`` (circular blur K, then keep
    every s-th pixel), all in the full 2-D Fourier domain:

        R̂ = F(Aᵀb) + μ Ẑ
        t̂ = (R̂ − conj(K̂) ⊙ ⇑[ mean_s(K̂ ⊙ R̂) / (mean_s(|K̂|²) + μ) ]) / μ

    where ``mean_s`` averages the s×s spectral blocks and ``⇑`` tiles the result back
    (kernels/sr_fft_prox.cu). A tensor μ must be constant over each (H, W) plane.
    """
    height, width = z_hat.shape[-2:]
    if not isinstance(scale, int) or scale < 1 or height % scale or width % scale:
        raise UserError(
            f"sr_fft_prox needs a positive integer scale that divides the spectrum size, got scale {scale} "
            f"for {height}x{width}; crop or pad the image to a multiple of the scale"
        )
    gpu = _gpu_for(k_hat, atb_hat, z_hat, mu)
    if gpu is not None and (out := _launch_sr_fft_prox(gpu, k_hat, atb_hat, z_hat, mu, scale)) is not None:
        return out
    r_hat = atb_hat + mu * z_hat
    num = _block_mean(k_hat * r_hat, scale)
    den = _block_mean(k_hat.abs().square(), scale) + mu
    correction = k_hat.conj() * (num / den).repeat(*([1] * (num.dim() - 2)), scale, scale)
    return (r_hat - correction) / mu


def ddrm_spectral_update(
    vt_x0: Tensor,
    vt_eps: Tensor,
    ut_y: Tensor,
    singulars: Tensor,
    noise: Tensor,
    sigma_next: float,
    sigma_y: float,
    eta: float,
    eta_b: float,
) -> Tensor:
    """One DDRM step in the spectral space (Kawar et al. 2022, ``efficient_generalized_steps``).

    All tensors are (B, N) in the V basis; ``singulars`` and ``ut_y`` are zero-padded to N.
    With ``s`` the singular value, ``σ'`` = sigma_next, ``σ_y`` the observation noise on
    the model's scale and ``ȳ = (Uᵀy)/s``:

    - ``s = 0`` (missing):  ``x̄ = x̄₀ + √(σ'² − (ησ')²) ε̄ + ησ' n``
    - ``s σ' < σ_y``:       ``x̄ = x̄₀ + √(σ'² − (ησ')²) (Uᵀy − s x̄₀)/σ_y + ησ' n``
    - ``s σ' > σ_y``:       ``x̄ = η_b ȳ + (1 − η_b) x̄₀ + √(σ'² − σ_y² η_b² / s²) n``

    (``s σ' = σ_y`` exactly falls in the first case, as in the reference code;
    kernels/ddrm_update.cu.)
    """
    scalars = (sigma_next, sigma_y, eta, eta_b)
    gpu = _gpu_for(vt_x0, vt_eps, ut_y, singulars, noise)
    if gpu is not None and (out := _launch_ddrm_update(gpu, (vt_x0, vt_eps, ut_y, singulars, noise), scalars)) is not None:
        return out
    std_next = eta * sigma_next
    tilde_next = (sigma_next**2 - std_next**2) ** 0.5
    nonzero = singulars > 0
    before = nonzero & (singulars * sigma_next > sigma_y)
    after = nonzero & (singulars * sigma_next < sigma_y)
    safe_s = torch.where(nonzero, singulars, torch.ones_like(singulars))

    missing = vt_x0 + tilde_next * vt_eps + std_next * noise
    residual = (ut_y - singulars * vt_x0) / (sigma_y if sigma_y > 0 else 1.0)
    less_noisy = vt_x0 + tilde_next * residual + std_next * noise
    y_bar = ut_y / safe_s
    diff = (sigma_next**2 - (sigma_y * eta_b / safe_s) ** 2).clamp_min(0).sqrt()
    noisier = eta_b * y_bar + (1 - eta_b) * vt_x0 + diff * noise
    return torch.where(before, noisier, torch.where(after, less_noisy, missing))


def permute(x: Tensor, index: Tensor) -> Tensor:
    """Gather ``out[:, i] = x[:, index[i]]`` on (B, N) vectors (Vᵀ of a permutation basis).

    On the GPU (kernels/permute.cu) ``index`` must hold valid positions: it is not bounds-checked.
    """
    gpu = _gpu_for(x, index)
    if gpu is not None and (out := _launch_permutation(gpu, x, index, inverse=False)) is not None:
        return out
    return x.index_select(1, index)


def unpermute(x: Tensor, index: Tensor) -> Tensor:
    """Scatter ``out[:, index[i]] = x[:, i]``, the inverse of :func:`permute` (V of a permutation basis).

    On the GPU (kernels/permute.cu) ``index`` must hold valid positions: it is not bounds-checked.
    """
    gpu = _gpu_for(x, index)
    if gpu is not None and (out := _launch_permutation(gpu, x, index, inverse=True)) is not None:
        return out
    return torch.empty_like(x).index_copy_(1, index, x)


_REFERENCE_ONLY = threading.local()


@contextmanager
def torch_reference() -> Iterator[None]:
    """Run the torch reference of every step in this thread, on a GPU too (for comparisons)."""
    previous = getattr(_REFERENCE_ONLY, "on", False)
    _REFERENCE_ONLY.on = True
    try:
        yield
    finally:
        _REFERENCE_ONLY.on = previous


def cuda_kernels_available(device: torch.device | int | None = None) -> bool:
    """Whether the kernels compile and load on a CUDA device (the current one by default)."""
    if not torch.cuda.is_available():
        return False
    if isinstance(device, int):
        return _device_kernels(device) is not None
    index = None if device is None else torch.device(device).index
    return _device_kernels(torch.cuda.current_device() if index is None else index) is not None


# --------------------------------------------------------------------------- NVRTC compilation

_ELEMENT_TYPES = {2: "unsigned short", 4: "unsigned int", 8: "unsigned long long", 16: "ulonglong2"}
_FLOAT_TYPES = ("float", "double")


def _entry(kernel: str, type_name: str) -> str:
    """The NVRTC name expression of one template instantiation."""
    return f"trt_restore::{kernel}<{type_name}>"


# The instantiations NVRTC emits for each source: {file: name expressions}.
KERNEL_ENTRIES: dict[str, tuple[str, ...]] = {
    "fft_prox.cu": tuple(_entry("fft_prox_kernel", t) for t in _FLOAT_TYPES),
    "sr_fft_prox.cu": tuple(_entry("sr_fft_prox_kernel", t) for t in _FLOAT_TYPES),
    "ddrm_update.cu": tuple(_entry("ddrm_update_kernel", t) for t in _FLOAT_TYPES),
    "permute.cu": tuple(
        _entry(kernel, e) for kernel in ("permute_kernel", "unpermute_kernel") for e in _ELEMENT_TYPES.values()
    ),
}


@dataclass(frozen=True)
class CompiledKernels:
    """One kernel source compiled by NVRTC for one GPU architecture.

    ``entries`` maps each name expression (``trt_restore::fft_prox_kernel<float>``) to its
    lowered symbol, the name of its ``.entry`` in the PTX and of its function in the CUBIN.
    """

    source_name: str
    arch: int
    ptx: str
    cubin: bytes
    entries: dict[str, str]


def compile_ptx(source_name: str, arch: int | str) -> str:
    """PTX of ``kernels/<source_name>`` for ``arch`` (``90``, ``"sm_90"`` or ``"compute_90"``); needs no GPU."""
    return compile_kernels(source_name, arch).ptx


def compile_kernels(source_name: str, arch: int | str) -> CompiledKernels:
    """Compile ``kernels/<source_name>`` with NVRTC for ``--gpu-architecture=sm_<arch>``; needs no GPU.

    Results are cached in memory and on disk (:func:`kernel_cache_dir`), keyed by the sha256
    of the sources, the options and the NVRTC version.
    """
    name = source_name if source_name.endswith(".cu") else f"{source_name}.cu"
    if name not in KERNEL_ENTRIES:
        raise UserError(f"unknown kernel source {source_name!r}; choose one of {', '.join(sorted(KERNEL_ENTRIES))}")
    return _compile(name, _arch_number(arch))


def kernel_cache_dir() -> Path:
    """Where compiled kernels are cached: ``$XDG_CACHE_HOME/trt-restore/kernels`` (default ``~/.cache``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "trt-restore" / "kernels"


def _arch_number(arch: int | str) -> int:
    text = str(arch).strip().lower().removeprefix("sm_").removeprefix("compute_")
    if not text.isdigit():
        raise UserError(f"GPU architecture must look like 90, 'sm_90' or 'compute_90', got {arch!r}")
    return int(text)


def _nvrtc() -> Any:
    try:
        from cuda.bindings import nvrtc
    except ImportError as error:
        raise UserError(
            "compiling the CUDA kernels needs NVRTC: pip install cuda-python nvidia-cuda-nvrtc"
        ) from error
    return nvrtc


def _check(result: tuple, what: str) -> Any:
    """Unpack a cuda-python ``(status, *values)`` result, raising on a failed status."""
    status, *values = result
    if int(status) != 0:
        raise RuntimeError(f"{what} failed with {status.name}")
    return values[0] if len(values) == 1 else tuple(values)


def _kernel_texts() -> tuple[dict[str, str], dict[str, str]]:
    """(sources, headers) of the package's kernels/ folder, by file name."""
    files = sorted(resources.files("trt_restore.kernel_sources").iterdir(), key=lambda f: f.name)
    texts = {f.name: f.read_text(encoding="utf-8") for f in files if f.name.endswith((".cu", ".cuh", ".h"))}
    sources = {n: t for n, t in texts.items() if n.endswith(".cu")}
    headers = {n: t for n, t in texts.items() if not n.endswith(".cu")}
    return sources, headers


@lru_cache(maxsize=None)
def _compile(name: str, arch: int) -> CompiledKernels:
    nvrtc = _nvrtc()
    try:
        version = _check(nvrtc.nvrtcVersion(), "nvrtcVersion")
        supported = _check(nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")
    except RuntimeError as error:
        raise UserError(f"NVRTC could not be loaded ({error}): pip install nvidia-cuda-nvrtc") from error
    if arch not in supported:
        raise UserError(
            f"NVRTC {version[0]}.{version[1]} cannot compile for sm_{arch}; it supports "
            f"{', '.join(f'sm_{a}' for a in supported)}"
        )
    sources, headers = _kernel_texts()
    options = (f"--gpu-architecture=sm_{arch}", "--std=c++17")
    key = {"source": sources[name], "headers": headers, "options": options, "entries": KERNEL_ENTRIES[name],
           "nvrtc": version}
    cache_file = kernel_cache_dir() / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()}.json"
    compiled = _read_cache(cache_file, name, arch)
    if compiled is None:
        compiled = _run_nvrtc(nvrtc, name, arch, sources[name], headers, options)
        _write_cache(cache_file, compiled)
    return compiled


def _run_nvrtc(
    nvrtc: Any, name: str, arch: int, source: str, headers: dict[str, str], options: Sequence[str]
) -> CompiledKernels:
    """One NVRTC compilation of ``source`` (which includes some of ``headers``) with every entry of ``name``."""
    program = _check(
        nvrtc.nvrtcCreateProgram(
            source.encode(), name.encode(), len(headers), [t.encode() for t in headers.values()],
            [n.encode() for n in headers],
        ),
        "nvrtcCreateProgram",
    )
    try:
        for expression in KERNEL_ENTRIES[name]:
            _check(nvrtc.nvrtcAddNameExpression(program, expression.encode()), "nvrtcAddNameExpression")
        (status,) = nvrtc.nvrtcCompileProgram(program, len(options), [o.encode() for o in options])
        if int(status) != 0:
            raise RuntimeError(f"NVRTC could not compile {name} for sm_{arch}:\n{_program_log(nvrtc, program)}")
        ptx = bytearray(_check(nvrtc.nvrtcGetPTXSize(program), "nvrtcGetPTXSize"))
        _check(nvrtc.nvrtcGetPTX(program, ptx), "nvrtcGetPTX")
        cubin = bytearray(_check(nvrtc.nvrtcGetCUBINSize(program), "nvrtcGetCUBINSize"))
        _check(nvrtc.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN")
        entries = {
            e: _check(nvrtc.nvrtcGetLoweredName(program, e.encode()), "nvrtcGetLoweredName").decode()
            for e in KERNEL_ENTRIES[name]
        }
    finally:
        _check(nvrtc.nvrtcDestroyProgram(program), "nvrtcDestroyProgram")
    return CompiledKernels(name, arch, bytes(ptx).rstrip(b"\0").decode(), bytes(cubin), entries)


def _program_log(nvrtc: Any, program: Any) -> str:
    log = bytearray(_check(nvrtc.nvrtcGetProgramLogSize(program), "nvrtcGetProgramLogSize"))
    _check(nvrtc.nvrtcGetProgramLog(program, log), "nvrtcGetProgramLog")
    return bytes(log).rstrip(b"\0").decode(errors="replace")


def _read_cache(path: Path, name: str, arch: int) -> CompiledKernels | None:
    """The cached compilation at ``path``; None when absent or unreadable (it is then rebuilt)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return CompiledKernels(name, arch, record["ptx"], base64.b64decode(record["cubin"]), dict(record["entries"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, compiled: CompiledKernels) -> None:
    """Store a compilation atomically; a read-only cache only costs a recompile next time."""
    record = {"ptx": compiled.ptx, "cubin": base64.b64encode(compiled.cubin).decode(), "entries": compiled.entries}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(record), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass


# --------------------------------------------------------------------------- loading and launching

# Launch geometry, the same as the C API's (kernels/common.cuh): a 1-D grid-stride loop.
_BLOCK_SIZE = 256
_MAX_BLOCKS = 65535


class _Operand(ctypes.Structure):
    """TrtRestoreOperand (kernels/operand.h): output element i reads ``data[(i // inner) % period]``."""

    _fields_ = [("data", ctypes.c_void_p), ("inner", ctypes.c_longlong), ("period", ctypes.c_longlong)]


def broadcast_layout(shape: Sequence[int], out_shape: Sequence[int]) -> tuple[int, int] | None:
    """``(inner, period)`` such that a contiguous tensor of ``shape`` broadcast to ``out_shape`` has
    element i of the flattened output at flat position ``(i // inner) % period``, or None when
    its non-singleton dimensions do not form one contiguous run of the output's (then no such
    pair exists and the torch reference runs).
    """
    padded = [1] * (len(out_shape) - len(shape)) + list(shape)
    kept = [d for d, size in enumerate(padded) if size != 1]
    if not kept:
        return 1, 1
    first, last = kept[0], kept[-1]
    if any(padded[d] == 1 and out_shape[d] != 1 for d in range(first, last + 1)):
        return None
    return math.prod(out_shape[last + 1 :]), math.prod(padded)


def _operand(t: Tensor, out_shape: Sequence[int]) -> _Operand | None:
    layout = broadcast_layout(t.shape, out_shape) if t.is_contiguous() else None
    return None if layout is None else _Operand(t.data_ptr(), *layout)


def _operands(tensors: Sequence[Tensor], out_shape: Sequence[int]) -> list[_Operand] | None:
    operands = [_operand(t, out_shape) for t in tensors]
    return None if any(o is None for o in operands) else operands


def _nvrtc_target(capability: int) -> int:
    """The architecture to compile for: the GPU's own, else the newest older one NVRTC supports."""
    supported = _check(_nvrtc().nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")
    older = [a for a in supported if a <= capability]
    if not older:
        raise RuntimeError(f"NVRTC cannot target compute capability {capability // 10}.{capability % 10}")
    return max(older)


class _DeviceKernels:
    """kernels/*.cu compiled for one GPU and loaded into its primary context, the one torch uses.

    An exact-architecture CUBIN when NVRTC supports the GPU, else PTX of the newest older
    architecture, which the driver compiles on load.
    """

    def __init__(self, index: int):
        from cuda.bindings import driver

        self._driver = driver
        self.device = torch.device("cuda", index)
        _check(driver.cuInit(0), "cuInit")
        self._context = _check(driver.cuDevicePrimaryCtxRetain(_check(driver.cuDeviceGet(index), "cuDeviceGet")),
                               "cuDevicePrimaryCtxRetain")
        major, minor = torch.cuda.get_device_capability(index)
        capability = 10 * major + minor
        arch = _nvrtc_target(capability)
        driver_version = _check(driver.cuDriverGetVersion(), "cuDriverGetVersion")
        nvrtc_version = _check(_nvrtc().nvrtcVersion(), "nvrtcVersion")
        # An image from a newer NVRTC than the driver supports does not load; say which is which.
        loading = (
            f"loading NVRTC {nvrtc_version[0]}.{nvrtc_version[1]} output for sm_{arch} with a driver for CUDA "
            f"{driver_version // 1000}.{driver_version % 1000 // 10}"
        )
        self._modules = []
        self._functions = {}
        with self._current():
            for name in KERNEL_ENTRIES:
                compiled = compile_kernels(name, arch)
                image = compiled.cubin if arch == capability else compiled.ptx.encode() + b"\0"
                module = _check(driver.cuModuleLoadData(image), f"{loading} ({name})")
                self._modules.append(module)
                for expression, symbol in compiled.entries.items():
                    self._functions[expression] = _check(
                        driver.cuModuleGetFunction(module, symbol.encode()), f"cuModuleGetFunction({expression})"
                    )

    @contextmanager
    def _current(self) -> Iterator[None]:
        _check(self._driver.cuCtxPushCurrent(self._context), "cuCtxPushCurrent")
        try:
            yield
        finally:
            _check(self._driver.cuCtxPopCurrent(), "cuCtxPopCurrent")

    def launch(self, expression: str, count: int, args: Sequence[tuple[Any, Any]]) -> None:
        """Enqueue kernel ``expression`` for ``count`` grid-stride items on torch's current stream.

        ``args`` are ``(value, ctypes type)`` pairs in the kernel's parameter order
        (type None for a ctypes structure passed by value).
        """
        blocks = max(1, min(-(-count // _BLOCK_SIZE), _MAX_BLOCKS))
        stream = self._driver.CUstream(torch.cuda.current_stream(self.device).cuda_stream)
        values, types = zip(*args)
        with self._current():
            _check(
                self._driver.cuLaunchKernel(
                    self._functions[expression], blocks, 1, 1, _BLOCK_SIZE, 1, 1, 0, stream, (values, types), 0
                ),
                f"launching {expression}",
            )


_LOADED: dict[int, _DeviceKernels | None] = {}
_LOAD_LOCK = threading.Lock()


def _device_kernels(index: int) -> _DeviceKernels | None:
    """The kernels loaded on cuda:index, or None (with one warning) where that fails."""
    with _LOAD_LOCK:
        if index not in _LOADED:
            try:
                _LOADED[index] = _DeviceKernels(index)
            except Exception as error:  # any failure leaves the torch reference, which is always right
                warnings.warn(
                    f"trt-restore CUDA kernels are unavailable on cuda:{index} ({error}); using the torch implementations",
                    RuntimeWarning,
                    stacklevel=4,
                )
                _LOADED[index] = None
        return _LOADED[index]


def _gpu_for(*args: Any) -> _DeviceKernels | None:
    """The loaded kernels when every tensor argument is on one CUDA device and none needs autograd."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    device = tensors[0].device
    if getattr(_REFERENCE_ONLY, "on", False) or device.type != "cuda" or any(t.device != device for t in tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    return _device_kernels(device.index if device.index is not None else torch.cuda.current_device())


# Kernel scalar type per torch dtype: (template argument, ctypes type of a scalar).
_REAL_OF_COMPLEX = {torch.complex64: ("float", ctypes.c_float), torch.complex128: ("double", ctypes.c_double)}
_REAL = {torch.float32: ("float", ctypes.c_float), torch.float64: ("double", ctypes.c_double)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mu_argument(mu: Mu, real_dtype: torch.dtype, out_shape: Sequence[int]) -> tuple[_Operand, float] | None:
    """μ as (operand, constant): a null operand with the constant for a number, the tensor otherwise."""
    if _is_number(mu):
        return _Operand(None, 1, 1), float(mu)
    if mu.dtype != real_dtype:
        return None
    operand = _operand(mu, out_shape)
    return None if operand is None else (operand, 0.0)


def _complex_inputs(*spectra: Tensor) -> tuple[str, Any, torch.dtype] | None:
    """(template argument, ctypes scalar, real dtype) when all spectra share a supported complex dtype."""
    dtype = spectra[0].dtype
    if dtype not in _REAL_OF_COMPLEX or any(s.dtype != dtype for s in spectra):
        return None
    return (*_REAL_OF_COMPLEX[dtype], dtype.to_real())


def _shape_of(value: Mu) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, Tensor) else ()


class _ProxLaunch(NamedTuple):
    """What both FFT-prox kernels take: the complex type, the broadcast output and its operands."""

    type_name: str
    scalar: type
    out: Tensor
    operands: list
    mu: tuple


def _prox_launch(k_hat: Tensor, b_hat: Tensor, z_hat: Tensor, mu: Mu) -> _ProxLaunch | None:
    """The arguments shared by the FFT-prox kernels, or None when the inputs need the fallback."""
    types = _complex_inputs(k_hat, b_hat, z_hat)
    if types is None:
        return None
    type_name, scalar, real_dtype = types
    out_shape = torch.broadcast_shapes(k_hat.shape, b_hat.shape, z_hat.shape, _shape_of(mu))
    operands = _operands((k_hat, b_hat, z_hat), out_shape)
    mu_arg = _mu_argument(mu, real_dtype, out_shape)
    if operands is None or mu_arg is None:
        return None
    out = torch.empty(out_shape, dtype=k_hat.dtype, device=k_hat.device)
    return _ProxLaunch(type_name, scalar, out, operands, mu_arg)


def _prox_arguments(launch: _ProxLaunch) -> list:
    return [(launch.out.data_ptr(), ctypes.c_void_p), *((o, None) for o in launch.operands), (launch.mu[0], None),
            (launch.mu[1], launch.scalar)]


def _launch_fft_prox(gpu: _DeviceKernels, k_hat: Tensor, b_hat: Tensor, z_hat: Tensor, mu: Mu) -> Tensor | None:
    launch = _prox_launch(k_hat, b_hat, z_hat, mu)
    if launch is None:
        return None
    out = launch.out
    if out.numel():
        arguments = [*_prox_arguments(launch), (out.numel(), ctypes.c_longlong)]
        gpu.launch(_entry("fft_prox_kernel", launch.type_name), out.numel(), arguments)
    return out


def _launch_sr_fft_prox(
    gpu: _DeviceKernels, k_hat: Tensor, atb_hat: Tensor, z_hat: Tensor, mu: Mu, scale: int
) -> Tensor | None:
    if any(size != 1 for size in _shape_of(mu)[-2:]):
        return None
    launch = _prox_launch(k_hat, atb_hat, z_hat, mu)
    if launch is None:
        return None
    out = launch.out
    *lead, height, width = out.shape
    if out.numel():
        arguments = [
            *_prox_arguments(launch),
            (math.prod(lead), ctypes.c_longlong), (height, ctypes.c_longlong), (width, ctypes.c_longlong),
            (scale, ctypes.c_int),
        ]
        gpu.launch(_entry("sr_fft_prox_kernel", launch.type_name), out.numel() // scale**2, arguments)
    return out


def _launch_ddrm_update(
    gpu: _DeviceKernels, tensors: Sequence[Tensor], scalars: Sequence[float]
) -> Tensor | None:
    """``tensors`` = (vt_x0, vt_eps, ut_y, singulars, noise); ``scalars`` = (σ', σ_y, η, η_b)."""
    dtype = tensors[0].dtype
    if dtype not in _REAL or any(t.dtype != dtype for t in tensors) or not all(map(_is_number, scalars)):
        return None
    out_shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    operands = _operands(tensors, out_shape)
    if operands is None:
        return None
    out = torch.empty(out_shape, dtype=dtype, device=tensors[0].device)
    if out.numel():
        gpu.launch(
            _entry("ddrm_update_kernel", _REAL[dtype][0]),
            out.numel(),
            [(out.data_ptr(), ctypes.c_void_p), *((o, None) for o in operands),
             *((float(s), ctypes.c_double) for s in scalars), (out.numel(), ctypes.c_longlong)],
        )
    return out


def _launch_permutation(gpu: _DeviceKernels, x: Tensor, index: Tensor, inverse: bool) -> Tensor | None:
    """permute (gather) or, with ``inverse``, unpermute (scatter) along dimension 1 of x."""
    if (
        x.dim() < 2
        or not x.is_contiguous()
        or x.element_size() not in _ELEMENT_TYPES
        or index.dtype != torch.int64
        or index.dim() != 1
        or not index.is_contiguous()
        or (inverse and index.numel() != x.shape[1])
    ):
        return None
    outer, n, inner = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    out = torch.empty((outer, index.numel(), *x.shape[2:]), dtype=x.dtype, device=x.device)
    if out.numel():
        sizes = (outer, n) if inverse else (outer, n, index.numel())
        gpu.launch(
            _entry("unpermute_kernel" if inverse else "permute_kernel", _ELEMENT_TYPES[x.element_size()]),
            out.numel(),
            [(out.data_ptr(), ctypes.c_void_p), (x.data_ptr(), ctypes.c_void_p), (index.data_ptr(), ctypes.c_void_p),
             *((s, ctypes.c_longlong) for s in sizes), (inner, ctypes.c_longlong)],
        )
    return out
