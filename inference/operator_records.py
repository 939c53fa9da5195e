"""The operator's commands to placement as records: cordon, drain and rebalance (pure).

- `scheduling` (fleet scope, operator-signed, key: the node's id):
  `{"mode":"cordoned","node":"<id>"}` or `{"mode":"draining","node":"<id>"}`. A
  cordoned node gets no new replica and keeps its own; a draining node gets none
  and its replicas move away, each kept until its replacement is ready
  (docs/placement.md, "Placement in the mesh"). A tombstone of the slot makes the
  node schedulable again (`murmur uncordon`).
- `rebalance` (fleet scope, operator-signed, key: the region):
  `{"generation":<n>,"region":"<region>"}`. The region's leader runs `place` with
  `rebalance=True` once for each generation above the one its last placement
  carried out.

Payloads are canonical JSON with exactly these fields: an unknown field, a key
that does not match the field it repeats, or anything beyond the limits is
refused (the store drops the record, counted `drop_bad_payload`), so an
operator's mistake is an error at the API, never a command half understood.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gossip.records import Record
from inference.documents import (
    DocumentError,
    DocumentLimits,
    canonical_json,
    load_json,
)
from inference.manifest import REGION_PATTERN
from inference.placement_record import NODE_ID_PATTERN, NUMBER_MAX
from inference.resources import NodeStatus

PAYLOAD_MAX_BYTES = 256  # both payloads are under 120 bytes
PAYLOAD_LIMITS = DocumentLimits(
    text_max_bytes=PAYLOAD_MAX_BYTES, depth_max=1, nodes_max=8, scalar_max_chars=64, int_max_chars=20
)
_MODES = {NodeStatus.CORDONED.value: NodeStatus.CORDONED, NodeStatus.DRAINING.value: NodeStatus.DRAINING}


class OperatorRecordError(ValueError):
    """A payload that is not a `scheduling` or `rebalance` record."""


@dataclass(frozen=True, slots=True)
class Scheduling:
    """The operator set node `node_id` to `mode` (cordoned or draining)."""

    node_id: str
    mode: NodeStatus


@dataclass(frozen=True, slots=True)
class Rebalance:
    """The operator asked for rebalance number `generation` of `region`."""

    region: str
    generation: int


def encode_scheduling(command: Scheduling) -> bytes:
    """The canonical payload of a `scheduling` record (its key is command.node_id)."""
    if command.mode not in _MODES.values():
        raise OperatorRecordError("scheduling.mode: must be cordoned or draining (schedulable: a tombstone)")
    return _checked(canonical_json({"mode": command.mode.value, "node": command.node_id}), decode_scheduling)


def encode_rebalance(command: Rebalance) -> bytes:
    """The canonical payload of a `rebalance` record (its key is command.region)."""
    return _checked(
        canonical_json({"generation": command.generation, "region": command.region}), decode_rebalance
    )


def decode_scheduling(payload: bytes) -> Scheduling:
    doc = _load(payload, "scheduling", ("mode", "node"))
    node, mode = doc["node"], doc["mode"]
    if not isinstance(node, str) or not NODE_ID_PATTERN.fullmatch(node):
        raise OperatorRecordError("scheduling.node: not a node id")
    if mode not in _MODES:
        raise OperatorRecordError("scheduling.mode: must be cordoned or draining (schedulable: a tombstone)")
    return Scheduling(node, _MODES[mode])


def decode_rebalance(payload: bytes) -> Rebalance:
    doc = _load(payload, "rebalance", ("generation", "region"))
    region, generation = doc["region"], doc["generation"]
    if not isinstance(region, str) or not REGION_PATTERN.fullmatch(region):
        raise OperatorRecordError("rebalance.region: not a region name")
    if type(generation) is not int or not 1 <= generation <= NUMBER_MAX:
        raise OperatorRecordError(f"rebalance.generation: must be an integer 1..{NUMBER_MAX}")
    return Rebalance(region, generation)


def scheduling_problem(payload: bytes) -> str | None:
    """Why `payload` is not a `scheduling` record (None if it is)."""
    return _problem(payload, decode_scheduling)


def rebalance_problem(payload: bytes) -> str | None:
    """Why `payload` is not a `rebalance` record (None if it is)."""
    return _problem(payload, decode_rebalance)


def node_statuses(records: Iterable[Record]) -> dict[str, NodeStatus]:
    """node id -> its status, from the held `scheduling` records (tombstones: schedulable, so
    absent). A record whose payload names another node than its key is ignored."""
    out: dict[str, NodeStatus] = {}
    for record in records:
        if record.deleted:
            continue
        try:
            command = decode_scheduling(record.payload)
        except OperatorRecordError:
            continue
        if command.node_id == record.key:
            out[record.key] = command.mode
    return out


def rebalance_generation(records: Iterable[Record], region: str) -> int:
    """The generation of the held `rebalance` record of `region` (0: none)."""
    for record in records:
        if record.key != region or record.deleted:
            continue
        try:
            command = decode_rebalance(record.payload)
        except OperatorRecordError:
            continue
        if command.region == region:
            return command.generation
    return 0


def _load(payload: bytes, kind: str, fields: tuple[str, ...]) -> dict[str, Any]:
    try:
        doc = load_json(payload, PAYLOAD_LIMITS)
    except DocumentError as exc:
        raise OperatorRecordError(f"{kind}: {exc.detail}") from None
    if not isinstance(doc, dict) or sorted(doc) != list(fields):
        raise OperatorRecordError(f"{kind}: must be a JSON object of exactly {', '.join(fields)}")
    if canonical_json(doc) != payload:
        raise OperatorRecordError(f"{kind}: payload is not in canonical form (sorted keys, compact)")
    return doc


def _checked(payload: bytes, decoder: Any) -> bytes:
    decoder(payload)
    return payload


def _problem(payload: bytes, decoder: Any) -> str | None:
    try:
        decoder(payload)
    except OperatorRecordError as exc:
        return str(exc)
    return None
