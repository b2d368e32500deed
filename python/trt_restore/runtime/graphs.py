"""CUDA graphs for the per-step work of a sampling loop.

A diffusion loop calls the same networks and elementwise steps with the same shapes at
every step, so on a GPU the step is captured once per run as a ``torch.cuda.CUDAGraph``
and replayed at each step: the host launches one graph instead of hundreds of kernels.

When a loop may be captured (:func:`capture_blocker`; ``--cuda-graphs off`` turns it off):

- the device is CUDA, and every engine runs on a backend whose work can be recorded in
  torch's stream capture. TensorRT engines can: they enqueue on torch's current stream, the
  input shapes are set by the warm-up call, and the shared ``USER_MANAGED`` scratch memory
  does not move once the engines are loaded (TensorRT-RTX contexts are also asked
  ``is_stream_capturable``). torch eager engines can. onnxruntime cannot: its CUDA and
  TensorRT providers run on their own stream and allocator, outside torch's capture;
- the step has static shapes and no host synchronisation: no ``.item()``, no ``bool(tensor)``,
  no NaN/Inf check that waits for the GPU (:class:`LoopGraphs` defers that check to the end
  of the loop), and no Python branch on tensor values;
- whatever changes from step to step reaches the step as a tensor argument: the state, the
  timestep and its schedule coefficients (a row of a device table, see
  :func:`step_table`), the Gaussian noise. Noise is drawn outside the graph from the
  run's CPU generator, exactly as the eager loop draws it, and copied into the graph's input
  buffer, so that both paths compute the same numbers bit for bit.

Per method: ``ldm-sr`` captures its whole step (UNet, x̂₀/ε̂ split, DDIM update), so the
loop is a sequence of replays with no host work besides the copies of the next inputs.
``ddrm`` and ``ddrm-ldm`` capture the predictor and the two Vᵀ projections; the fused
spectral update (``kernels/ddrm_update.cu``) takes σ' by value and the matching V runs
after it, eagerly. ``reld`` runs eagerly: for operators without a closed-form data step
its t-update is a conjugate-gradient solve that stops on a residual tested on the host.
The ``indigo`` methods run eagerly: ``--adapt`` fine-tunes the INN with autograd and Adam
between steps, which a graph cannot record, and guidance switches on at a step chosen on
the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar, get_args

import torch

from ..errors import UserError

log = logging.getLogger(__name__)

CudaGraphs = Literal["auto", "off"]
"""``--cuda-graphs``: ``auto`` captures the loop step where :func:`capture_blocker` allows it; ``off`` never."""
GRAPH_MODES: tuple[CudaGraphs, ...] = get_args(CudaGraphs)
CAPTURABLE_BACKENDS = frozenset({"torch", "tensorrt"})

Result = TypeVar("Result")


def check_mode(mode: str) -> None:
    """A clear error unless ``mode`` is one of :data:`GRAPH_MODES`."""
    if mode not in GRAPH_MODES:
        raise UserError(f"--cuda-graphs must be one of {', '.join(GRAPH_MODES)}, got '{mode}'")


def capturing() -> bool:
    """Whether torch's current CUDA stream is being captured into a graph."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def capture_blocker(
    mode: CudaGraphs, device: torch.device, engines: Iterable[Any], method_blocker: str | None = None
) -> str | None:
    """Why a loop on ``device`` over ``engines`` runs eagerly, or None when its step may be captured."""
    check_mode(mode)
    if mode == "off":
        return "--cuda-graphs off"
    if device.type != "cuda":
        return f"{device.type} is not a CUDA device"
    if method_blocker is not None:
        return method_blocker
    for engine in engines:
        backend = getattr(engine, "backend", None)
        if backend not in CAPTURABLE_BACKENDS:
            return f"component '{engine.spec.name}' runs on {backend}, whose work torch's stream capture cannot record"
    return None


def stream_capture_blocker(engines: Iterable[Any], stream: torch.cuda.Stream) -> str | None:
    """A TensorRT-RTX context that says it cannot be captured on ``stream`` (asked after its shapes are set)."""
    for engine in engines:
        context = getattr(getattr(engine, "inner", engine), "context", None)
        if hasattr(context, "is_stream_capturable") and not context.is_stream_capturable(stream.cuda_stream):
            return f"the TensorRT context of component '{engine.spec.name}' is not stream capturable"
    return None


def step_table(rows: Sequence[Sequence[float]], device: torch.device) -> torch.Tensor:
    """Per-step scalars as a float32 (steps, k) table on ``device``; the step reads row k as a tensor.

    The values are computed on the host in double precision and rounded once to float32,
    as a Python float is when it multiplies a float32 tensor.
    """
    return torch.tensor(rows, dtype=torch.float64).to(device=device, dtype=torch.float32)


class CapturedStep:
    """A step function over fixed-shape CUDA tensors, captured at its first call and replayed after.

    The first call runs the step eagerly on a side stream (the warm-up, whose outputs are
    that call's result: lazy initialisation of cuBLAS, the NVRTC kernels and TensorRT
    happens there), then records it into a CUDA graph that reads static copies of the
    inputs. Later calls copy their inputs into those buffers and replay: the outputs are
    the graph's own buffers, overwritten by the next call, so a caller copies what it keeps.
    If the capture fails, a warning says why and the step runs eagerly from then on.
    CPU inputs always run eagerly.
    """

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, ...]], engines: Iterable[Any] = ()):
        self.fn = fn
        self.engines = list(engines)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[torch.Tensor] = []
        self.outputs: tuple[torch.Tensor, ...] = ()
        self.eager = False

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.graph is not None:
            for static, value in zip(self.inputs, inputs, strict=True):
                if static is not value:
                    static.copy_(value)
            self.graph.replay()
            return self.outputs
        if self.eager or not inputs[0].is_cuda:
            return self.fn(*inputs)
        self.eager = True  # unless the capture below succeeds
        return self._warm_up_and_capture(inputs)

    def _warm_up_and_capture(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        device = inputs[0].device
        caller = torch.cuda.current_stream(device)
        stream = torch.cuda.Stream(device)
        self.inputs = [x.clone() for x in inputs]
        stream.wait_stream(caller)
        with torch.cuda.stream(stream):
            result = self.fn(*self.inputs)
            blocker = stream_capture_blocker(self.engines, stream)
            if blocker is None:
                blocker = self._capture(stream)
        caller.wait_stream(stream)
        if blocker is not None:
            log.warning("CUDA graph capture of the loop step failed (%s); running it eagerly", blocker)
            self.inputs = []
        return result

    def _capture(self, stream: torch.cuda.Stream) -> str | None:
        """Record the step into :attr:`graph`; the reason on failure."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                outputs = self.fn(*self.inputs)
        except RuntimeError as error:
            return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self.graph, self.outputs, self.eager = graph, tuple(outputs), False
        return None


class LoopGraphs:
    """Runs one loop of a pipeline with its step captured where :func:`capture_blocker` allows it.

    While captured steps run, the components' NaN/Inf check cannot wait for the GPU: the
    models AND their outputs' finiteness into a device flag (``models.deferred_checks``),
    read once after the loop. If it is false, a warning says so and the loop reruns eagerly
    from the same generator state, where each component's check reruns the offending call on
    its fp32 fallback engine, so the result is that of the eager loop.
    """

    def __init__(self, models: Any, mode: CudaGraphs, device: torch.device, method_blocker: str | None = None):
        self.models = models
        self.engines = list(models.engines.values())
        self.blocker = capture_blocker(mode, device, self.engines, method_blocker)
        self.device = device
        if self.blocker is not None and device.type == "cuda":
            log.debug("the loop runs eagerly: %s", self.blocker)

    @property
    def capture(self) -> bool:
        return self.blocker is None

    def step(self, fn: Callable[..., tuple[torch.Tensor, ...]], calls: int) -> Callable[..., tuple[torch.Tensor, ...]]:
        """``fn``, captured when the loop allows it and it runs more than once."""
        return CapturedStep(fn, self.engines) if self.capture and calls > 1 else fn

    def run(self, loop: Callable[[], Result], generator: torch.Generator) -> Result:
        """``loop()``; it builds its steps with :meth:`step` and draws its noise from ``generator``."""
        if not self.capture:
            return loop()
        state = generator.get_state()
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        with self.models.deferred_checks(finite):
            result = loop()
        if bool(finite):
            return result
        log.warning("a captured loop step produced NaN or Inf; rerunning the loop eagerly")
        generator.set_state(state)
        self.blocker = "a captured step produced NaN or Inf"
        return loop()
