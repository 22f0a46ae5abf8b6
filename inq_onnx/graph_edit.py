"""Small in-place edits of an ONNX graph that several transformations end with."""

from __future__ import annotations

import onnx

__all__ = ["drop_unused_initializers"]


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Initializers that no node reads and no graph output names are removed (the order of the rest is kept)."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
