"""A node's inventory record: its schema, its payload, and when a node republishes it.

Pure: mesh/service/inventory.py reads the device (psutil, onnxruntime) into an
`Inventory`, and the simulator builds them from its seed; both sign `encode`'s
bytes as an `inventory` record (key = node id, scope `region:<region>`), so
placement (here in inference/) reads the same schema either way.
`should_publish` keeps bandwidth flat: a record on meaningful change or every
INVENTORY_REFRESH_S, never on every check.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from inference.documents import DocumentError, DocumentLimits, canonical_json, load_json
from inference.manifest import LABEL_KEY_PATTERN, REGION_PATTERN, SHA256_PATTERN

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
    # sha256 of artifacts held here, ARTIFACTS_LISTED_MAX at most: how peers find holders
    # (docs/artifacts.md). Optional in a record: a node of an older version lists none.
    artifacts: tuple[str, ...] = field(default=())


def inventory_scope(region: str) -> str:
    """The scope of a node's inventory record: its region (gossip/state.py's scope names)."""
    return "region:" + region


def to_json(inv: Inventory) -> dict[str, Any]:
    """The JSON object of an inventory (lists for tuples)."""
    doc = asdict(inv)
    doc["accelerators"] = list(inv.accelerators)
    doc["models"] = list(inv.models)
    # Only when some are held: a node holding none (and the simulator) keeps the payload it had.
    if inv.artifacts:
        doc["artifacts"] = list(inv.artifacts)
    else:
        del doc["artifacts"]
    return doc


def encode(inv: Inventory) -> bytes:
    """The record payload: canonical JSON (sorted keys, compact, UTF-8)."""
    return canonical_json(to_json(inv))


# The store's payload limit; an inventory is flat but for labels and lists (depth 2).
PAYLOAD_LIMITS = DocumentLimits(text_max_bytes=16 * 1024, depth_max=4)
TEXT_MAX_CHARS = 128  # os, arch, python, an accelerator or model name, a label value
LIST_MAX = 256  # accelerators, models
LABELS_MAX = 64
COUNT_MAX = 1 << 63  # any byte or cpu count a device can report
_INT_FIELDS = ("cpu_count", "memory_total_bytes", "memory_available_bytes", "disk_free_bytes")
_NUMBER_FIELDS = ("load_1m", "cpu_percent")
_TEXT_FIELDS = ("os", "arch", "python")
_LIST_FIELDS = ("accelerators", "models")
# 64 ids of 64 characters keep the record far under its 16 KiB with every other field full.
ARTIFACTS_LISTED_MAX = 64
MODELS_LISTED_MAX = 32  # loaded models an agent lists (`model@version`, at most TEXT_MAX_CHARS each)


def decode(payload: bytes) -> dict[str, Any] | None:
    """A payload as an inventory JSON object, or None if it is not one (payload_problem says why)."""
    try:
        doc = load_json(payload, PAYLOAD_LIMITS)
    except DocumentError:
        return None
    return doc if isinstance(doc, dict) and _schema_problem(doc) is None else None


def payload_problem(payload: bytes) -> str | None:
    """Why `payload` is not an inventory (None if it is): the store refuses such a record.

    Every field of `Inventory` must be there with its type and within bounds; fields
    this version does not know are allowed (a newer node may add some), within the
    loader's limits."""
    try:
        doc = load_json(payload, PAYLOAD_LIMITS)
    except DocumentError as exc:
        return f"inventory: {exc}"
    if not isinstance(doc, dict):
        return "inventory: not a JSON object"
    return _schema_problem(doc)


def _schema_problem(doc: dict[str, Any]) -> str | None:
    for name in _INT_FIELDS:
        value = doc.get(name)
        if type(value) is not int or not 0 <= value <= COUNT_MAX:
            return f"inventory.{name}: must be an integer 0..{COUNT_MAX}"
    for name in _NUMBER_FIELDS:
        number = doc.get(name)
        if not isinstance(number, int | float) or isinstance(number, bool):
            return f"inventory.{name}: must be a finite number >= 0"
        if not math.isfinite(number) or number < 0:
            return f"inventory.{name}: must be a finite number >= 0"
    for name in _TEXT_FIELDS:
        if not _text(doc.get(name)):
            return f"inventory.{name}: must be a string of at most {TEXT_MAX_CHARS} characters"
    for name in _LIST_FIELDS:
        items = doc.get(name)
        if not isinstance(items, list) or len(items) > LIST_MAX or not all(_text(i) for i in items):
            return f"inventory.{name}: must be a list of at most {LIST_MAX} short strings"
    artifacts = doc.get("artifacts", [])
    if (
        not isinstance(artifacts, list)
        or len(artifacts) > ARTIFACTS_LISTED_MAX
        or not all(isinstance(a, str) and SHA256_PATTERN.fullmatch(a) for a in artifacts)
    ):
        return f"inventory.artifacts: must be a list of at most {ARTIFACTS_LISTED_MAX} sha256 ids"
    region = doc.get("region")
    if not isinstance(region, str) or not REGION_PATTERN.fullmatch(region):
        return "inventory.region: not a region name"
    labels = doc.get("labels")
    if not isinstance(labels, dict) or len(labels) > LABELS_MAX:
        return f"inventory.labels: must be a mapping of at most {LABELS_MAX} labels"
    for key, value in labels.items():
        if not LABEL_KEY_PATTERN.fullmatch(key) or not _text(value):
            return "inventory.labels: a label name or value is not valid"
    return None


def _text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= TEXT_MAX_CHARS


def holds(doc: dict[str, Any], sha256: str) -> bool:
    """Whether a decoded inventory lists the artifact `sha256` as held."""
    artifacts = doc.get("artifacts")
    return isinstance(artifacts, list) and sha256 in artifacts


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
        or cur.artifacts != prev.artifacts
    ):
        return True
    total = max(cur.memory_total_bytes, 1)
    if abs(cur.memory_available_bytes - prev.memory_available_bytes) >= MEMORY_CHANGE_FRACTION * total:
        return True
    if abs(cur.disk_free_bytes - prev.disk_free_bytes) >= DISK_CHANGE_FRACTION * max(prev.disk_free_bytes, 1):
        return True
    return abs(cur.load_1m - prev.load_1m) >= LOAD_CHANGE
