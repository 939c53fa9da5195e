"""A node's inventory: what it has (cores, memory, disk, accelerators, labels) and when to republish it.

`collect` reads this device (psutil; onnxruntime for the accelerators, imported
lazily and optional). `encode` is the record payload: canonical JSON. The agent
signs it as an `inventory` record (key = node id, scope `region:<region>`).
`should_publish` keeps bandwidth flat: a record on meaningful change or every
INVENTORY_REFRESH_S, never on every check.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

INVENTORY_KIND = "inventory"
INVENTORY_REFRESH_S = 60.0  # republish at least this often, seconds
INVENTORY_CHECK_S = 5.0  # the agent collects and compares this often, seconds
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


def _accelerators() -> tuple[str, ...]:
    """onnxruntime's execution providers here; () if onnxruntime is missing or broken."""
    try:
        import onnxruntime  # lazily: importing it costs ~0.3 s and it is optional on a device

        return tuple(str(p) for p in onnxruntime.get_available_providers())
    except Exception as exc:  # an optional native library: any failure means "none known"
        log.debug("no accelerators known: onnxruntime unavailable (%s)", exc)
        return ()


def _load_1m() -> float:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return float(psutil.getloadavg()[0])


def collect(labels: dict[str, str], region: str, data_dir: Path | str = ".") -> Inventory:
    """This device's inventory now; disk free is that of `data_dir`'s filesystem. Never raises on probes."""
    memory = psutil.virtual_memory()
    try:
        disk_free = int(shutil.disk_usage(data_dir).free)
    except OSError:
        disk_free = 0
    try:
        cpu_percent = float(psutil.cpu_percent(interval=None))
    except Exception:  # psutil reads /proc; a sandbox may hide it
        cpu_percent = 0.0
    try:
        load = _load_1m()
    except Exception:
        load = 0.0
    return Inventory(
        cpu_count=os.cpu_count() or 1,
        load_1m=round(load, 2),
        cpu_percent=round(cpu_percent, 1),
        memory_total_bytes=int(memory.total),
        memory_available_bytes=int(memory.available),
        disk_free_bytes=disk_free,
        accelerators=_accelerators(),
        os=platform.system().lower(),
        arch=platform.machine(),
        python=platform.python_version(),
        labels=dict(sorted(labels.items())),
        region=region,
        models=(),
    )


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
