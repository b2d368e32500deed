"""The OpenVINO backend: the exported ONNX graphs compiled for the CPU, in bf16 where the CPU computes it natively.

OpenVINO reads the same ONNX files as onnxruntime (a path, or bytes with the weights
embedded). Each component is compiled once, with

- the inference precision: ``bf16`` (weights and activations rounded to bfloat16,
  accumulation in fp32) where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX),
  ``fp32`` elsewhere; :func:`choose_precision` decides, and ``fp32`` or ``bf16`` forces it;
- ``threads`` inference threads (OpenVINO's default, every core, when None);
- a latency hint (one stream: one image at a time, all threads on it);
- an on-disk cache of compiled models, when ``cache_dir`` is given: the folder
  :func:`cache_folder` names after the OpenVINO version, the CPU and the precision, so a
  cache copied to another machine or read by another OpenVINO is never reused.

and keeps one infer request, whose input tensors share the torch tensors' memory.
"""

from __future__ import annotations

import hashlib
import io
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

from ..errors import UserError
from ..methods import INFERENCE_PRECISIONS, InferencePrecision
from ..specs import ComponentSpec
from .engine import Engine, check_io_names, torch_dtype

INSTALL_HINT = "`pip install 'trt-restore[openvino]'` (or `pip install openvino`)"
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags (as /proc/cpuinfo names them) of native bf16 arithmetic."""
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
"""OpenVINO's INFERENCE_PRECISION_HINT for each precision name."""
_OV_TYPES = {
    "f32": torch.float32,
    "f16": torch.float16,
    "bf16": torch.bfloat16,
    "i64": torch.int64,
    "i32": torch.int32,
    "boolean": torch.bool,
}


def load_openvino() -> ModuleType:
    """The ``openvino`` module, or a clear error saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise UserError(f"the openvino backend needs OpenVINO, which is not installed; {INSTALL_HINT}") from None
    return openvino


@cache
def _core():
    """One OpenVINO Core per process (it loads the CPU plugin once)."""
    return load_openvino().Core()


def openvino_version() -> str | None:
    """The installed OpenVINO's version (``"2026.4.1"``), None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.get_version().split("-")[0]


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, None where that file cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return None


def has_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively: AVX512-BF16 or AMX in /proc/cpuinfo, else OpenVINO's BF16 capability."""
    flags = cpu_flags()
    if flags is not None:
        return bool(flags & NATIVE_BF16_FLAGS)
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_precision(precision: InferencePrecision = "auto") -> str:
    """``"bf16"`` or ``"fp32"``: ``auto`` takes bf16 where :func:`has_native_bf16`, and a forced bf16 needs
    OpenVINO's bf16 support on this CPU."""
    if precision not in INFERENCE_PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose one of: {', '.join(INFERENCE_PRECISIONS)}")
    if precision == "auto":
        return "bf16" if has_native_bf16() else "fp32"
    if precision == "bf16" and "BF16" not in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise UserError("OpenVINO cannot run bf16 on this CPU (it needs AVX-512 or AMX); use --precision fp32 or auto")
    return precision


FP32_UNDER_AUTO: dict[str, frozenset[str]] = {"reld": frozenset({"decoder"})}
"""Components that ``auto`` keeps in fp32 for a method, because in bf16 the result misses 40 dB against fp32:
RELD's decoder (bundled models, 64², 3 iterations: 33.5 dB with every network in bf16, 71.5 dB with the decoder
alone in fp32, 33.5 dB with the decoder VJP, encoder or UNet alone in fp32)."""


def component_precision(precision: InferencePrecision, method: str, component: str) -> InferencePrecision:
    """``precision`` for one of ``method``'s components: ``auto`` becomes fp32 for those in :data:`FP32_UNDER_AUTO`."""
    return "fp32" if precision == "auto" and component in FP32_UNDER_AUTO.get(method, ()) else precision


def cache_folder(root: str | Path, precision: str) -> Path:
    """``root/<OpenVINO version>-<CPU>-<precision>``: compiled models are reused only by the same OpenVINO on the same CPU.

    The CPU part is OpenVINO's device name and a digest of the CPU's flags and OpenVINO's
    optimisation capabilities (two CPUs of one name can differ in their vector units).
    """
    core = _core()
    name = re.sub(r"[^A-Za-z0-9]+", "-", core.get_property("CPU", "FULL_DEVICE_NAME")).strip("-")
    features = sorted(cpu_flags() or ()) + sorted(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    digest = hashlib.sha256(" ".join(features).encode()).hexdigest()[:12]
    return Path(root) / f"openvino-{openvino_version()}-{name}-{digest}-{precision}"


class OpenVinoEngine(Engine):
    """A compiled OpenVINO model over one ONNX graph and its infer request, on the CPU (see the module docstring)."""

    backend = "openvino"

    def __init__(
        self,
        model: str | Path | bytes,
        spec: ComponentSpec,
        *,
        threads: int | None = None,
        precision: InferencePrecision = "auto",
        cache_dir: str | Path | None = None,
    ):
        super().__init__(spec, torch.device("cpu"))
        self.precision = choose_precision(precision)
        core = _core()
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise UserError(f"ONNX graph '{model}' not found; export it first with `trt-restore export`")
        try:
            graph = core.read_model(io.BytesIO(model) if isinstance(model, bytes) else str(model))
        except RuntimeError as error:  # OpenVINO's frontends raise RuntimeError with a multi-line report
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"component '{spec.name}': OpenVINO cannot read the graph: {reason}; export it again") from None
        self._check_graph(graph)
        config = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[self.precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        if cache_dir is not None:
            folder = cache_folder(cache_dir, self.precision)
            folder.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(folder)
        self.compiled = core.compile_model(graph, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _check_graph(self, graph) -> None:
        inputs = {port.get_any_name(): port for port in graph.inputs}
        check_io_names(self.spec, inputs, [port.get_any_name() for port in graph.outputs], "ONNX graph")
        for tensor in self.spec.inputs:
            found = inputs[tensor.name].get_element_type().get_type_name()
            if _OV_TYPES.get(found) != torch_dtype(tensor.dtype):
                raise UserError(
                    f"component '{self.spec.name}': the ONNX graph takes '{tensor.name}' as {found} "
                    f"but its spec says {tensor.dtype}; export it again"
                )

    def _run(self, feeds: dict[str, torch.Tensor], sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        results = self.request.infer({name: x.numpy() for name, x in feeds.items()}, share_inputs=True)
        # The request reuses its output buffers on the next call, so the outputs are copied out.
        return {t.name: torch.from_numpy(results[t.name].copy()) for t in self.spec.outputs}

    def _release(self) -> None:
        del self.request, self.compiled
