"""The onnxruntime backend: the CPU execution provider, or CUDA / TensorRT where onnxruntime-gpu is installed.

On the CPU, tensors pass to and from onnxruntime as numpy views (no copies). On a GPU,
inputs and preallocated outputs are bound by device pointer (IO binding), so nothing
goes through host memory, and onnxruntime runs on the torch stream that was current
when the engine was created.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from google.protobuf.message import DecodeError

from ..errors import UserError
from ..specs import ComponentSpec
from .device import on_stream, resolve_device
from .engine import Engine, check_io_names, torch_dtype
from .onnx_fusion import fuse_attention

PROVIDER_CHAINS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}

_ORT_TYPES = {
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(bfloat16)": torch.bfloat16,
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
    "tensor(bool)": torch.bool,
}
_NUMPY_TYPES = {
    torch.float32: np.float32,
    torch.float16: np.float16,
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.bool: np.bool_,
}


def choose_providers(providers: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"tensorrt"`` for a request; ``"auto"`` takes CUDA when it is usable."""
    available = ort.get_available_providers()
    if providers == "auto":
        return "cuda" if "CUDAExecutionProvider" in available and torch.cuda.is_available() else "cpu"
    if providers not in PROVIDER_CHAINS:
        raise UserError(f"unknown onnxruntime providers '{providers}'; choose auto, {', '.join(PROVIDER_CHAINS)}")
    if PROVIDER_CHAINS[providers][0] not in available:
        raise UserError(
            f"this onnxruntime has no {PROVIDER_CHAINS[providers][0]} (it has {', '.join(available)}); "
            "`pip install onnxruntime-gpu` or use providers='cpu'"
        )
    if providers != "cpu" and not torch.cuda.is_available():
        raise UserError(f"onnxruntime providers '{providers}' need an NVIDIA GPU, and this machine has none; use 'cpu'")
    return providers


def with_fused_attention(source: str | bytes) -> str | bytes:
    """The graph with its attention fused, as bytes; ``source`` itself when nothing fuses or
    the graph cannot be read here (onnxruntime then reports the problem)."""
    try:
        model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
    except (DecodeError, OSError, ValueError):  # the session load below reports it clearly
        return source
    if not fuse_attention(model) or model.ByteSize() >= 2**31:
        return source
    return model.SerializeToString()


@functools.cache
def shared_cpu_arena() -> None:
    """Register one CPU memory arena with onnxruntime's environment, once per process.

    Sessions that opt in (``session.use_env_allocators``) allocate from it instead of an arena
    each. An arena keeps what it has grown to, so a method's sessions, which run one after
    another, need the largest one's peak instead of the sum of all of theirs.
    """
    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))


class OnnxRuntimeEngine(Engine):
    """A persistent onnxruntime session over one ONNX graph (a path, or bytes with the weights embedded).

    Session options: graph optimisation level ALL, memory pattern planning, ``threads``
    intra-op threads (onnxruntime's default when None); on the CPU, the process's one memory
    arena (:func:`shared_cpu_arena`). On the CPU and CUDA providers,
    attention runs as onnxruntime's fused kernel (:mod:`.onnx_fusion`).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        model: str | Path | bytes,
        spec: ComponentSpec,
        *,
        providers: str = "auto",
        threads: int | None = None,
    ):
        kind = choose_providers(providers)
        super().__init__(spec, resolve_device("cpu" if kind == "cpu" else "cuda"))
        if not isinstance(model, bytes):
            model = Path(model)
            if not model.is_file():
                raise UserError(f"ONNX graph '{model}' not found; export it first with `trt-restore export`")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_mem_pattern = True
        # Idle onnxruntime threads would otherwise spin and starve torch work in the same process.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if kind == "cpu":
            shared_cpu_arena()
            options.add_session_config_entry("session.use_env_allocators", "1")
        if threads is not None:
            options.intra_op_num_threads = threads
        chain = PROVIDER_CHAINS[kind]
        self._stream = torch.cuda.current_stream(self.device) if kind != "cpu" else None
        gpu_options = {"device_id": self.device.index, "user_compute_stream": str(self._stream.cuda_stream)} if self._stream else {}
        provider_options = [gpu_options if name != "CPUExecutionProvider" else {} for name in chain]
        source = model if isinstance(model, bytes) else str(model)
        if kind != "tensorrt":
            source = with_fused_attention(source)
        try:
            self.session = ort.InferenceSession(
                source, sess_options=options, providers=chain, provider_options=provider_options
            )
        except Exception as error:  # onnxruntime raises its own exception types, none of them exported
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"component '{spec.name}': onnxruntime cannot load the graph: {reason}; export it again") from None
        self._check_graph()

    def _check_graph(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        check_io_names(self.spec, [i.name for i in inputs], [o.name for o in outputs], "ONNX graph")
        graph_types = {i.name: i.type for i in inputs}
        for tensor in self.spec.inputs:
            if _ORT_TYPES.get(graph_types[tensor.name]) != torch_dtype(tensor.dtype):
                raise UserError(
                    f"component '{self.spec.name}': the ONNX graph takes '{tensor.name}' as {graph_types[tensor.name]} "
                    f"but its spec says {tensor.dtype}; export it again"
                )
        self._output_dtypes = {o.name: _ORT_TYPES[o.type] for o in outputs}

    def _run(self, feeds: dict[str, torch.Tensor], sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        names = [t.name for t in self.spec.outputs]
        if self._stream is None:
            arrays = self.session.run(names, {name: x.numpy() for name, x in feeds.items()})
            return {name: torch.from_numpy(array) for name, array in zip(names, arrays, strict=True)}
        binding = self.session.io_binding()
        index = self.device.index
        with on_stream(self._stream):
            for name, x in feeds.items():
                binding.bind_input(name, "cuda", index, _NUMPY_TYPES[x.dtype], tuple(x.shape), x.data_ptr())
            outputs = {}
            for tensor in self.spec.outputs:
                out = torch.empty(tensor.resolve(sizes), dtype=self._output_dtypes[tensor.name], device=self.device)
                binding.bind_output(tensor.name, "cuda", index, _NUMPY_TYPES[out.dtype], tuple(out.shape), out.data_ptr())
                outputs[tensor.name] = out
            self.session.run_with_iobinding(binding)
        return outputs

    def _release(self) -> None:
        del self.session  # onnxruntime frees the session, and its memory arena, with the last reference
