"""The payload of a `placement` record: a region's assignments, stamped (region, term, epoch).

Canonical JSON (sorted keys, compact, UTF-8), so that two nodes holding the same
placement hold the same bytes:

    {"deployments": {"vibration": {"nodes": [0, 2, null], "states": "ra-"}},
     "epoch": 7, "nodes": ["n1", "n3", "n4"], "region": "store-1", "term": [3, 1]}

`nodes` lists every node the placement names, sorted, once; `deployments` gives
for each deployment, slot by slot, the index of its node in `nodes` (null: the
slot is unplaced) and, in `states`, one letter per slot for its state (a assigned,
l loading, r ready, f failed, p provisional, - unplaced). A slot list never ends
in an unplaced slot. This costs about 4 bytes a replica instead of the ~55 of
`[deployment, slot, node, state]` lists, so one record holds a region of 100
nodes x 30 replicas (3,000) within the store's 16 KiB payload limit
(docs/placement.md, "The placement record").

`term` is opaque here: a list of 1 to 4 small integers the election gives, compared
as a tuple. Two optional top-level fields carry what placement in the mesh needs
(inference/placing.py): `cert`, the leader's certificate of its term (base64 of
consensus.certificate's bytes), and `rebalanced`, the generation of the last
`rebalance` command this placement carried out; each is left out when empty. A
newer writer may add other top-level fields; this version ignores them, but the
payload as a whole must still be canonical.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from dataclasses import dataclass
from typing import Any

from consensus.certificate import CERT_MAX_BYTES
from inference.assignments import Assignment, ReplicaState
from inference.documents import (
    DocumentLimits,
    canonical_json,
    load_canonical_object,
)
from inference.manifest import NAME_PATTERN, REGION_PATTERN

PAYLOAD_MAX_BYTES = 16 * 1024  # the state store's payload limit (gossip/state.py StoreLimits)
TERM_PARTS_MAX = 4
NUMBER_MAX = (1 << 53) - 1  # an integer every JSON reader holds exactly
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# Every value is at least 2 bytes of JSON, so a payload within the limit holds fewer than this.
PAYLOAD_LIMITS = DocumentLimits(
    text_max_bytes=PAYLOAD_MAX_BYTES,
    depth_max=4,  # the top, deployments, one deployment, its node list
    nodes_max=PAYLOAD_MAX_BYTES // 2,
    scalar_max_chars=PAYLOAD_MAX_BYTES,
    int_max_chars=20,
)
_LETTERS = {
    ReplicaState.ASSIGNED: "a",
    ReplicaState.LOADING: "l",
    ReplicaState.READY: "r",
    ReplicaState.FAILED: "f",
    ReplicaState.PROVISIONAL: "p",
}
_STATES = {letter: state for state, letter in _LETTERS.items()}
CERT_MAX_CHARS = 4 * ((CERT_MAX_BYTES + 2) // 3)  # base64 of the largest certificate
_HOLE = "-"


class PlacementRecordError(ValueError):
    """A payload that is not a placement record, or a placement too large for one."""


@dataclass(frozen=True, slots=True)
class PlacementRecord:
    """What a `placement` record says: the assignments of `region` decided in `term`, the
    `epoch`-th placement of that term."""

    region: str
    term: tuple[int, ...]
    epoch: int
    assignments: tuple[Assignment, ...]
    certificate: bytes = b""  # the leader's proof of its term (consensus/certificate.py); b"": none
    rebalanced: int = 0  # the last `rebalance` generation this placement carried out (0: none)


def encode(record: PlacementRecord) -> bytes:
    """The canonical payload; PlacementRecordError if the record is not valid or is over the
    store's limit (the caller must not publish it: say so, and keep the previous placement)."""
    doc = _to_doc(record)
    payload = canonical_json(doc)
    if len(payload) > PAYLOAD_MAX_BYTES:
        raise PlacementRecordError(
            f"placement of region {record.region}: {len(record.assignments)} replicas on "
            f"{len(doc['nodes'])} nodes take {len(payload)} bytes, over the record limit of "
            f"{PAYLOAD_MAX_BYTES}; lower the replica counts or split the region"
        )
    problem = _schema_problem(doc)
    if problem is not None:
        raise PlacementRecordError(problem)
    return payload


def decode(payload: bytes) -> PlacementRecord:
    """A payload back to its record; PlacementRecordError says what is wrong with it."""
    doc = load_canonical_object(payload, PAYLOAD_LIMITS, "placement", _schema_problem)
    if isinstance(doc, str):
        raise PlacementRecordError(doc)
    nodes: list[str] = doc["nodes"]
    assignments = [
        Assignment(name, slot, nodes[index], _STATES[letter])
        for name, entry in sorted(doc["deployments"].items())
        for slot, (index, letter) in enumerate(zip(entry["nodes"], entry["states"], strict=True))
        if index is not None
    ]
    cert = base64.b64decode(doc["cert"]) if "cert" in doc else b""
    return PlacementRecord(
        doc["region"], tuple(doc["term"]), doc["epoch"], tuple(assignments), cert, doc.get("rebalanced", 0)
    )


def payload_problem(payload: bytes) -> str | None:
    """Why `payload` is not a placement record (None if it is): the store refuses such a record."""
    try:
        decode(payload)
    except PlacementRecordError as exc:
        return str(exc)
    return None


def _to_doc(record: PlacementRecord) -> dict[str, Any]:
    nodes = sorted({a.node_id for a in record.assignments})
    index = {node_id: i for i, node_id in enumerate(nodes)}
    slots: dict[str, dict[int, Assignment]] = {}
    for a in record.assignments:
        if a.slot in slots.setdefault(a.deployment, {}) or not 0 <= a.slot <= NUMBER_MAX:
            raise PlacementRecordError(
                f"placement: {a.deployment} slot {a.slot} is given twice or out of range"
            )
        slots[a.deployment][a.slot] = a
    deployments: dict[str, Any] = {}
    for name, by_slot in sorted(slots.items()):
        held = [by_slot.get(slot) for slot in range(max(by_slot) + 1)]
        deployments[name] = {
            "nodes": [index[a.node_id] if a else None for a in held],
            "states": "".join(_LETTERS[a.state] if a else _HOLE for a in held),
        }
    doc: dict[str, Any] = {
        "region": record.region,
        "term": list(record.term),
        "epoch": record.epoch,
        "nodes": nodes,
        "deployments": deployments,
    }
    if record.certificate:
        doc["cert"] = base64.b64encode(record.certificate).decode("ascii")
    if record.rebalanced:
        doc["rebalanced"] = record.rebalanced
    return doc


def _schema_problem(doc: dict[str, Any]) -> str | None:
    region = doc.get("region")
    if not isinstance(region, str) or not REGION_PATTERN.fullmatch(region):
        return "placement.region: not a region name"
    term = doc.get("term")
    if (
        not isinstance(term, list)
        or not 1 <= len(term) <= TERM_PARTS_MAX
        or not all(_number(part) for part in term)
    ):
        return f"placement.term: must be a list of 1 to {TERM_PARTS_MAX} integers 0..{NUMBER_MAX}"
    if not _number(doc.get("epoch")):
        return f"placement.epoch: must be an integer 0..{NUMBER_MAX}"
    if "rebalanced" in doc and not (_number(doc["rebalanced"]) and doc["rebalanced"] > 0):
        return f"placement.rebalanced: must be an integer 1..{NUMBER_MAX} (left out when 0)"
    if "cert" in doc and not _cert_ok(doc["cert"]):
        return f"placement.cert: must be canonical base64 of 1 to {CERT_MAX_BYTES} bytes (left out if none)"
    nodes = doc.get("nodes")
    if not isinstance(nodes, list) or not all(
        isinstance(n, str) and NODE_ID_PATTERN.fullmatch(n) for n in nodes
    ):
        return "placement.nodes: must be a list of node ids"
    if any(a >= b for a, b in itertools.pairwise(nodes)):
        return "placement.nodes: must be sorted, each id once"
    deployments = doc.get("deployments")
    if not isinstance(deployments, dict):
        return "placement.deployments: must be a mapping of deployment names"
    used = [False] * len(nodes)
    for name, entry in deployments.items():
        problem = _entry_problem(name, entry, len(nodes), used)
        if problem is not None:
            return problem
    if not all(used):
        return "placement.nodes: lists a node no replica is on"
    return None


def _entry_problem(name: Any, entry: Any, node_count: int, used: list[bool]) -> str | None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return "placement.deployments: a key is not a deployment name"
    path = f"placement.deployments.{name}"
    if not isinstance(entry, dict) or set(entry) != {"nodes", "states"}:
        return f"{path}: must be a mapping of exactly nodes and states"
    indexes, states = entry["nodes"], entry["states"]
    if not isinstance(indexes, list) or not isinstance(states, str) or len(indexes) != len(states):
        return f"{path}: nodes must be a list and states a string of the same length"
    if not indexes or indexes[-1] is None:
        return f"{path}: must end with a placed slot"
    seen: set[int] = set()
    for slot, (index, letter) in enumerate(zip(indexes, states, strict=True)):
        if index is None:
            if letter != _HOLE:
                return f"{path}: slot {slot} is unplaced, its state must be '{_HOLE}'"
            continue
        if type(index) is not int or not 0 <= index < node_count:
            return f"{path}: slot {slot} names no node of placement.nodes"
        if letter not in _STATES:
            return f"{path}: slot {slot} has no valid state (one of {''.join(_STATES)})"
        if index in seen:
            return f"{path}: slot {slot} is on a node that holds another of its slots"
        seen.add(index)
        used[index] = True
    return None


def _cert_ok(value: Any) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= CERT_MAX_CHARS:
        return False
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return 0 < len(raw) <= CERT_MAX_BYTES and base64.b64encode(raw).decode("ascii") == value


def _number(value: Any) -> bool:
    return type(value) is int and 0 <= value <= NUMBER_MAX
