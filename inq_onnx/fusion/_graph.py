"""A mutable view of a graph for the fusion rules: producers, consumers, constants and shapes of values."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import large_models
from ..schemas import DOMAIN, SHIFT_CONV, SHIFT_GEMM, SHIFT_MATMUL

__all__ = ["GraphView", "attribute", "is_shift_node"]


def attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def is_shift_node(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type in (SHIFT_CONV, SHIFT_GEMM, SHIFT_MATMUL)


class GraphView:
    """Consumers and shapes of one graph; rules mark nodes removed and `commit` drops them in one pass.

    A fused node takes the place of the last node of its pattern, so the node order stays topological.
    """

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.graph_outputs = {o.name for o in self.graph.output}
        self.initializers = {t.name: t for t in self.graph.initializer}
        self._removed: set[int] = set()
        self._shapes: dict[str, tuple | None] | None = None

    def removed(self, node: onnx.NodeProto) -> bool:
        return id(node) in self._removed

    def sole_consumer(self, value: str) -> onnx.NodeProto | None:
        """The one node reading `value`, when no other node or graph output does."""
        users = self.consumers.get(value, [])
        if len(users) != 1 or value in self.graph_outputs or users[0].input[:].count(value) != 1:
            return None
        return users[0]

    def constant(self, value: str) -> np.ndarray | None:
        tensor = self.initializers.get(value)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def shape(self, value: str) -> tuple | None:
        """Inferred dims of `value` (ints, or dim_param names), or None when unknown."""
        if self._shapes is None:
            self._shapes = {}
            try:
                inferred = large_models.infer_shapes(self.model, strict_mode=False)
            except Exception:  # shape inference is a help here, never a requirement
                inferred = self.model
            g = inferred.graph
            for info in (*g.input, *g.value_info, *g.output):
                t = info.type.tensor_type
                if not t.HasField("shape"):
                    continue
                dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
                self._shapes[info.name] = None if None in dims else dims
            for name, tensor in self.initializers.items():
                self._shapes[name] = tuple(tensor.dims)
        return self._shapes.get(value)

    def replace(self, old: list[onnx.NodeProto], new: onnx.NodeProto) -> None:
        """`new` stands where the last of `old` stood; the others are dropped."""
        last = old[-1]
        for node in old[:-1]:
            self._removed.add(id(node))
        last.CopyFrom(new)
        self._shapes = None

    def commit(self) -> None:
        if self._removed:
            kept = [n for n in self.graph.node if id(n) not in self._removed]
            del self.graph.node[:]
            self.graph.node.extend(kept)
            self._removed.clear()
