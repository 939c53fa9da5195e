"""inference/kinds.py: the kind table a running node uses checks `desired` and `inventory` payloads
when a record is accepted (issue 8, finding 5)."""

from __future__ import annotations

import random

import nacl.signing
import pytest

from gossip.kinds import (
    DEFAULT_KINDS,
    DESIRED_KIND,
    INVENTORY_KIND,
    KEYRING_KIND,
    NETKEY_KIND,
    PLACEMENT_KIND,
    REBALANCE_KIND,
    REPLICAS_KIND,
    SCHEDULING_KIND,
    VOTERS_RESET_KIND,
)
from gossip.records import Record, key_id, sign_record
from gossip.state import StateStore
from gossip.trust import StaticTrust
from inference.desired import sign_deletion, sign_deployment
from inference.inventory import Inventory, encode, inventory_scope
from inference.kinds import CHECKED_KINDS
from inference.manifest import canonical_bytes, parse_manifest
from tests.inference.test_manifest import GOOD

OPERATOR = nacl.signing.SigningKey(b"\x05" * 32)
NODE = nacl.signing.SigningKey(b"\x0a" * 32)
NODE_ID = key_id(bytes(NODE.verify_key))
INVENTORY = Inventory(
    cpu_count=4,
    load_1m=0.5,
    cpu_percent=12.5,
    memory_total_bytes=8 << 30,
    memory_available_bytes=4 << 30,
    disk_free_bytes=100 << 30,
    accelerators=("CPUExecutionProvider",),
    os="linux",
    arch="aarch64",
    python="3.11.9",
    labels={"site": "a", "camera": "yes"},
    region="north",
)


def store(kinds: object = CHECKED_KINDS) -> StateStore:
    trust = StaticTrust(operators=[bytes(OPERATOR.verify_key)], nodes=[bytes(NODE.verify_key)])
    return StateStore(trust, random.Random(0), kinds=kinds)  # type: ignore[arg-type]


def desired(payload: bytes, version: int = 5) -> Record:
    return sign_record(OPERATOR, DESIRED_KIND, "deployment/vibration", version, "fleet", payload)


def inventory(payload: bytes, version: int = 5) -> Record:
    return sign_record(NODE, INVENTORY_KIND, NODE_ID, version, inventory_scope("north"), payload)


def drops(s: StateStore) -> dict[str, int]:
    return {k: v for k, v in s.counters.items() if k.startswith("drop_") and v}


CANONICAL = canonical_bytes(parse_manifest(GOOD))
BAD_DESIRED = {
    # The finding: a 5,000-digit priority, signed by an operator key, made every node answer 500.
    "huge_priority": CANONICAL.replace(b'"priority":100', b'"priority":' + b"9" * 5000),
    "over_limit": CANONICAL.replace(b'"priority":100', b'"priority":1000001'),
    "not_json": b"vibration@1",
    "not_canonical": CANONICAL.replace(b",", b", "),
    "deep": b"[" * 5000 + b"]" * 5000,
    "name_newline": CANONICAL.replace(b'"name":"vibration"', b'"name":"vibration\\n"'),
}


def test_a_valid_deployment_and_its_deletion_are_accepted() -> None:
    s = store()
    live = sign_deployment(OPERATOR, parse_manifest(GOOD), 5)
    assert s.merge(0.0, [live]) == [live]
    tombstone = sign_deletion(OPERATOR, "vibration", 6)
    assert s.merge(0.0, [tombstone]) == [tombstone] and drops(s) == {}


@pytest.mark.parametrize("payload", BAD_DESIRED.values(), ids=BAD_DESIRED.keys())
def test_a_signed_desired_record_with_a_bad_payload_is_refused_and_counted(payload: bytes) -> None:
    s = store()
    assert s.merge(0.0, [desired(payload)]) == []  # nothing to relay
    assert s.get(DESIRED_KIND, "deployment/vibration") is None
    assert drops(s) == {"drop_bad_payload": 1}
    # Restoring it from disk (held before the check existed) refuses it the same way.
    assert s.restore([desired(payload)]) == 0 and drops(s) == {"drop_bad_payload": 2}


def test_the_default_table_checks_no_payload() -> None:
    # gossip alone cannot know a manifest: the checks come only with inference/kinds.py's table
    # (the schemas gossip owns, the netkey notice and the voters reset, are checked in both).
    s = store(DEFAULT_KINDS)
    record = desired(BAD_DESIRED["huge_priority"])
    assert s.merge(0.0, [record]) == [record]
    assert {p.name for p in DEFAULT_KINDS.values() if p.payload_check is not None} == {
        NETKEY_KIND,
        KEYRING_KIND,
        VOTERS_RESET_KIND,
    }
    assert {p.name for p in CHECKED_KINDS.values() if p.payload_check is not None} == {
        DESIRED_KIND,
        INVENTORY_KIND,
        NETKEY_KIND,
        KEYRING_KIND,
        PLACEMENT_KIND,
        REPLICAS_KIND,
        SCHEDULING_KIND,
        REBALANCE_KIND,
        VOTERS_RESET_KIND,
    }
    assert [p.name for p in CHECKED_KINDS.values()] == list(DEFAULT_KINDS)


def test_inventory_payloads_are_checked() -> None:
    s = store()
    good = inventory(encode(INVENTORY))
    assert s.merge(0.0, [good]) == [good]
    newer = encode(INVENTORY)[:-1] + b',"gpu_temp_c":41}'  # a field a newer node adds is fine
    assert s.merge(0.0, [inventory(newer, 6)]) != []
    for version, payload in enumerate(
        [
            b"cpu=4",
            encode(INVENTORY).replace(b'"cpu_count":4', b'"cpu_count":-4'),
            encode(INVENTORY).replace(b'"cpu_count":4', b'"cpu_count":' + b"9" * 5000),
            encode(INVENTORY).replace(b'"region":"north"', b'"region":"north\\n"'),
            encode(INVENTORY).replace(b'"site":"a"', b'"site\\n":"a"'),
            encode(INVENTORY).replace(b'"load_1m":0.5', b'"load_1m":NaN'),
            encode(INVENTORY).replace(b'"os":"linux"', b'"os":"' + b"x" * 200 + b'"'),
        ],
        start=7,
    ):
        assert s.merge(0.0, [inventory(payload, version)]) == [], payload[:80]
    assert drops(s) == {"drop_bad_payload": 7}
