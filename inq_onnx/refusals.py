"""Layers left float, grouped by reason: one line per reason with a count and the first few node names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

__all__ = ["ReasonGroup", "group_reasons", "summarize_reasons"]


class _Refused(Protocol):
    node: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class ReasonGroup:
    op_type: str
    reason: str
    nodes: tuple[str, ...]  # in graph order

    def summary(self, shown: int = 3) -> str:
        """'48 Conv nodes: weight comes from ...: n0, n4, n8 ... (45 more)'."""
        count = len(self.nodes)
        names = ", ".join(self.nodes[:shown]) + (f" ... ({count - shown} more)" if count > shown else "")
        return f"{count} {self.op_type} node{'s' if count > 1 else ''}: {self.reason}: {names}"


def group_reasons(refused: Iterable[_Refused]) -> list[ReasonGroup]:
    """Groups of (op type, reason), the largest first, ties in order of first appearance."""
    groups: dict[tuple[str, str], list[str]] = {}
    for entry in refused:
        groups.setdefault((entry.op_type, entry.reason), []).append(entry.node)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))  # stable: first appearance breaks ties
    return [ReasonGroup(op, reason, tuple(nodes)) for (op, reason), nodes in ordered]


def summarize_reasons(groups: list[ReasonGroup], limit: int = 300) -> str:
    """The groups on one line of at most about `limit` characters, for error messages."""
    text = ""
    for index, group in enumerate(groups):
        part = group.summary(shown=2)
        if text and len(text) + len(part) > limit:
            return f"{text}; ... ({len(groups) - index} more reason(s))"
        text = f"{text}; {part}" if text else part[:limit]
    return text
