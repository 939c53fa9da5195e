"""The kind table: a kind added by one table entry is stored by the table's rules alone."""

from __future__ import annotations

import dataclasses
import random

import nacl.signing
import pytest

from gossip import records
from gossip.admission import make_admission, sign_invite
from gossip.kinds import DEFAULT_KINDS, KindPolicy, KindTable, Scope, Writer, kind_table
from gossip.records import Record
from gossip.state import StateStore
from gossip.trust import StaticTrust, encode_grant

CLUSTER = "c1"
OP = nacl.signing.SigningKey(b"\x01" * 32)
GRANTED = nacl.signing.SigningKey(b"\x02" * 32)
NODE_A = nacl.signing.SigningKey(b"\x0a" * 32)
NODE_B = nacl.signing.SigningKey(b"\x0b" * 32)

# Test-only kinds, as a new feature would add them: the voter set a region's leader
# publishes, and an operator's reset of a region's voters.
VOTERS = KindPolicy("voters", Scope.REGION, Writer.NODE, owner_keyed=True, priority=6, payload_max_bytes=64)
VOTER_RESET = KindPolicy(
    "voter-reset", Scope.FLEET, Writer.ROOT_OPERATOR, owner_keyed=False, priority=7, deletable=False
)
KINDS = kind_table((*DEFAULT_KINDS.values(), VOTERS, VOTER_RESET))


def kid(sk: nacl.signing.SigningKey) -> str:
    return records.key_id(bytes(sk.verify_key))


def admission(sk: nacl.signing.SigningKey, region: str = "a") -> Record:
    invite = sign_invite(OP, CLUSTER, expires_at_s=10**9, nonce=b"\x07" * 16)
    return make_admission(sk, invite, region=region, admitted_at_s=0)


def voters(sk: nacl.signing.SigningKey, version: int = 2, **kw: object) -> Record:
    fields: dict[str, object] = {"key": kid(sk), "scope": "region:a", "payload": b"a,b,c"}
    fields.update(kw)
    return records.sign_record(sk, "voters", version=version, **fields)  # type: ignore[arg-type]


def store(kinds: KindTable = KINDS) -> StateStore:
    """A store whose root operator is OP, with NODE_A and NODE_B admitted and GRANTED granted."""
    s = StateStore(StaticTrust([bytes(OP.verify_key)], cluster_id=CLUSTER), random.Random(0), kinds=kinds)
    grant = records.sign_record(
        OP, "trust", kid(GRANTED), 1, "fleet", encode_grant(bytes(GRANTED.verify_key), True)
    )
    assert len(s.merge(0.0, [admission(NODE_A), admission(NODE_B), grant])) == 3
    return s


def drops(s: StateStore) -> dict[str, int]:
    return {k: v for k, v in s.counters.items() if k.startswith("drop_") and v}


def test_default_store_drops_a_kind_not_in_its_table() -> None:
    s = store(DEFAULT_KINDS)
    assert s.merge(0.0, [voters(NODE_A)]) == []
    assert drops(s) == {"drop_unknown_kind": 1}


def test_added_node_kind_is_accepted_from_the_node_its_key_names() -> None:
    s = store()
    r = voters(NODE_A)
    assert s.merge(0.0, [r]) == [r]
    assert s.get("voters", kid(NODE_A)) == r
    assert drops(s) == {}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (voters(NODE_A, key="someone-else"), "not_allowed"),  # owner-keyed
        (voters(OP), "not_allowed"),  # nodes write it, not operators (even keyed by their own id)
        (voters(NODE_A, scope="fleet"), "bad_scope"),  # a region kind
        (voters(NODE_A, payload=b"x" * 65), "oversized"),  # its own payload limit
    ],
)
def test_added_node_kind_is_refused_by_the_table_rules(record: Record, reason: str) -> None:
    s = store()
    assert s.merge(0.0, [record]) == []
    assert drops(s) == {f"drop_{reason}": 1}


def test_revocation_removes_and_refuses_an_added_node_kind() -> None:
    s = store()
    s.merge(0.0, [voters(NODE_A), voters(NODE_B)])
    revoke = records.sign_record(OP, "revocation", kid(NODE_A), 2, "fleet", b"lost")
    assert s.merge(0.0, [revoke]) == [revoke]
    assert s.get("voters", kid(NODE_A)) is None
    assert s.get("voters", kid(NODE_B)) is not None
    assert s.merge(0.0, [voters(NODE_A, version=3)]) == []
    assert drops(s) == {"drop_revoked_author": 1}


def test_added_root_operator_kind() -> None:
    s = store()
    reset = records.sign_record(OP, "voter-reset", "a", 2, "fleet", b"n1,n2,n3")
    assert s.merge(0.0, [reset]) == [reset]
    by_granted = records.sign_record(GRANTED, "voter-reset", "a", 3, "fleet", b"n4")
    by_node = records.sign_record(NODE_A, "voter-reset", "a", 3, "fleet", b"n4")
    tombstone = records.sign_record(OP, "voter-reset", "a", 4, "fleet", b"", deleted=True)
    assert s.merge(0.0, [by_granted, by_node, tombstone]) == []
    assert drops(s) == {"drop_not_allowed": 3}
    assert s.get("voter-reset", "a") == reset


@pytest.mark.parametrize(("voters_priority", "held"), [(6, True), (1, False)])
def test_a_batch_is_merged_in_table_priority(voters_priority: int, held: bool) -> None:
    """A joiner's admission (priority 2) and its voters record arrive in one batch: voters
    after admissions is accepted; before them, its author is not known yet."""
    early = dataclasses.replace(VOTERS, priority=voters_priority)
    s = store(kind_table((*DEFAULT_KINDS.values(), early)))
    joiner = nacl.signing.SigningKey(b"\x0c" * 32)
    new = s.merge(0.0, [voters(joiner), admission(joiner)])
    assert (s.get("voters", kid(joiner)) is not None) is held
    assert len(new) == (2 if held else 1)
    assert drops(s) == ({} if held else {"drop_unknown_author": 1})


def test_static_trust_reads_its_table() -> None:
    r = voters(NODE_A, version=1)
    with_kind = StaticTrust([bytes(OP.verify_key)], [bytes(NODE_A.verify_key)], kinds=KINDS)
    without = StaticTrust([bytes(OP.verify_key)], [bytes(NODE_A.verify_key)])
    assert with_kind.may_write(kid(NODE_A), "voters", kid(NODE_A))
    assert not without.may_write(kid(NODE_A), "voters", kid(NODE_A))
    assert not with_kind.may_write(kid(NODE_A), "voters", kid(NODE_B))
    assert not with_kind.may_write(kid(NODE_A), "voter-reset", kid(NODE_A))  # an operator kind
    assert with_kind.may_write(kid(OP), "voter-reset", "a")
    s = StateStore(with_kind, random.Random(0), kinds=KINDS)
    assert s.merge(0.0, [r]) == [r]


def test_default_table_is_todays_rules() -> None:
    assert tuple(DEFAULT_KINDS) == records.KINDS
    by_priority = sorted(DEFAULT_KINDS.values(), key=lambda k: k.priority)
    assert (
        " ".join(k.name for k in by_priority)
        == "revocation trust netkey admission desired scheduling rebalance voters-reset placement replicas "
        "inventory keyring"
    )
    node_kinds = {k.name for k in DEFAULT_KINDS.values() if k.node_record}
    assert node_kinds == {"inventory", "placement", "replicas", "admission", "keyring"}
    assert {k.name for k in DEFAULT_KINDS.values() if not k.deletable} == {
        "revocation",
        "trust",
        "admission",
        "netkey",
        "voters-reset",
    }


def test_table_refuses_incoherent_policies() -> None:
    with pytest.raises(ValueError, match="keyed by its author"):
        KindPolicy("shared", Scope.REGION, Writer.NODE, owner_keyed=False, priority=0)
    with pytest.raises(ValueError, match="twice"):
        kind_table((VOTERS, VOTERS))


# --- payload checks (issue 8, finding 5) ------------------------------------------------------


def _refuse_bad(payload: bytes) -> str | None:
    return "starts with bad" if payload.startswith(b"bad") else None


CHECKED_VOTERS = dataclasses.replace(VOTERS, payload_check=_refuse_bad)


def test_a_payload_its_kind_refuses_is_dropped_counted_and_not_relayed() -> None:
    s = store(kind_table((*DEFAULT_KINDS.values(), CHECKED_VOTERS)))
    bad = voters(NODE_A, payload=b"bad,b")
    assert s.merge(0.0, [bad]) == []
    assert s.get("voters", kid(NODE_A)) is None and drops(s) == {"drop_bad_payload": 1}
    good = voters(NODE_A, version=3)
    assert s.merge(0.0, [good]) == [good]
    # A tombstone has no payload to check.
    tombstone = voters(NODE_A, version=4, payload=b"", deleted=True)
    assert s.merge(0.0, [tombstone]) == [tombstone]


def test_the_payload_is_checked_after_the_signature() -> None:
    s = store(kind_table((*DEFAULT_KINDS.values(), CHECKED_VOTERS)))
    forged = dataclasses.replace(voters(NODE_A, payload=b"bad,b"), signature=b"\x00" * 64)
    assert s.merge(0.0, [forged]) == [] and drops(s) == {"drop_bad_signature": 1}


def test_without_a_check_any_payload_is_held() -> None:
    s = store()
    bad = voters(NODE_A, payload=b"bad,b")
    assert s.merge(0.0, [bad]) == [bad]
