"""Blur kernels: the standard ones made here, and user kernels loaded from arrays, files or the kernel banks.

Every kernel is a float64 CPU tensor normalised to unit sum (a blur keeps the mean
brightness). Bank entries are named ``"<bank>:<index>"`` with a 0-based index, e.g.
``"Levin09:3"`` for the fourth kernel of ``<data_root>/kernels/Levin09.mat``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from ..data import data_root
from ..errors import UserError
from .base import Tensor

KernelSpec = Tensor | np.ndarray | str | Path
_BANK_ENTRY = re.compile(r"^([\w.-]+):(\d+)$")


def cubic(x: Tensor, a: float = -0.5) -> Tensor:
    """Keys' cubic convolution kernel: ``(a+2)|x|³ − (a+3)|x|² + 1`` on |x| ≤ 1,
    ``a|x|³ − 5a|x|² + 8a|x| − 4a`` on 1 < |x| < 2, 0 beyond."""
    t = x.abs()
    near = (a + 2) * t**3 - (a + 3) * t**2 + 1
    far = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def check_kernel_size(size: int) -> int:
    """A kernel length must be a positive odd integer (the kernel has a centre tap)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise UserError(f"kernel_size must be a positive odd integer, got {size!r}")
    return size


def _check_sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise UserError(f"kernel_sigma must be a positive number, got {sigma!r}")
    return float(sigma)


def gaussian_kernel_1d(sigma: float, size: int | None = None) -> Tensor:
    """``exp(−t²/2σ²)`` at t = −r…r (r = size//2; size defaults to 2⌈3σ⌉ + 1), normalised to unit sum."""
    sigma = _check_sigma(sigma)
    size = 2 * math.ceil(3 * sigma) + 1 if size is None else check_kernel_size(size)
    t = torch.arange(size, dtype=torch.float64) - size // 2
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_kernel_2d(sigma: float, size: int | None = None) -> Tensor:
    """The isotropic Gaussian ``g gᵀ`` (size × size) with ``g`` = :func:`gaussian_kernel_1d`."""
    g = gaussian_kernel_1d(sigma, size)
    return torch.outer(g, g)


def uniform_kernel_1d(size: int) -> Tensor:
    """``1/size`` at every tap."""
    size = check_kernel_size(size)
    return torch.full((size,), 1 / size, dtype=torch.float64)


def as_kernel(array: Tensor | np.ndarray, source: str = "kernel") -> Tensor:
    """A 2-D array as a float64 CPU kernel of unit sum; a clear error for anything else."""
    try:
        kernel = torch.as_tensor(array).detach().to(device="cpu", dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{source} must be a numeric 2-D array") from None
    if kernel.dim() != 2 or kernel.numel() == 0:
        raise UserError(f"{source} must be a 2-D array, got shape {tuple(kernel.shape)}")
    if not torch.isfinite(kernel).all() or not kernel.sum() > 0:
        raise UserError(f"{source} must be finite with a positive sum")
    return kernel / kernel.sum()


def kernel_banks() -> list[str]:
    """Names of the kernel banks (``*.mat`` files) in ``<data_root>/kernels``."""
    folder = data_root() / "kernels"
    return sorted(p.stem for p in folder.glob("*.mat")) if folder.is_dir() else []


def kernel_bank(name: str) -> list[Tensor]:
    """All kernels of ``<data_root>/kernels/<name>.mat`` in MATLAB order.

    The file holds one cell array of 2-D kernels (``kernels`` in the standard banks). MATLAB
    v5 files are read with ``scipy.io.loadmat``; v7.3 files are HDF5 and need ``h5py``.
    """
    path = data_root() / "kernels" / f"{name}.mat"
    if not path.is_file():
        available = ", ".join(kernel_banks()) or "none"
        raise UserError(f"kernel bank '{name}' not found at {path}; available banks: {available} (set TRT_RESTORE_DATA)")
    with open(path, "rb") as handle:
        is_hdf5 = b"MATLAB 7.3" in handle.read(128)
    arrays = _read_hdf5_cells(path) if is_hdf5 else _read_v5_cells(path)
    return [as_kernel(a, f"kernel {i} of {path.name}") for i, a in enumerate(arrays)]


def _only_variable(names: list[str], path: Path) -> str:
    if "kernels" in names:
        return "kernels"
    if len(names) != 1:
        raise UserError(f"{path.name} holds variables {names}; expected one cell array of kernels named 'kernels'")
    return names[0]


def _read_v5_cells(path: Path) -> list[np.ndarray]:
    from scipy.io import loadmat

    contents = loadmat(path)
    cells = contents[_only_variable([k for k in contents if not k.startswith("__")], path)]
    if cells.dtype != object:
        raise UserError(f"{path.name} must hold a cell array of kernels, got a {cells.dtype} array {cells.shape}")
    return [np.asarray(c) for c in cells.flatten(order="F")]


def _read_hdf5_cells(path: Path) -> list[np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise UserError(f"{path.name} is a MATLAB v7.3 (HDF5) file; install h5py to read it (pip install h5py)") from None
    with h5py.File(path, "r") as handle:
        refs = handle[_only_variable([k for k in handle if not k.startswith("#")], path)][()]
        if refs.dtype != object:
            raise UserError(f"{path.name} must hold a cell array of kernels, got a {refs.dtype} array")
        # HDF5 stores MATLAB arrays transposed, so C order here is MATLAB's column-major order.
        return [np.asarray(handle[ref][()]).T for ref in refs.flatten()]


def load_kernel(spec: KernelSpec) -> Tensor:
    """A blur kernel from an array/tensor, a ``.npy`` or image file, or a bank entry ``"<bank>:<index>"``."""
    if isinstance(spec, (Tensor, np.ndarray)):
        return as_kernel(spec)
    if not isinstance(spec, (str, Path)):
        raise UserError(f"kernel must be an array, a file path or '<bank>:<index>', got {type(spec).__name__}")
    path = Path(spec).expanduser()
    entry = _BANK_ENTRY.match(str(spec))
    if entry and not path.exists():
        bank, index = entry.group(1), int(entry.group(2))
        kernels = kernel_bank(bank)
        if index >= len(kernels):
            raise UserError(f"kernel bank '{bank}' has {len(kernels)} kernels (indices 0-{len(kernels) - 1}), got {index}")
        return kernels[index]
    if not path.is_file():
        raise UserError(f"kernel file {path} not found; give a .npy or image file, or '<bank>:<index>' such as 'Levin09:0'")
    if path.suffix.lower() == ".npy":
        return as_kernel(np.load(path), f"kernel file {path.name}")
    from PIL import Image

    try:
        with Image.open(path) as image:
            return as_kernel(np.array(image.convert("F")), f"kernel image {path.name}")
    except OSError as error:
        raise UserError(f"cannot read kernel image {path}: {error}") from None
