"""inference/placement_record.py: the `placement` record payload, its size limit, every schema
error, and the store refusing a bad one (inference/kinds.py)."""

from __future__ import annotations

import hashlib
import json

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.kinds import PLACEMENT_KIND
from gossip.records import Record, key_id, sign_record
from inference.assignments import Assignment, ReplicaState
from inference.placement_record import (
    PAYLOAD_MAX_BYTES,
    PlacementRecord,
    PlacementRecordError,
    decode,
    encode,
    payload_problem,
)
from tests.inference.test_kinds import drops, store

A, R, P = ReplicaState.ASSIGNED, ReplicaState.READY, ReplicaState.PROVISIONAL
RECORD = PlacementRecord(
    region="store-1",
    term=(3, 1),
    epoch=7,
    assignments=(
        Assignment("vibration", 0, "n4", R),
        Assignment("vibration", 2, "n1", A),
        Assignment("camera", 0, "n1", P),
    ),
)
PAYLOAD = (
    b'{"deployments":{"camera":{"nodes":[0],"states":"p"},"vibration":{"nodes":[1,null,0],"states":"r-a"}},'
    b'"epoch":7,"nodes":["n1","n4"],"region":"store-1","term":[3,1]}'
)


def test_the_payload_is_compact_canonical_json_and_decodes_back() -> None:
    assert encode(RECORD) == PAYLOAD
    back = decode(PAYLOAD)
    assert back.region == "store-1" and back.term == (3, 1) and back.epoch == 7
    assert back.assignments == tuple(sorted(RECORD.assignments))
    assert payload_problem(PAYLOAD) is None


def test_an_empty_placement_is_a_record_too() -> None:
    empty = PlacementRecord("r", (0,), 0, ())
    assert decode(encode(empty)) == empty


def _node_id(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:16]  # like a real node id


def test_100_nodes_by_30_replicas_fit_in_one_record() -> None:
    # 3,000 replicas: 50 deployments of 60 replicas each over 100 nodes of 16-hex ids.
    nodes = [_node_id(i) for i in range(100)]
    assignments = tuple(
        Assignment(f"deployment-number-{d:02d}", slot, nodes[(d * 7 + slot) % 100], R)
        for d in range(50)
        for slot in range(60)
    )
    record = PlacementRecord("store-1", (12, 3), 40, assignments)
    payload = encode(record)
    assert len(payload) <= PAYLOAD_MAX_BYTES
    assert decode(payload).assignments == tuple(sorted(assignments))


def test_a_placement_over_the_record_limit_is_a_clear_error() -> None:
    nodes = [_node_id(i) for i in range(100)]
    assignments = tuple(
        Assignment(f"deployment-number-{d:02d}", slot, nodes[(d * 7 + slot) % 100], R)
        for d in range(60)
        for slot in range(90)
    )
    with pytest.raises(
        PlacementRecordError, match=r"placement of region r: 5400 replicas on 100 nodes take "
    ):
        encode(PlacementRecord("r", (1,), 1, assignments))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (PlacementRecord("R", (1,), 1, ()), "placement.region: not a region name"),
        (PlacementRecord("r", (), 1, ()), "placement.term: must be a list of 1 to 4 integers"),
        (PlacementRecord("r", (1, 2, 3, 4, 5), 1, ()), "placement.term: must be a list of 1 to 4"),
        (PlacementRecord("r", (-1,), 1, ()), "placement.term: must be a list"),
        (PlacementRecord("r", (1,), 1 << 60, ()), "placement.epoch: must be an integer 0.."),
        (
            PlacementRecord("r", (1,), 1, (Assignment("a", 0, "bad id!"),)),
            "placement.nodes: must be a list of",
        ),
        (PlacementRecord("r", (1,), 1, (Assignment("A", 0, "n1"),)), "placement.deployments: a key is not a"),
        (
            PlacementRecord("r", (1,), 1, (Assignment("a", 0, "n1"), Assignment("a", 0, "n2"))),
            "placement: a slot 0 is given twice or out of range",
        ),
        (
            PlacementRecord("r", (1,), 1, (Assignment("a", 0, "n1"), Assignment("a", 1, "n1"))),
            "placement.deployments.a: slot 1 is on a node that holds another of its slots",
        ),
    ],
)
def test_encode_refuses_what_is_not_a_placement(record: PlacementRecord, message: str) -> None:
    with pytest.raises(PlacementRecordError) as info:
        encode(record)
    assert str(info.value).startswith(message), str(info.value)


def _doc(**changes: object) -> bytes:
    doc = json.loads(PAYLOAD)
    doc.update(changes)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _entry(nodes: object, states: object, **extra: object) -> bytes:
    return _doc(deployments={"vibration": {"nodes": nodes, "states": states, **extra}}, nodes=["n1", "n4"])


BAD = {
    "not_json": (b"placement", "placement: not valid JSON"),
    "not_utf8": (b"\xff\xfe", "placement: not UTF-8 text"),
    "not_object": (b"[1,2]", "placement: not a JSON object"),
    "deep": (b"[" * 5000 + b"]" * 5000, "placement: nested 5000 deep"),
    "oversized": (b'"' + b"x" * PAYLOAD_MAX_BYTES + b'"', "placement: 16386 bytes is over the limit"),
    "huge_epoch": (
        PAYLOAD.replace(b'"epoch":7', b'"epoch":' + b"9" * 5000),
        "placement.epoch: an integer of 5000",
    ),
    "bool_epoch": (_doc(epoch=True), "placement.epoch: must be an integer"),
    "float_term": (_doc(term=[1.5]), "placement.term: must be a list"),
    "term_not_list": (_doc(term=3), "placement.term: must be a list"),
    "no_region": (_doc(region=None), "placement.region: not a region name"),
    "region_newline": (_doc(region="store-1\n"), "placement.region: not a region name"),
    "nodes_unsorted": (_doc(nodes=["n4", "n1"]), "placement.nodes: must be sorted, each id once"),
    "nodes_twice": (_doc(nodes=["n1", "n1"]), "placement.nodes: must be sorted, each id once"),
    "nodes_not_list": (_doc(nodes="n1"), "placement.nodes: must be a list of node ids"),
    "node_unused": (_doc(nodes=["n1", "n4", "n9"]), "placement.nodes: lists a node no replica is on"),
    "deployments_list": (_doc(deployments=[]), "placement.deployments: must be a mapping"),
    "entry_extra": (
        _entry([0], "r", replicas=1),
        "placement.deployments.vibration: must be a mapping of exactly",
    ),
    "entry_not_mapping": (_doc(deployments={"vibration": [0]}), "placement.deployments.vibration: must be a"),
    "lengths_differ": (
        _entry([0, 1], "r"),
        "placement.deployments.vibration: nodes must be a list and states",
    ),
    "states_not_str": (
        _entry([0], ["r"]),
        "placement.deployments.vibration: nodes must be a list and states",
    ),
    "empty": (_entry([], ""), "placement.deployments.vibration: must end with a placed slot"),
    "trailing_hole": (
        _entry([0, None], "r-"),
        "placement.deployments.vibration: must end with a placed slot",
    ),
    "hole_with_state": (_entry([None, 0], "rr"), "placement.deployments.vibration: slot 0 is unplaced"),
    "index_out_of_range": (_entry([0, 2], "rr"), "placement.deployments.vibration: slot 1 names no node"),
    "index_negative": (_entry([-1, 0], "rr"), "placement.deployments.vibration: slot 0 names no node"),
    "index_bool": (_entry([True, 0], "rr"), "placement.deployments.vibration: slot 0 names no node"),
    "bad_state": (_entry([0, 1], "rx"), "placement.deployments.vibration: slot 1 has no valid state"),
    "same_node_twice": (
        _entry([0, 0, 1], "rrr"),
        "placement.deployments.vibration: slot 1 is on a node that",
    ),
    "not_canonical": (PAYLOAD.replace(b",", b", "), "placement: payload is not in canonical form"),
}


@pytest.mark.parametrize(("payload", "message"), BAD.values(), ids=BAD.keys())
def test_every_bad_payload_is_refused_with_its_problem(payload: bytes, message: str) -> None:
    problem = payload_problem(payload)
    assert problem is not None and problem.startswith(message), problem
    with pytest.raises(PlacementRecordError):
        decode(payload)


def test_a_field_a_newer_writer_adds_is_ignored() -> None:
    newer = _doc(leader="n4")
    assert payload_problem(newer) is None
    assert decode(newer) == decode(PAYLOAD)


NODE = nacl.signing.SigningKey(b"\x0a" * 32)


def _placement(payload: bytes, version: int) -> Record:
    return sign_record(
        NODE, PLACEMENT_KIND, key_id(bytes(NODE.verify_key)), version, "region:store-1", payload
    )


def test_the_store_accepts_a_placement_and_refuses_a_bad_one() -> None:
    s = store()
    good = _placement(PAYLOAD, 1)
    assert s.merge(0.0, [good]) == [good]
    assert s.merge(0.0, [_placement(BAD["bad_state"][0], 2)]) == []
    assert drops(s) == {"drop_bad_payload": 1}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "model-x"]),
            st.integers(0, 20),
            st.sampled_from(["n1", "n2", "n3", "0123456789abcdef"]),
            st.sampled_from(list(ReplicaState)),
        ),
        max_size=30,
    ),
    st.lists(st.integers(0, 2**53 - 1), min_size=1, max_size=4),
    st.integers(0, 2**53 - 1),
)
def test_any_placement_round_trips(
    items: list[tuple[str, int, str, ReplicaState]], term: list[int], epoch: int
) -> None:
    # One replica per (deployment, slot) and per (deployment, node), as placement makes them.
    seen_slots: set[tuple[str, int]] = set()
    seen_nodes: set[tuple[str, str]] = set()
    assignments = []
    for name, slot, node_id, state in items:
        if (name, slot) not in seen_slots and (name, node_id) not in seen_nodes:
            seen_slots.add((name, slot))
            seen_nodes.add((name, node_id))
            assignments.append(Assignment(name, slot, node_id, state))
    record = PlacementRecord("r", tuple(term), epoch, tuple(assignments))
    payload = encode(record)
    assert decode(payload) == PlacementRecord("r", tuple(term), epoch, tuple(sorted(assignments)))
    assert encode(decode(payload)) == payload


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.integers(0, len(PAYLOAD) - 1).map(lambda i: PAYLOAD[:i]))
def test_garbage_is_a_problem_never_a_crash(payload: bytes) -> None:
    problem = payload_problem(payload)
    assert problem is None or problem.startswith("placement")
