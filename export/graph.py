"""ONNX graph cleanup and saving, shared by every exporter.

Graphs are saved as one self-contained ``.onnx`` file with the weights embedded, which
is what a ``.plan`` bundle stores and what any parser reads from bytes. Only a graph
over protobuf's 2 GB limit gets its weights in a side file ``<name>.onnx.data``; such a
file must be parsed from its path (TensorRT's ``parse_from_file``).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
import onnxruntime

from trt_restore.errors import UserError
from trt_restore.specs import ComponentSpec

PROTOBUF_LIMIT = 2**31 - 1
SPEC_METADATA_KEY = "trt_restore.spec"
ONNXRUNTIME_DEFAULT_SEVERITY = 2  # warnings and errors


@contextmanager
def _quiet_onnxruntime():
    """onnxruntime's optimiser warns about the partial shape subgraphs constant folding hands it."""
    onnxruntime.set_default_logger_severity(3)
    try:
        yield
    finally:
        onnxruntime.set_default_logger_severity(ONNXRUNTIME_DEFAULT_SEVERITY)


def clean(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants (shape arithmetic included where shapes are static), drop dead nodes, sort."""
    graph = gs.import_onnx(model)
    with _quiet_onnxruntime():
        graph.fold_constants().cleanup().toposort()
    cleaned = gs.export_onnx(graph)
    cleaned.ir_version = model.ir_version
    del cleaned.opset_import[:]
    cleaned.opset_import.extend(model.opset_import)
    cleaned.producer_name, cleaned.producer_version = model.producer_name, model.producer_version
    return cleaned


def save(model: onnx.ModelProto, path: Path, spec: ComponentSpec) -> None:
    """Write ``model`` (with ``spec`` as JSON metadata) to ``path`` and check it with ``onnx.checker``."""
    del model.metadata_props[:]
    model.metadata_props.add(key=SPEC_METADATA_KEY, value=json.dumps(spec.to_json()))
    path.parent.mkdir(parents=True, exist_ok=True)
    side_file = path.with_name(path.name + ".data")
    side_file.unlink(missing_ok=True)
    if model.ByteSize() < PROTOBUF_LIMIT:
        onnx.save_model(model, path)
    else:
        onnx.save_model(model, path, save_as_external_data=True, location=side_file.name)
    onnx.checker.check_model(str(path))


def read_spec(path: str | Path) -> ComponentSpec:
    """The component spec stored in an ONNX file written by :func:`save`."""
    model = onnx.load_model(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == SPEC_METADATA_KEY:
            return ComponentSpec.from_json(json.loads(prop.value))
    raise UserError(f"{path} carries no component spec ({SPEC_METADATA_KEY}); export it with `trt-restore export`")
