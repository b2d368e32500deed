"""GroupNorm in the exported graphs: the exporter's form against ONNX's GroupNormalization op, per CPU backend.

torch's exporter writes ``GroupNorm(x)`` as ``Reshape → InstanceNormalization → Reshape →
Mul → Add``; opset 21 has one op for it, ``GroupNormalization(x, scale[C], bias[C])``.
This script rewrites every such chain of the bundled networks into the one op (opset 21)
and times both forms, one thread, on onnxruntime (attention fused as the backend loads it)
and on OpenVINO in fp32 and bf16, and records which kernels OpenVINO compiled the norms
to. The result decides which form the graphs are exported in.

    .venv/bin/python benchmarks/groupnorm_forms.py --json benchmarks/cpu/backends/groupnorm.json
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
from onnx import helper, numpy_helper
from trt_restore.export.model_sets import load_model_set
from trt_restore.export.onnx_export import export_component
from trt_restore.runtime.onnx_fusion import _Graph, _prune_and_sort, fuse_attention
from trt_restore.runtime.openvino_backend import openvino_version

NETWORKS = (("pixel_unet", "ddrm"), ("sr_unet", "ldm-sr"), ("decoder", "ldm-sr"))
"""(component, method) of the bundled networks measured, at a 256×256 image."""


def as_group_normalization(model: onnx.ModelProto) -> int:
    """Rewrite each exported GroupNorm chain into GroupNormalization-21 in place; returns how many."""
    graph = _Graph(model.graph)
    fused = []
    for norm in [n for n in model.graph.node if n.op_type == "InstanceNormalization"]:
        before = graph.input_of(norm.input[0], "Reshape")
        after = graph.only_consumer(norm.output[0], "Reshape")
        scale = after and graph.only_consumer(after.output[0], "Mul")
        shift = scale and graph.only_consumer(scale.output[0], "Add")
        groups = graph.constant(norm.input[1])
        weight = shift and graph.constant(scale.input[1])
        bias = shift and graph.constant(shift.input[1])
        if before is None or weight is None or bias is None or groups is None:
            continue
        epsilon = next(a.f for a in norm.attribute if a.name == "epsilon")
        names = (f"{norm.name}/group_scale", f"{norm.name}/group_bias")
        for name, value in zip(names, (weight, bias)):
            model.graph.initializer.append(numpy_helper.from_array(value.reshape(-1).astype(np.float32), name))
        output = shift.output[0]
        shift.output[0] = f"{output}/unfused"
        fused.append(helper.make_node(
            "GroupNormalization", [before.input[0], *names], [output], epsilon=epsilon, num_groups=groups.size,
            name=f"{norm.name}/group_normalization",
        ))
    model.graph.node.extend(fused)
    _prune_and_sort(model.graph)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 21
    return len(fused)


def best_ms(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def measure(model: onnx.ModelProto, feeds: dict, repeats: int) -> dict:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    fused = copy.deepcopy(model)
    fuse_attention(fused)
    session = ort.InferenceSession(fused.SerializeToString(), options, providers=["CPUExecutionProvider"])
    reference = session.run(None, feeds)[0]
    result = {"onnxruntime_ms": best_ms(lambda: session.run(None, feeds), repeats)}
    core = ov.Core()
    for precision in ("f32", "bf16"):
        config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        compiled = core.compile_model(core.read_model(io.BytesIO(model.SerializeToString())), "CPU", config)
        request = compiled.create_infer_request()
        output = request.infer(feeds)[0]
        kernels = sorted({
            op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops()
            if any(word in op.get_rt_info()["layerType"].astype(str) for word in ("Norm", "MVN"))
        })
        result[f"openvino_{precision}_ms"] = best_ms(lambda request=request: request.infer(feeds), repeats)
        result[f"openvino_{precision}_norm_kernels"] = kernels
        result[f"openvino_{precision}_max_abs_diff"] = float(np.abs(output - reference).max())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, the best is kept (default 3)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    models = load_model_set("bundled")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for component, method in NETWORKS:
            path = Path(folder) / f"{component}.onnx"
            spec = export_component(models.wrapper(component, method), path, example_size=(args.size, args.size))
            generator = np.random.default_rng(0)
            feeds = {
                t.name: (generator.random(t.resolve({"B": 1, "H": args.size, "W": args.size})) * (500 if t.name == "timestep" else 1)).astype(np.float32)
                for t in spec.inputs
            }
            exported = onnx.load(str(path))
            grouped = copy.deepcopy(exported)
            count = as_group_normalization(grouped)
            row = {"network": component, "size": args.size, "group_norms": count}
            for form, model in (("instance_norm", exported), ("group_normalization_21", grouped)):
                row[form] = measure(model, feeds, args.repeats)
            print(json.dumps(row), flush=True)
            rows.append(row)
    machine = {"onnxruntime": ort.__version__, "openvino": openvino_version(), "threads": 1}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "networks": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
