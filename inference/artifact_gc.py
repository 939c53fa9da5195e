"""Which artifacts to delete when a node's store is over its size budget: pure, so the rule
is tested apart from the disk (mesh/service/artifacts.py applies it).

The rule: only artifacts no deployment names (no held `desired` record) and no transfer is
writing may go; of those, the least recently used first (oldest `last_used`, then by id, so
the choice is deterministic), until the store is within the budget. An artifact that is
still needed is never deleted, even when the needed ones alone are over the budget.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HeldArtifact:
    """One artifact in the store: its id, size, and when it was last used (any clock)."""

    sha256: str
    size_bytes: int
    last_used: float


def to_delete(held: Sequence[HeldArtifact], keep: Container[str], budget_bytes: int) -> list[str]:
    """The ids to delete, in order, to bring the store within `budget_bytes` (as close as
    the artifacts in `keep` allow)."""
    total = sum(a.size_bytes for a in held)
    out: list[str] = []
    for artifact in sorted(held, key=lambda a: (a.last_used, a.sha256)):
        if total <= budget_bytes:
            break
        if artifact.sha256 in keep:
            continue
        out.append(artifact.sha256)
        total -= artifact.size_bytes
    return out
