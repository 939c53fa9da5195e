"""Aligned text tables for people: the one layout every `murmur` read command prints.

Columns are as wide as their widest cell, two spaces apart, with no trailing blanks;
`--json` prints the API's answer instead, so scripts never parse these.
"""

from __future__ import annotations

from collections.abc import Sequence


def aligned(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`rows` under `headers`, each column as wide as its widest cell."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines)


def cell(value: object, empty: str = "-") -> str:
    """A value as a table cell: None and "" read as `empty`."""
    return empty if value is None or value == "" else str(value)
