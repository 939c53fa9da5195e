"""Bounded decoding of the payloads placement in the mesh adds: `replicas`, `scheduling`,
`rebalance`, and the certificate in a `placement` record; the store refuses bad ones (counted)."""

from __future__ import annotations

import base64
import json

import pytest

from consensus.config import Era
from gossip.kinds import FLEET_SCOPE, REBALANCE_KIND, REPLICAS_KIND, SCHEDULING_KIND
from gossip.records import sign_record
from inference import operator_records as ops
from inference import replica_states
from inference.assignments import Assignment, ReplicaState
from inference.placement_record import PlacementRecord, PlacementRecordError, decode, encode, payload_problem
from inference.replica_states import HeldReplica, ReplicaReport
from inference.resources import NodeStatus
from inference.stamps import Stamp
from tests.inference.placing_harness import IDS, KEYS, OPERATOR, REGION, certificate, new_store

GOOD_REPORT = ReplicaReport(
    (HeldReplica("cam", 0, ReplicaState.READY), HeldReplica("vib", 3, ReplicaState.PROVISIONAL)),
    Stamp(Era(2, IDS[0]), 7, 4),
)


def test_a_report_round_trips() -> None:
    payload = replica_states.encode(GOOD_REPORT)
    assert replica_states.decode(payload) == GOOD_REPORT
    assert replica_states.decode(replica_states.encode(ReplicaReport(()))) == ReplicaReport(())
    newer = payload[:-1] + b',"zz":1}'  # a field a newer writer adds is ignored
    assert replica_states.decode(newer) == GOOD_REPORT


def test_a_report_carries_the_start_of_each_failed_replicas_error() -> None:
    report = ReplicaReport(
        (HeldReplica("cam", 0, ReplicaState.FAILED), HeldReplica("vib", 1, ReplicaState.READY)),
        None,
        (("cam", "load failed: [ONNXRuntimeError] : 10 : INVALID_GRAPH"),),
    )
    payload = replica_states.encode(report)
    assert b'"errors":{"cam":"load failed' in payload
    back = replica_states.decode(payload)
    assert back == report and back.error_of("cam") == report.errors[0][1] and back.error_of("vib") is None
    older = replica_states.decode(replica_states.encode(GOOD_REPORT))
    assert older.errors == () and b"errors" not in replica_states.encode(GOOD_REPORT)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"errors":{"vib":"boom"},"replicas":[["vib",0,"ready"]]}',  # an error of a replica not failed
        b'{"errors":{"cam":"boom"},"replicas":[["vib",0,"failed"]]}',  # of a replica not held
        b'{"errors":{"vib":""},"replicas":[["vib",0,"failed"]]}',
        b'{"errors":{"vib":"' + b"x" * 65 + b'"},"replicas":[["vib",0,"failed"]]}',  # too long
        b'{"errors":{"vib":7},"replicas":[["vib",0,"failed"]]}',
        b'{"errors":{},"replicas":[["vib",0,"failed"]]}',
        b'{"errors":["vib"],"replicas":[["vib",0,"failed"]]}',
        b'{"errors":{'
        + b",".join(b'"d%d":"x"' % i for i in range(9))
        + b'},"replicas":['
        + b",".join(b'["d%d",0,"failed"]' % i for i in range(9))
        + b"]}",  # more than ERRORS_MAX
    ],
)
def test_bad_errors_in_a_report_are_refused(payload: bytes) -> None:
    assert replica_states.payload_problem(payload) is not None


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"replicas":{}}',
        b'{"replicas":[["vib",0,"ready","extra"]]}',  # unknown field of a replica
        b'{"replicas":[["vib",0,"dancing"]]}',
        b'{"replicas":[["Vib",0,"ready"]]}',
        b'{"replicas":[["vib",-1,"ready"]]}',
        b'{"replicas":[["vib",' + b"9" * 40 + b',"ready"]]}',  # a huge integer
        b'{"replicas":[["vib",9007199254740992,"ready"]]}',
        b'{"replicas":[["vib",0,"ready"],["cam",0,"ready"]]}',  # not sorted
        b'{"replicas":[["vib",0,"ready"],["vib",1,"ready"]]}',  # a deployment twice
        b'{"replicas":[[[[["vib"]]]]]}',  # deep nesting
        b'{"replicas": []}',  # not canonical
        b'{"replicas":[],"stamp":[0,"n",1]}',
        b'{"replicas":[],"stamp":[0,5,1,1]}',
        b'{"replicas":[' + b",".join([b'["d%d",0,"ready"]' % i for i in range(600)]) + b"]}",  # too many
        b'{"replicas":"' + b"x" * 20_000 + b'"}',  # oversized
    ],
)
def test_bad_reports_are_refused(payload: bytes) -> None:
    assert replica_states.payload_problem(payload) is not None
    with pytest.raises(replica_states.ReplicaStatesError):
        replica_states.decode(payload)


def test_operator_records_round_trip() -> None:
    command = ops.Scheduling(IDS[1], NodeStatus.DRAINING)
    assert ops.decode_scheduling(ops.encode_scheduling(command)) == command
    assert ops.decode_rebalance(ops.encode_rebalance(ops.Rebalance(REGION, 3))) == ops.Rebalance(REGION, 3)
    with pytest.raises(ops.OperatorRecordError):
        ops.encode_scheduling(ops.Scheduling(IDS[1], NodeStatus.SCHEDULABLE))  # that is a tombstone


@pytest.mark.parametrize(
    "payload",
    [
        b"{",
        b'{"mode":"draining"}',
        b'{"mode":"draining","node":"n1","why":"x"}',  # an unknown field
        b'{"mode":"sleeping","node":"n1"}',
        b'{"mode":"draining","node":"bad id!"}',
        b'{"node":"n1","mode":"draining"}',  # not canonical
        b'{"mode":["draining"],"node":"n1"}',  # nested where a string belongs
        b'{"mode":"draining","node":"' + b"n" * 300 + b'"}',  # oversized
    ],
)
def test_bad_scheduling_payloads_are_refused(payload: bytes) -> None:
    assert ops.scheduling_problem(payload) is not None


@pytest.mark.parametrize(
    "payload",
    [
        b'{"generation":0,"region":"r"}',
        b'{"generation":1,"region":"R!"}',
        b'{"generation":' + b"9" * 30 + b',"region":"r"}',  # a huge integer
        b'{"generation":1.5,"region":"r"}',
        b'{"generation":1,"region":"r","x":1}',
        b'{"generation":[[[[1]]]],"region":"r"}',  # deep nesting
    ],
)
def test_bad_rebalance_payloads_are_refused(payload: bytes) -> None:
    assert ops.rebalance_problem(payload) is not None


def test_statuses_and_generations_come_from_the_held_records() -> None:
    cordon = sign_record(
        OPERATOR,
        SCHEDULING_KIND,
        IDS[1],
        1,
        FLEET_SCOPE,
        ops.encode_scheduling(ops.Scheduling(IDS[1], NodeStatus.CORDONED)),
    )
    mismatched = sign_record(
        OPERATOR,
        SCHEDULING_KIND,
        IDS[2],
        2,
        FLEET_SCOPE,
        ops.encode_scheduling(ops.Scheduling(IDS[3], NodeStatus.DRAINING)),
    )
    tomb = sign_record(OPERATOR, SCHEDULING_KIND, IDS[4], 3, FLEET_SCOPE, b"", True)
    assert ops.node_statuses([cordon, mismatched, tomb]) == {IDS[1]: NodeStatus.CORDONED}
    other = sign_record(
        OPERATOR, REBALANCE_KIND, "other", 4, FLEET_SCOPE, ops.encode_rebalance(ops.Rebalance("other", 9))
    )
    mine = sign_record(
        OPERATOR, REBALANCE_KIND, REGION, 5, FLEET_SCOPE, ops.encode_rebalance(ops.Rebalance(REGION, 2))
    )
    assert ops.rebalance_generation([other, mine], REGION) == 2
    assert ops.rebalance_generation([other], REGION) == 0


def test_the_placement_record_carries_a_certificate() -> None:
    cert = certificate(IDS[0], 3)
    record = PlacementRecord(REGION, (0, 3), 1, (Assignment("vib", 0, IDS[0]),), cert, 2)
    assert decode(encode(record)) == record
    doc = json.loads(encode(record))
    for bad in ("!!!", "", base64.b64encode(b"x" * 3000).decode(), doc["cert"] + "="):
        doc["cert"] = bad
        payload = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        assert payload_problem(payload) is not None, bad
    doc["cert"] = base64.b64encode(cert).decode()
    for rebalanced in (0, -1, 1 << 60, "1"):
        doc["rebalanced"] = rebalanced
        payload = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        assert payload_problem(payload) is not None, rebalanced
    with pytest.raises(PlacementRecordError):
        encode(PlacementRecord(REGION, (0, 3), 1, (), b"x" * 3000))


def test_the_store_refuses_bad_payloads_of_the_new_kinds() -> None:
    store = new_store()
    good = sign_record(
        KEYS[0], REPLICAS_KIND, IDS[0], 1, "region:" + REGION, replica_states.encode(GOOD_REPORT)
    )
    bad = sign_record(KEYS[1], REPLICAS_KIND, IDS[1], 1, "region:" + REGION, b'{"replicas":7}')
    bad_op = sign_record(OPERATOR, SCHEDULING_KIND, IDS[1], 1, FLEET_SCOPE, b'{"mode":"x","node":"n"}')
    bad_rebalance = sign_record(OPERATOR, REBALANCE_KIND, REGION, 2, FLEET_SCOPE, b"{}")
    assert store.merge(0.0, [good, bad, bad_op, bad_rebalance]) == [good]
    assert store.counters["drop_bad_payload"] == 3
    # Only the node itself writes its replicas record; operators write the operator kinds.
    forged = sign_record(
        KEYS[1], REPLICAS_KIND, IDS[0], 2, "region:" + REGION, replica_states.encode(GOOD_REPORT)
    )
    by_node = sign_record(
        KEYS[1],
        SCHEDULING_KIND,
        IDS[1],
        3,
        FLEET_SCOPE,
        ops.encode_scheduling(ops.Scheduling(IDS[1], NodeStatus.CORDONED)),
    )
    assert store.merge(0.0, [forged, by_node]) == []
    assert store.counters["drop_not_allowed"] == 2
