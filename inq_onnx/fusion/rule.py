"""The interface of a fusion rule: match a pattern starting at one node, then replace it."""

from __future__ import annotations

from typing import Any, Protocol

import onnx

from ._graph import GraphView

__all__ = ["Rule"]


class Rule(Protocol):
    name: str

    def match(self, view: GraphView, node: onnx.NodeProto) -> Any | None:
        """What `apply` needs when the pattern starts at `node` and may be fused, else None."""

    def apply(self, view: GraphView, match: Any) -> None:
        """Rewrites the matched nodes through `view`."""
