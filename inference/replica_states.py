"""The payload of a `replicas` record: the replicas one node holds and the state of each.

Every node publishes one (kind `replicas`, key its id, scope `region:<region>`,
signed by it) whenever its replicas or their states change, so the region's
leader knows which replicas serve (inference/placing.py feeds them to `place`
as the current placement). Canonical JSON (sorted keys, compact, UTF-8):

    {"replicas": [["camera", 0, "ready"], ["vibration", 2, "loading"]],
     "stamp": [0, "n1", 3, 7]}

`replicas` lists, sorted by deployment, each held replica as [deployment, slot,
state] (a node holds at most one replica of a deployment); `errors`, present
only when a replica failed, gives for at most ERRORS_MAX failed replicas the
start of the error (at most ERROR_MAX_CHARS characters), so every node of the
region can say why (murmur placements anywhere); `stamp` is the
placement the node had applied when it wrote the record, as [era generation, era
founder, term, epoch] (inference/stamps.py), left out before it applied any.
A newer writer may add top-level fields; this version ignores them, but the
payload must still be canonical. The store checks every received payload once
(`payload_problem`, in inference/kinds.py's table).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from consensus.config import Era
from inference.assignments import ReplicaState
from inference.documents import (
    DocumentLimits,
    canonical_json,
    load_canonical_object,
)
from inference.manifest import NAME_PATTERN
from inference.placement_record import NODE_ID_PATTERN, NUMBER_MAX, PAYLOAD_MAX_BYTES
from inference.stamps import Stamp, stamp_doc

REPLICAS_MAX = 512  # replicas one node may report: far above what an edge device runs
ERRORS_MAX = 8  # failed replicas whose error a record carries
ERROR_MAX_CHARS = 64  # of each error: the document limit of any string in the payload
PAYLOAD_LIMITS = DocumentLimits(
    text_max_bytes=PAYLOAD_MAX_BYTES,
    depth_max=3,  # the top, the list of replicas, one replica
    nodes_max=4 * REPLICAS_MAX + 16,
    scalar_max_chars=64,
    int_max_chars=20,
)
_STATES = {state.value: state for state in ReplicaState}


class ReplicaStatesError(ValueError):
    """A payload that is not a `replicas` record."""


@dataclass(frozen=True, slots=True, order=True)
class HeldReplica:
    """Replica `slot` of `deployment`, held by the record's author, in `state`."""

    deployment: str
    slot: int
    state: ReplicaState


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    """What one node's `replicas` record says."""

    replicas: tuple[HeldReplica, ...]
    stamp: Stamp | None = None
    errors: tuple[tuple[str, str], ...] = ()  # (deployment, the start of its error), sorted

    def state_of(self, deployment: str) -> ReplicaState | None:
        """The state of the node's replica of `deployment`, or None if it holds none."""
        return next((r.state for r in self.replicas if r.deployment == deployment), None)

    def error_of(self, deployment: str) -> str | None:
        """The start of the error of the node's failed replica of `deployment`, or None."""
        return next((text for name, text in self.errors if name == deployment), None)


def encode(report: ReplicaReport) -> bytes:
    """The canonical payload; ReplicaStatesError if the report is not valid."""
    doc: dict[str, Any] = {
        "replicas": [[r.deployment, r.slot, r.state.value] for r in sorted(report.replicas)],
    }
    if report.stamp is not None:
        doc["stamp"] = stamp_doc(report.stamp)
    if report.errors:
        doc["errors"] = dict(report.errors)
    problem = _schema_problem(doc)
    if problem is not None:
        raise ReplicaStatesError(problem)
    payload = canonical_json(doc)
    if len(payload) > PAYLOAD_MAX_BYTES:
        raise ReplicaStatesError(
            f"replicas: {len(payload)} bytes, over the record limit of {PAYLOAD_MAX_BYTES}"
        )
    return payload


def decode(payload: bytes) -> ReplicaReport:
    """A payload back to its report; ReplicaStatesError says what is wrong with it."""
    doc = load_canonical_object(payload, PAYLOAD_LIMITS, "replicas", _schema_problem)
    if isinstance(doc, str):
        raise ReplicaStatesError(doc)
    held = tuple(HeldReplica(name, slot, _STATES[state]) for name, slot, state in doc["replicas"])
    raw = doc.get("stamp")
    stamp = Stamp(Era(raw[0], raw[1]), raw[2], raw[3]) if raw is not None else None
    return ReplicaReport(held, stamp, tuple(sorted(doc.get("errors", {}).items())))


def payload_problem(payload: bytes) -> str | None:
    """Why `payload` is not a `replicas` record (None if it is): the store refuses such a record."""
    try:
        decode(payload)
    except ReplicaStatesError as exc:
        return str(exc)
    return None


def _schema_problem(doc: dict[str, Any]) -> str | None:
    replicas = doc.get("replicas")
    if not isinstance(replicas, list) or len(replicas) > REPLICAS_MAX:
        return f"replicas.replicas: must be a list of at most {REPLICAS_MAX} replicas"
    for i, entry in enumerate(replicas):
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or not NAME_PATTERN.fullmatch(entry[0])
            or not _number(entry[1])
            or entry[2] not in _STATES
        ):
            return (
                f"replicas.replicas[{i}]: must be [deployment, slot 0..{NUMBER_MAX}, state] with state "
                f"one of {', '.join(_STATES)}"
            )
    if any(a[0] >= b[0] for a, b in itertools.pairwise(replicas)):
        return "replicas.replicas: must be sorted by deployment, each deployment once"
    if "errors" in doc:
        errors, failed = doc["errors"], {r[0] for r in replicas if r[2] == ReplicaState.FAILED.value}
        if (
            not isinstance(errors, dict)
            or not 0 < len(errors) <= ERRORS_MAX
            or not all(
                k in failed and isinstance(v, str) and 0 < len(v) <= ERROR_MAX_CHARS
                for k, v in errors.items()
            )
        ):
            return (
                f"replicas.errors: must map at most {ERRORS_MAX} failed replicas' deployments to their "
                f"error (1..{ERROR_MAX_CHARS} characters)"
            )
    if "stamp" in doc:
        stamp = doc["stamp"]
        if (
            not isinstance(stamp, list)
            or len(stamp) != 4
            or not _number(stamp[0])
            or not isinstance(stamp[1], str)
            or not NODE_ID_PATTERN.fullmatch(stamp[1])
            or not _number(stamp[2])
            or not _number(stamp[3])
        ):
            return "replicas.stamp: must be [era generation, era founder id, term, epoch]"
    return None


def _number(value: Any) -> bool:
    return type(value) is int and 0 <= value <= NUMBER_MAX
