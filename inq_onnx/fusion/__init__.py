"""Fusion of the ops that follow a com.inq node into it: one rule per pattern, applied until none matches."""

from __future__ import annotations

from collections import Counter

import onnx

from ._graph import GraphView
from .activation import FuseActivation
from .max_pool import FuseMaxPool
from .residual_add import FuseResidualAdd
from .rule import Rule

__all__ = ["RULES", "fuse", "Rule"]

# Order matters only for speed of convergence: Add before the activation that usually follows it, then a
# MaxPool after both (a pooled op takes nothing more after it).
RULES: tuple[Rule, ...] = (FuseResidualAdd(), FuseActivation(), FuseMaxPool())


def fuse(model: onnx.ModelProto, rules: tuple[Rule, ...] = RULES) -> Counter:
    """Applies `rules` to `model` in place until none matches; returns how often each rule fired."""
    fired: Counter = Counter()
    changed = True
    while changed:
        changed = False
        view = GraphView(model)
        for node in list(model.graph.node):
            for rule in rules:
                if view.removed(node):
                    break
                match = rule.match(view, node)
                if match is not None:
                    rule.apply(view, match)
                    fired[rule.name] += 1
                    changed = True
        view.commit()
    return fired
