"""Graph rewrites for onnxruntime only, applied when a graph is loaded into a session.

The exported graphs stay standard ONNX (TensorRT parses them); these rewrites use
onnxruntime's own operators where its generic kernels are slow.

Attention. torch's exporter writes ``scaled_dot_product_attention`` with the default
scale ``s = 1/√d`` as

    O = merge(softmax((Q_h·√s)(K_hᵀ·√s)) V_h),   Q_h = transpose(reshape(q, [B, S, h, d]), [0, 2, 1, 3])

(and likewise for K_h, V_h; ``merge`` transposes back and reshapes to ``[B, S, h·d]``).
onnxruntime runs that as two batched matmuls around a softmax over the whole S × L score
matrix, which dominates the UNets and the autoencoder at 256 px. :func:`fuse_attention`
replaces each such subgraph, from the projections ``q, k, v`` to ``O``, by one
``com.microsoft.MultiHeadAttention(q, k, v, num_heads=h)`` node: the same function, in
one fused kernel. A constant scale root ``r`` on both sides (``Q_h·r``, ``K_hᵀ·r``) fuses
too, with the node's ``scale = r²``, and the query/key head size may exceed the value's:
that is how a tiled graph's attention blocks carry their context offsets
(``export/attention_context.py``). Anything else (masks, a softmax output that is used
again, as in the decoder VJP's backward) does not match and is left as it is.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

CONTRIB_DOMAIN = "com.microsoft"


class _Graph:
    """Producer, consumer and constant look-ups over a graph's nodes."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer = {name: node for node in graph.node for name in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = {init.name: init for init in graph.initializer}

    def input_of(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The node of type ``op_type`` that produces ``name``, if that is what produces it."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The single node that reads ``name``, if it is of type ``op_type`` and no graph output is ``name``."""
        consumers = self.consumers.get(name, [])
        if (
            len(consumers) != 1
            or consumers[0].op_type != op_type
            or name in {o.name for o in self.graph.output}
        ):
            return None
        return consumers[0]

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a ``Constant`` node's output."""
        if name in self.constants:
            return numpy_helper.to_array(self.constants[name])
        node = self.input_of(name, "Constant")
        if node is not None and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _split_heads(graph: _Graph, name: str, perm: list[int]) -> tuple[str, int] | None:
    """``(x, h)`` where ``name = transpose(reshape(x, [B, -1, h, d]), perm)`` with a constant ``h``."""
    transpose = graph.input_of(name, "Transpose")
    if transpose is None or list(_attribute(transpose, "perm", [])) != perm:
        return None
    reshape = graph.input_of(transpose.input[0], "Reshape")
    if reshape is None:
        return None
    heads = _heads_of_shape(graph, reshape.input[1])
    return None if heads is None else (reshape.input[0], heads)


def _heads_of_shape(graph: _Graph, name: str) -> int | None:
    """``h`` of a 4-D reshape target ``[B, -1, h, d]``: a constant, or a ``Concat`` whose third part is one."""
    shape = graph.constant(name)
    if shape is not None:
        return int(shape[2]) if shape.shape == (4,) else None
    parts = graph.input_of(name, "Concat")
    heads = (
        graph.constant(parts.input[2])
        if parts is not None and len(parts.input) == 4
        else None
    )
    return int(heads.reshape(-1)[0]) if heads is not None and heads.size == 1 else None


def _default_scale_root(graph: _Graph, name: str) -> bool:
    """Whether ``name`` is the exporter's ``√(1/√d)``: ``Sqrt(Cast?(Div(1, Sqrt(·))))``."""
    root = graph.input_of(name, "Sqrt")
    inner = root and graph.producer.get(root.input[0])
    if inner is not None and inner.op_type == "Cast":
        inner = graph.producer.get(inner.input[0])
    if (
        inner is None
        or inner.op_type != "Div"
        or graph.input_of(inner.input[1], "Sqrt") is None
    ):
        return False
    numerator = graph.constant(inner.input[0])
    return (
        numerator is not None
        and numerator.size == 1
        and float(numerator.reshape(-1)[0]) == 1.0
    )


def _scaled_heads(graph: _Graph, name: str, perm: list[int]) -> tuple[str, int, float | None] | None:
    """``_split_heads`` of the tensor that ``name`` multiplies by a scale root: the default one
    (``None``) or a constant ``r`` (the scale is then ``r²``)."""
    scaled = graph.input_of(name, "Mul")
    if scaled is None:
        return None
    root = graph.constant(scaled.input[1])
    if root is not None and root.size == 1:
        root = float(root.reshape(-1)[0])
    elif _default_scale_root(graph, scaled.input[1]):
        root = None
    else:
        return None
    heads = _split_heads(graph, scaled.input[0], perm)
    return None if heads is None else (*heads, root)


def _match_attention(
    graph: _Graph, softmax: onnx.NodeProto
) -> tuple[list[str], str, int, float | None] | None:
    """``([q, k, v], merged output, heads, scale)`` for an exported attention around ``softmax``
    (``scale`` None: the default ``1/√d``)."""
    if _attribute(softmax, "axis", -1) not in (-1, 3):
        return None
    scores = graph.input_of(softmax.input[0], "MatMul")
    if scores is None or graph.only_consumer(scores.output[0], "Softmax") is None:
        return None
    query = _scaled_heads(graph, scores.input[0], [0, 2, 1, 3])
    key = _scaled_heads(graph, scores.input[1], [0, 2, 3, 1])
    weighted = graph.only_consumer(softmax.output[0], "MatMul")
    if (
        query is None
        or key is None
        or weighted is None
        or weighted.input[0] != softmax.output[0]
    ):
        return None
    value = _split_heads(graph, weighted.input[1], [0, 2, 1, 3])
    back = graph.only_consumer(weighted.output[0], "Transpose")
    if (
        value is None
        or back is None
        or list(_attribute(back, "perm", [])) != [0, 2, 1, 3]
    ):
        return None
    merged = graph.only_consumer(back.output[0], "Reshape")
    if merged is None or not query[1] == key[1] == value[1] or query[2] != key[2]:
        return None
    scale = None if query[2] is None else query[2] ** 2
    return [query[0], key[0], value[0]], merged.output[0], query[1], scale


def _prune_and_sort(graph: onnx.GraphProto) -> None:
    """Order the nodes topologically and drop those no graph output depends on."""
    available = (
        {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    )
    ordered, pending = [], list(graph.node)
    while pending:
        ready = [
            node for node in pending if all(name in available for name in node.input)
        ]
        if not ready:
            raise ValueError("the rewritten graph has a cycle or a dangling input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        done = {id(node) for node in ready}
        pending = [node for node in pending if id(node) not in done]
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(ordered):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    kept_initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)


def fuse_attention(model: onnx.ModelProto) -> int:
    """Rewrite ``model`` in place (see the module docstring); returns how many attentions were fused."""
    graph = _Graph(model.graph)
    fused = []
    for softmax in [node for node in model.graph.node if node.op_type == "Softmax"]:
        match = _match_attention(graph, softmax)
        if match is None:
            continue
        inputs, output, heads, scale = match
        producer = graph.producer[output]
        producer.output[0] = f"{output}/unfused"
        fused.append(
            helper.make_node(
                "MultiHeadAttention",
                inputs,
                [output],
                name=f"{softmax.name}/fused",
                domain=CONTRIB_DOMAIN,
                num_heads=heads,
                **({} if scale is None else {"scale": scale}),
            )
        )
    if not fused:
        return 0
    model.graph.node.extend(fused)
    _prune_and_sort(model.graph)
    if not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    return len(fused)
