"""ONNX to a serialized TensorRT engine: parse, one optimisation profile per size range, strongly typed build.

The network is strongly typed: every tensor keeps the type the ONNX graph gives it, so
an fp16 engine comes from an fp16 export (whose normalisations stay in fp32), and
``precision`` only checks that the graph is what the caller says it is.

TensorRT-RTX builds ahead of time, without a GPU, for a list of target GPU compute
capabilities (by default its portable set: 8.0 and later). Enterprise TensorRT builds
on, and for, the GPU of the machine it runs on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from trt_restore.errors import UserError
from trt_restore.files import atomic_output
from trt_restore.runtime.device import compute_capability
from trt_restore.runtime.profile import Profile
from trt_restore.runtime.trt_loader import load_trt, trt_logger
from trt_restore.specs import ComponentSpec

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0")
"""TensorRT-RTX targets when none are asked for: Ampere, Ada and Blackwell RTX GPUs. Targets are
always set explicitly: a portable build (no target) runs out of memory on UNets in TensorRT-RTX 1.7."""
_MAX_PARSER_ERRORS = 3


def _rtx_capability(trt, target: str):
    member = getattr(trt.ComputeCapability, "SM" + target.replace(".", ""), None)
    if member is None or target.count(".") != 1:
        supported = [
            f"{name[2:-1]}.{name[-1]}" for name in trt.ComputeCapability.__members__ if name.startswith("SM")
        ]
        raise UserError(f"unknown compute capability '{target}'; TensorRT-RTX builds for: {', '.join(supported)}")
    return member


def build_targets(flavour: str, requested: Sequence[str] | None = None) -> list[str]:
    """The GPU compute capabilities an engine will run on, as the bundle manifest records them.

    ``tensorrt_rtx``: ``requested`` (e.g. ``["7.5", "8.6"]``) or :data:`RTX_DEFAULT_TARGETS`.
    ``tensorrt``: the current GPU's, the only one it can build for.
    """
    if flavour == "tensorrt_rtx":
        requested = list(requested or RTX_DEFAULT_TARGETS)
        trt, _, _ = load_trt(flavour)
        for target in requested:
            _rtx_capability(trt, target)
        return list(requested)
    current = compute_capability()
    if current is None:
        raise UserError(
            "TensorRT builds engines on the GPU that will run them, and this machine has none; "
            "`pip install tensorrt-rtx` to build without a GPU"
        )
    if requested and list(requested) != [current]:
        raise UserError(
            f"TensorRT builds only for this machine's GPU (compute capability {current}), not for {', '.join(requested)}; "
            "build on a machine with that GPU, or use tensorrt-rtx"
        )
    return [current]


def _dtype_names(trt) -> dict:
    return {
        trt.DataType.FLOAT: "float32",
        trt.DataType.HALF: "float16",
        trt.DataType.BF16: "bfloat16",
        trt.DataType.INT32: "int32",
        trt.DataType.INT64: "int64",
        trt.DataType.BOOL: "bool",
    }


def _parse(trt, logger, onnx_path: Path, spec: ComponentSpec):
    """Builder and network parsed from the file (which finds the dynamo exporter's side file of weights)."""
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i) for i in range(min(parser.num_errors, _MAX_PARSER_ERRORS))]
        reasons = "; ".join(f"{e.node_name() or 'graph'}: {e.desc().rstrip('.')}" for e in errors) or "unknown error"
        raise UserError(
            f"component '{spec.name}': TensorRT cannot parse {onnx_path.name}: {reasons}; "
            "export it again with `trt-restore export`"
        )
    return builder, network, parser


def _check_network(trt, network, spec: ComponentSpec, precision: str) -> None:
    """The parsed inputs must be the spec's, and the graph's float types must match ``precision``."""
    names = _dtype_names(trt)
    inputs = {network.get_input(i).name: names.get(network.get_input(i).dtype) for i in range(network.num_inputs)}
    expected = {t.name: t.dtype for t in spec.inputs}
    if inputs != expected:
        raise UserError(f"component '{spec.name}': the ONNX graph takes {inputs} but its spec says {expected}; export it again")
    types = {
        layer.get_output(j).dtype
        for layer in (network.get_layer(i) for i in range(network.num_layers))
        for j in range(layer.num_outputs)
    }
    check_precision(spec, precision, trt.DataType.HALF in types)


def check_precision(spec: ComponentSpec, precision: str, has_fp16: bool) -> None:
    """Refuse a graph whose float types contradict ``precision`` (fp16 graphs have fp16 tensors, fp32 ones none)."""
    if (precision == "fp16") != has_fp16:
        found = "has fp16 tensors" if has_fp16 else "computes in fp32 only"
        raise UserError(
            f"component '{spec.name}': precision {precision} was asked for, but its ONNX graph {found}; "
            f"export it with precision {precision} (the graph decides the engine's precision)"
        )


def _add_profiles(builder, config, spec: ComponentSpec, profiles: Sequence[Profile]) -> None:
    for profile in profiles:
        for sizes in (profile.min, profile.opt, profile.max):
            if any(sizes.get(s, 0) % spec.multiple for s in ("H", "W")):
                raise UserError(
                    f"component '{spec.name}': profile image sizes must be multiples of {spec.multiple}, got {dict(sizes)}"
                )
        optimisation_profile = builder.create_optimization_profile()
        for tensor in spec.inputs:
            optimisation_profile.set_shape(tensor.name, *profile.shapes(tensor))
        config.add_optimization_profile(optimisation_profile)


def build_engine(
    onnx_path: str | Path,
    spec: ComponentSpec,
    *,
    profiles: Sequence[Profile],
    precision: str = "fp16",
    timing_cache: str | Path | None = None,
    workspace: int | None = None,
    compute_capabilities: Sequence[str] | None = None,
    flavour: str | None = None,
) -> bytes:
    """Serialized engine for the ONNX graph at ``onnx_path``, with one optimisation profile per entry of ``profiles``.

    ``workspace`` caps TensorRT's scratch memory in bytes. ``timing_cache`` is a file
    that is loaded if present and saved after the build (enterprise TensorRT; TensorRT-RTX
    has no timing cache). ``compute_capabilities``: see :func:`build_targets`.
    ``flavour``: ``"tensorrt"`` or ``"tensorrt_rtx"``; None takes the installed one.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX graph '{onnx_path}' not found; export it first with `trt-restore export`")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    if not profiles:
        raise UserError(f"component '{spec.name}': give at least one optimisation profile")
    trt, flavour, _ = load_trt(flavour)
    targets = build_targets(flavour, compute_capabilities)
    logger = trt_logger(flavour)
    logger.errors.clear()
    builder, network, _parser = _parse(trt, logger, onnx_path, spec)  # the network needs its parser alive
    _check_network(trt, network, spec, precision)
    config = builder.create_builder_config()
    if workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if flavour == "tensorrt_rtx":
        config.num_compute_capabilities = len(targets)
        for index, target in enumerate(targets):
            config.set_compute_capability(_rtx_capability(trt, target), index)
    use_timing_cache = timing_cache is not None and flavour == "tensorrt"
    if use_timing_cache:
        timing_cache = Path(timing_cache)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            log.warning("timing cache %s was made on another GPU or TensorRT; starting a new one", timing_cache)
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    _add_profiles(builder, config, spec, profiles)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        reason = logger.errors[-1] if logger.errors else "see the TensorRT log"
        raise UserError(
            f"component '{spec.name}': {flavour} could not build an engine: {reason}; "
            "try a smaller profile, more workspace or other compute capabilities"
        )
    if use_timing_cache:
        with atomic_output(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)
