"""The ``.plan`` bundle writer: a method's engines (or ONNX graphs) and their manifest in one zip file.

The format is described in :mod:`trt_restore.runtime.bundle`, which reads it.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data
from trt_restore import __version__
from trt_restore.errors import UserError
from trt_restore.files import atomic_output
from trt_restore.methods import (
    BUNDLE_BACKENDS,
    INFERENCE_PRECISIONS,
    BundleBackend,
    components_for,
)
from trt_restore.runtime.bundle import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    describe_bundle,
)
from trt_restore.runtime.profile import Profile
from trt_restore.runtime.trt_loader import load_trt
from trt_restore.specs import ComponentSpec

from .build import PRECISIONS, build_engine, build_targets, check_precision

__all__ = ["build_bundle", "describe_bundle", "write_bundle"]

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
"""Fixed entry timestamps, so that the same content gives the same bytes."""
_CHUNK = 1 << 20
_PROTOBUF_LIMIT = 2**31


def _write_entry(archive: zipfile.ZipFile, name: str, source: bytes | Path) -> dict:
    """Store one entry, streaming files; returns its manifest record ``{"sha256", "size"}``."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    digest = hashlib.sha256()
    with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as src, archive.open(info, "w") as out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
    return {"sha256": digest.hexdigest(), "size": info.file_size}


def write_bundle(out_path: str | Path, manifest: Mapping, entries: Mapping[str, bytes | Path]) -> Path:
    """Write a bundle atomically: ``entries`` stored uncompressed, and ``manifest.json``.

    The written manifest is ``manifest`` plus ``format``, ``format_version`` and
    ``entries`` (each entry's sha256 and size).
    """
    if MANIFEST_NAME in entries:
        raise ValueError(f"'{MANIFEST_NAME}' is the bundle's own entry name")
    with atomic_output(out_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            records = {name: _write_entry(archive, name, source) for name, source in entries.items()}
            full = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "entries": records}
            _write_entry(archive, MANIFEST_NAME, json.dumps(full, indent=2).encode())
    return Path(out_path)


def onnx_digest(onnx_path: Path) -> str:
    """sha256 of an ONNX graph file followed by the external weight files it names, in name order."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    locations = sorted({ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)})
    digest = hashlib.sha256()
    for path in [onnx_path, *(onnx_path.parent / location for location in locations)]:
        with open(path, "rb") as src:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _has_fp16(model: onnx.ModelProto) -> bool:
    """Whether the graph holds fp16 weights or casts to fp16 (how an fp16 export shows)."""
    fp16 = onnx.TensorProto.FLOAT16
    graph = model.graph
    return (
        any(t.data_type == fp16 for t in graph.initializer)
        or any(v.type.tensor_type.elem_type == fp16 for v in [*graph.input, *graph.output])
        or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute) for n in graph.node)
    )


def embedded_onnx(onnx_path: Path, spec: ComponentSpec, precision: str) -> bytes:
    """The ONNX graph as one self-contained file (external weights embedded), checked against ``precision``."""
    model = onnx.load(str(onnx_path))
    check_precision(spec, precision, _has_fp16(model))
    if model.ByteSize() >= _PROTOBUF_LIMIT:
        raise UserError(
            f"component '{spec.name}' is larger than 2 GB, too large for a single-file ONNX graph; use the tensorrt backend"
        )
    return model.SerializeToString()


def build_bundle(
    method: str,
    components: Mapping[str, tuple[Path, ComponentSpec]],
    out_path: str | Path,
    *,
    backend: BundleBackend = "tensorrt",
    precision: str = "fp16",
    profile: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = ((64, 64), (256, 256), (512, 512)),
    batch: tuple[int, int, int] = (1, 1, 4),
    meta: Mapping | None = None,
    model_set: str = "custom",
    timing_cache: str | Path | None = None,
    compute_capabilities: Sequence[str] | None = None,
) -> Path:
    """Build ``method``'s components into a bundle at ``out_path``.

    ``components`` maps each component name to its exported ONNX graph and spec.
    ``backend="tensorrt"`` builds one engine per component, for the (min, opt, max)
    image sizes ``profile`` (height, width) and batch sizes ``batch``;
    ``backend="onnxruntime"`` stores the ONNX graphs instead, for CPU deployment;
    ``backend="openvino"`` stores fp32 ONNX graphs and records ``precision`` (``auto``,
    ``fp32`` or ``bf16``), the arithmetic OpenVINO compiles them to where the bundle runs.
    ``meta`` is the model set's metadata that the pipelines need.
    """
    if backend not in BUNDLE_BACKENDS:
        raise UserError(f"unknown backend '{backend}'; choose one of: {', '.join(BUNDLE_BACKENDS)}")
    allowed = INFERENCE_PRECISIONS if backend == "openvino" else PRECISIONS
    if precision not in allowed:
        raise UserError(f"unknown precision '{precision}' for {backend}; choose one of: {', '.join(allowed)}")
    missing = [name for name in components_for(method) if name not in components]
    if missing:
        raise UserError(f"method '{method}' needs components {', '.join(missing)}, which were not given; export them first")
    sizes = Profile.for_images(profile, batch)
    tensorrt = None
    if backend == "tensorrt":
        _, flavour, version = load_trt()
        targets = build_targets(flavour, compute_capabilities)
        tensorrt = {"flavour": flavour, "version": version, "compute_capabilities": targets}
    entries: dict[str, bytes] = {}
    records = {}
    for name, (onnx_path, spec) in components.items():
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise UserError(f"ONNX graph '{onnx_path}' not found; export it first with `trt-restore export`")
        if backend == "tensorrt":
            entry = f"{name}.plan"
            entries[entry] = build_engine(
                onnx_path,
                spec,
                profiles=[sizes],
                precision=precision,
                timing_cache=timing_cache,
                compute_capabilities=targets,
                flavour=flavour,
            )
        else:
            entry = f"{name}.onnx"
            entries[entry] = embedded_onnx(onnx_path, spec, "fp32" if backend == "openvino" else precision)
        records[name] = {
            "entry": entry,
            "spec": spec.to_json(),
            "profiles": [sizes.to_json()],
            "onnx_sha256": onnx_digest(onnx_path),
        }
    manifest = {
        "created_by": f"trt-restore {__version__}",
        "method": method,
        "model_set": {"name": model_set, "meta": dict(meta or {})},
        "backend": backend,
        "precision": precision,
        "tensorrt": tensorrt,
        "components": records,
    }
    return write_bundle(out_path, manifest, entries)
