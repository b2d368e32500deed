"""The TensorRT backend: a deserialized engine run on torch CUDA tensors, on one CUDA stream.

Each engine's execution context uses ``USER_MANAGED`` device memory: its activations
live in a :class:`~trt_restore.runtime.device.ScratchBuffer` that all engines of a
pipeline share, since they run one after another on the same stream.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..specs import ComponentSpec
from .device import ScratchBuffer, on_stream, resolve_device
from .engine import Engine, check_io_names, torch_dtype
from .profile import select_profile
from .trt_loader import load_trt, trt_logger

NO_GPU_MESSAGE = "running a TensorRT engine needs an NVIDIA GPU with CUDA, and this machine has none; use the onnxruntime backend"


def _torch_dtypes(trt) -> dict:
    return {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.INT8: torch.int8,
        trt.DataType.UINT8: torch.uint8,
        trt.DataType.BOOL: torch.bool,
    }


class TensorRTEngine(Engine):
    """A serialized TensorRT (or TensorRT-RTX) engine behind its component spec.

    ``stream``: the torch CUDA stream to run on; None runs on the caller's current
    stream. ``scratch``: the shared activation memory; None gives the engine its own.
    ``flavour``: ``"tensorrt"`` or ``"tensorrt_rtx"``; None takes the installed one.
    """

    backend = "tensorrt"

    def __init__(
        self,
        serialized: bytes,
        spec: ComponentSpec,
        *,
        device: str | torch.device | None = None,
        stream: torch.cuda.Stream | None = None,
        scratch: ScratchBuffer | None = None,
        flavour: str | None = None,
    ):
        if not torch.cuda.is_available():
            raise UserError(NO_GPU_MESSAGE)
        if device is None:
            device = stream.device if stream is not None else scratch.device if scratch is not None else "cuda"
        super().__init__(spec, resolve_device(device))
        trt, self.flavour, self.version = load_trt(flavour)
        logger = trt_logger(self.flavour)
        logger.errors.clear()
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(logger)  # must outlive the engine
            self._check_validity(trt, serialized)
            self.cuda_engine = self._runtime.deserialize_cuda_engine(serialized)
            if self.cuda_engine is None:
                reason = logger.errors[-1] if logger.errors else "unreadable engine"
                raise UserError(
                    f"component '{spec.name}': {self.flavour} {self.version} cannot load its engine ({reason}); "
                    "rebuild it on this machine with `trt-restore build`"
                )
            self.context = self.cuda_engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        self._read_io(trt)
        self._stream = stream
        self.scratch = scratch if scratch is not None else ScratchBuffer(self.device)
        profiles = range(self.cuda_engine.num_optimization_profiles)
        self.scratch.reserve(max(self.cuda_engine.get_device_memory_size_for_profile_v2(p) for p in profiles))

    def _check_validity(self, trt, serialized: bytes) -> None:
        """TensorRT-RTX can say before loading whether an engine suits this GPU, driver and version."""
        if not hasattr(self._runtime, "get_engine_validity"):
            return
        validity, diagnostics = self._runtime.get_engine_validity(serialized)
        if validity == trt.EngineValidity.INVALID:
            reasons = [
                name.lower().replace("_", " ")
                for name, flag in trt.EngineInvalidityDiagnostics.__members__.items()
                if int(diagnostics) & int(flag)
            ]
            remedy = (
                "TensorRT-RTX runs on RTX-class GPUs (compute capability 7.5, 8.6, 8.9, 12.x); on this GPU, "
                "build with enterprise TensorRT (pip install tensorrt)"
                if "unsupported cc" in reasons
                else "rebuild it on this machine with `trt-restore build`"
            )
            raise UserError(
                f"component '{self.spec.name}': this engine cannot run here ({', '.join(reasons) or 'invalid engine'}); "
                f"{remedy}"
            )

    def _read_io(self, trt) -> None:
        engine = self.cuda_engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        check_io_names(self.spec, inputs, outputs, "TensorRT engine")
        dtypes = _torch_dtypes(trt)
        for tensor in self.spec.inputs:
            if dtypes.get(engine.get_tensor_dtype(tensor.name)) != torch_dtype(tensor.dtype):
                raise UserError(
                    f"component '{self.spec.name}': the engine takes '{tensor.name}' as {engine.get_tensor_dtype(tensor.name)} "
                    f"but its spec says {tensor.dtype}; rebuild it with `trt-restore build`"
                )
        self._output_dtypes = {name: dtypes[engine.get_tensor_dtype(name)] for name in outputs}
        self._ranges = [
            {name: tuple(tuple(dims) for dims in engine.get_tensor_profile_shape(name, p)[::2]) for name in inputs}
            for p in range(engine.num_optimization_profiles)
        ]

    def _run(self, feeds: dict[str, torch.Tensor], sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        shapes = {name: tuple(x.shape) for name, x in feeds.items()}
        profile = select_profile(self.spec.name, shapes, self._ranges)
        stream = self._stream if self._stream is not None else torch.cuda.current_stream(self.device)
        context = self.context
        with on_stream(stream):
            context.set_device_memory(self.scratch.pointer, self.scratch.nbytes)
            if context.active_optimization_profile != profile:
                context.set_optimization_profile_async(profile, stream.cuda_stream)
            for name, x in feeds.items():
                context.set_input_shape(name, shapes[name])
                context.set_tensor_address(name, x.data_ptr())
            outputs = {}
            for tensor in self.spec.outputs:
                shape = tuple(context.get_tensor_shape(tensor.name))
                out = torch.empty(shape, dtype=self._output_dtypes[tensor.name], device=self.device)
                context.set_tensor_address(tensor.name, out.data_ptr())
                outputs[tensor.name] = out
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run component '{self.spec.name}'; see the TensorRT log")
        return outputs

    def _release(self) -> None:
        """Free the context, its engine and the runtime, in the reverse order of creation, once the GPU has
        finished their work; leave the scratch."""
        torch.cuda.synchronize(self.device)
        del self.context
        del self.cuda_engine
        del self._runtime
        self.scratch.release()
