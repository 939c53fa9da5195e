"""A node's inventory record: its schema, its payload, and when a node republishes it.

Pure: mesh/service/inventory.py reads the device (psutil, onnxruntime) into an
`Inventory`, and the simulator builds them from its seed; both sign `encode`'s
bytes as an `inventory` record (key = node id, scope `region:<region>`), so
placement (here in inference/) reads the same schema either way.
`should_publish` keeps bandwidth flat: a record on meaningful change or every
INVENTORY_REFRESH_S, never on every check.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

INVENTORY_REFRESH_S = 60.0  # republish at least this often, seconds
MEMORY_CHANGE_FRACTION = 0.10  # of memory_total_bytes: available memory moved by this much
DISK_CHANGE_FRACTION = 0.10  # of the previous disk_free_bytes: free disk moved by this much
LOAD_CHANGE = 1.0  # load_1m (runnable processes, 1-minute average) moved by this much


@dataclass(frozen=True, slots=True)
class Inventory:
    """One snapshot of a node's resources."""

    cpu_count: int
    load_1m: float
    cpu_percent: float
    memory_total_bytes: int
    memory_available_bytes: int
    disk_free_bytes: int
    accelerators: tuple[str, ...]
    os: str
    arch: str
    python: str
    labels: dict[str, str]
    region: str
    models: tuple[str, ...] = field(default=())


def inventory_scope(region: str) -> str:
    """The scope of a node's inventory record: its region (gossip/state.py's scope names)."""
    return "region:" + region


def to_json(inv: Inventory) -> dict[str, Any]:
    """The JSON object of an inventory (lists for tuples)."""
    doc = asdict(inv)
    doc["accelerators"] = list(inv.accelerators)
    doc["models"] = list(inv.models)
    return doc


def encode(inv: Inventory) -> bytes:
    """The record payload: canonical JSON (sorted keys, compact, UTF-8)."""
    return json.dumps(to_json(inv), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode(payload: bytes) -> dict[str, Any] | None:
    """A payload as a JSON object, or None if it is not one (a peer's newer or broken payload)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def should_publish(prev: Inventory | None, cur: Inventory, last_published_s: float, now_s: float) -> bool:
    """True when `cur` should be published: first time, refresh due, or a meaningful change since `prev`.

    `prev` is the inventory last published, at `last_published_s` (same clock as `now_s`).
    """
    if prev is None or now_s - last_published_s >= INVENTORY_REFRESH_S:
        return True
    return changed_meaningfully(prev, cur)


def changed_meaningfully(prev: Inventory | None, cur: Inventory) -> bool:
    """True if `cur` differs from `prev` by more than the thresholds (or there is no `prev`):
    peers should hear of it at once and reliably (an urgent record), not at the next refresh."""
    if prev is None:
        return True
    if (
        cur.cpu_count != prev.cpu_count
        or cur.accelerators != prev.accelerators
        or cur.labels != prev.labels
        or cur.models != prev.models
    ):
        return True
    total = max(cur.memory_total_bytes, 1)
    if abs(cur.memory_available_bytes - prev.memory_available_bytes) >= MEMORY_CHANGE_FRACTION * total:
        return True
    if abs(cur.disk_free_bytes - prev.disk_free_bytes) >= DISK_CHANGE_FRACTION * max(prev.disk_free_bytes, 1):
        return True
    return abs(cur.load_1m - prev.load_1m) >= LOAD_CHANGE
