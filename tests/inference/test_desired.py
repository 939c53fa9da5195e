"""inference/desired.py: a deployment as its operator-signed `desired` record."""

from __future__ import annotations

import nacl.signing

from gossip.kinds import DESIRED_KIND
from gossip.records import decode_record, encode_record, verify_record
from inference.desired import sign_deletion, sign_deployment
from inference.manifest import canonical_bytes, decode_payload, parse_manifest
from tests.inference.test_manifest import GOOD

KEY = nacl.signing.SigningKey(b"\x05" * 32)


def test_a_deployment_record_carries_the_canonical_manifest_in_its_fleet_slot() -> None:
    deployment = parse_manifest(GOOD)
    record = sign_deployment(KEY, deployment, 7)
    assert (record.kind, record.key, record.scope, record.version) == (
        DESIRED_KIND,
        "deployment/vibration",
        "fleet",
        7,
    )
    assert record.payload == canonical_bytes(deployment) and not record.deleted
    assert decode_payload(record.payload) == deployment
    assert verify_record(record, bytes(KEY.verify_key))
    assert decode_record(encode_record(record)) == record


def test_a_deletion_is_a_signed_tombstone_of_the_same_slot() -> None:
    deployment = parse_manifest(GOOD)
    tombstone = sign_deletion(KEY, deployment.name, 8)
    live = sign_deployment(KEY, deployment, 7)
    assert (tombstone.kind, tombstone.key, tombstone.scope) == (live.kind, live.key, live.scope)
    assert tombstone.deleted and tombstone.payload == b"" and tombstone.version == 8
    assert verify_record(tombstone, bytes(KEY.verify_key))
