"""Invites and admission: the codec, every refusal, the store's keys, and the membership gate."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip import admission as adm
from gossip.codec import DecodeError
from gossip.config import LAN, WAN
from gossip.events import AdmissionRefused, MemberState, Revoked
from gossip.node import GossipNode
from gossip.records import Record, key_id, sign_record
from gossip.state import StateStore
from gossip.trust import StaticTrust, encode_grant
from tests.gossip.harness import Link

OPERATOR = nacl.signing.SigningKey(b"\x07" * 32)
OTHER_OPERATOR = nacl.signing.SigningKey(b"\x08" * 32)
CLUSTER = "c-admission"
EXPIRES_S = 1_800_000_000
JOINED_S = 1_700_000_000


def pk(sk: nacl.signing.SigningKey) -> bytes:
    return bytes(sk.verify_key)


def node_key(i: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([0x40 + i]) * 32)


def invite(signer: nacl.signing.SigningKey = OPERATOR, **kw: object) -> adm.Invite:
    fields: dict[str, object] = {"expires_at_s": EXPIRES_S, "nonce": b"\x01" * 16}
    fields.update(kw)
    cluster = str(fields.pop("cluster_id", CLUSTER))
    return adm.sign_invite(signer, cluster, **fields)  # type: ignore[arg-type]


def admission_of(
    key: nacl.signing.SigningKey, inv: adm.Invite | None = None, region: str = "r0", at_s: int = JOINED_S
) -> Record:
    return adm.make_admission(key, inv or invite(), region=region, admitted_at_s=at_s)


def trust() -> StaticTrust:
    return StaticTrust(operators=[pk(OPERATOR)], cluster_id=CLUSTER)


def store(region: str | None = "r0") -> StateStore:
    return StateStore(trust(), random.Random(0), region=region)


def drops(s: StateStore) -> dict[str, int]:
    return {k: v for k, v in s.counters.items() if k.startswith("drop_") and v}


# --- the codec -----------------------------------------------------------------------------


def test_invite_round_trip_and_signature() -> None:
    inv = invite(region="r1", uses=3)
    assert adm.decode_invite(adm.encode_invite(inv)) == inv
    assert adm.invite_problem(inv, trust(), region="r1", at_s=JOINED_S) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes) -> None:
    for decode in (adm.decode_invite, adm.decode_admission):
        with contextlib.suppress(DecodeError):
            decode(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 400), st.integers(0, 255))
def test_any_changed_byte_of_an_invite_is_refused(position: int, value: int) -> None:
    blob = bytearray(adm.encode_invite(invite()))
    position %= len(blob)
    if blob[position] == value:
        return
    blob[position] = value
    try:
        inv = adm.decode_invite(bytes(blob))
    except DecodeError:
        return
    assert adm.invite_problem(inv, trust(), region="r0", at_s=JOINED_S) is not None


# --- every refusal ------------------------------------------------------------------------


def _forged() -> adm.Invite:
    """An invite naming the real operator, signed by another key."""
    real = invite()
    other = invite(signer=OTHER_OPERATOR)
    return dataclasses.replace(real, signature=other.signature)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (admission_of(node_key(1), _forged()), "invite_forged"),
        (admission_of(node_key(1), invite(signer=OTHER_OPERATOR)), "invite_unknown_operator"),
        (admission_of(node_key(1), invite(cluster_id="someone-else")), "invite_other_cluster"),
        (admission_of(node_key(1), invite(region="r9")), "invite_wrong_region"),
        (admission_of(node_key(1), at_s=EXPIRES_S + 1), "invite_expired"),
        (
            sign_record(
                node_key(1),
                "admission",
                key_id(pk(node_key(1))),
                1,
                "region:r0",
                adm.encode_admission(pk(node_key(2)), invite(), JOINED_S),
            ),
            "admission_key_mismatch",
        ),
        (
            sign_record(node_key(1), "admission", key_id(pk(node_key(1))), 1, "region:r0", b"\x01junk"),
            "admission_malformed",
        ),
    ],
    ids=["forged", "unknown-operator", "other-cluster", "wrong-region", "expired", "key-mismatch", "junk"],
)
def test_a_bad_admission_is_refused_with_its_reason(record: Record, reason: str) -> None:
    s = store()
    assert s.merge(0.0, [record]) == []
    assert drops(s) == {f"drop_{reason}": 1}
    assert s.drain_refusals() == [(record.key, reason)]
    assert not s.is_admitted(record.key)


def test_the_last_second_of_an_invite_still_admits() -> None:
    s = store()
    r = admission_of(node_key(1), at_s=EXPIRES_S)
    assert s.merge(0.0, [r]) == [r]
    assert s.is_admitted(r.key)


def test_a_tampered_admission_is_refused() -> None:
    r = admission_of(node_key(1))
    tampered = dataclasses.replace(
        r, payload=adm.encode_admission(pk(node_key(1)), invite(uses=9, region="r0"), JOINED_S)
    )
    s = store()
    assert s.merge(0.0, [tampered]) == []
    assert drops(s) == {"drop_bad_signature": 1}


def test_an_admitted_nodes_records_are_accepted_even_when_they_come_first_in_a_batch() -> None:
    key = node_key(1)
    me = key_id(pk(key))
    inv_record = sign_record(key, "inventory", me, 5, "region:r0", b"{}")
    s = store()
    assert s.merge(0.0, [inv_record]) == []  # alone: unknown author
    assert drops(s) == {"drop_unknown_author": 1}
    accepted = s.merge(0.0, [inv_record, admission_of(key)])  # admission judged first
    assert [r.kind for r in accepted] == ["inventory", "admission"]
    assert s.admitted_key(me) == pk(key)


def test_revocation_removes_the_admission_and_refuses_it_for_ever() -> None:
    key = node_key(1)
    me = key_id(pk(key))
    s = store()
    s.merge(0.0, [admission_of(key), sign_record(key, "inventory", me, 2, "region:r0", b"{}")])
    revocation = sign_record(OPERATOR, "revocation", me, 1, "fleet", b"lost device")
    assert s.merge(0.0, [revocation]) == [revocation]
    assert not s.is_admitted(me)
    assert s.get("inventory", me) is None
    fresh = admission_of(key, invite(nonce=b"\x02" * 16))
    assert s.merge(0.0, [fresh]) == []
    assert drops(s) == {"drop_revoked_author": 1}


# --- operator keys granted by trust records ------------------------------------------------------


def grant(
    key: nacl.signing.SigningKey,
    version: int,
    active: bool = True,
    signer: nacl.signing.SigningKey = OPERATOR,
    cutoff: int = 0,
) -> Record:
    payload = encode_grant(pk(key), active, cutoff)
    return sign_record(signer, "trust", key_id(pk(key)), version, "fleet", payload)


def test_a_granted_operator_writes_desired_state_but_not_invites() -> None:
    s = store()
    assert s.merge(0.0, [grant(OTHER_OPERATOR, 1)])
    other = key_id(pk(OTHER_OPERATOR))
    assert s.is_operator(other) and s.is_active_operator(other)
    d = sign_record(OTHER_OPERATOR, "desired", "vib", 1, "fleet", b"x")
    assert s.merge(0.0, [d]) == [d]
    r = admission_of(node_key(3), invite(signer=OTHER_OPERATOR))
    assert s.merge(0.0, [r]) == []
    assert drops(s) == {"drop_invite_unknown_operator": 1}


def test_a_granted_operator_may_not_grant_revoke_or_be_deleted() -> None:
    s = store()
    s.merge(0.0, [grant(OTHER_OPERATOR, 1)])
    third = nacl.signing.SigningKey(b"\x09" * 32)
    refused = [
        grant(third, 1, signer=OTHER_OPERATOR),
        sign_record(OTHER_OPERATOR, "revocation", key_id(pk(node_key(1))), 1, "fleet", b"x"),
        sign_record(OPERATOR, "trust", key_id(pk(OTHER_OPERATOR)), 2, "fleet", b"", True),
        sign_record(OPERATOR, "trust", key_id(pk(third)), 1, "fleet", encode_grant(pk(OTHER_OPERATOR), True)),
    ]
    assert s.merge(0.0, refused) == []
    assert drops(s) == {"drop_not_allowed": 2, "drop_bad_grant": 2}


def test_removing_an_operator_keeps_what_it_signed_before_its_cutoff_in_any_order() -> None:
    before = sign_record(OTHER_OPERATOR, "desired", "vib", 1000, "fleet", b"x")
    after = sign_record(OTHER_OPERATOR, "desired", "cam", 3000, "fleet", b"y")
    batch = [grant(OTHER_OPERATOR, 1), before, after, grant(OTHER_OPERATOR, 2, active=False, cutoff=2000)]
    other = key_id(pk(OTHER_OPERATOR))
    outcomes = set()
    for order in itertools.permutations(batch):
        s = store()
        for r in order * 2:  # twice: a record before its author's grant comes again by anti-entropy
            s.merge(0.0, [r])
        assert not s.is_active_operator(other) and s.operators() == {other: (pk(OTHER_OPERATOR), False)}
        outcomes.add(tuple(s.snapshot()))
    # The same state whatever the order: `after` (signed past the cutoff) is nowhere.
    assert len(outcomes) == 1
    (held,) = outcomes
    assert before in held and after not in held


def test_revoking_a_granted_operator_key_never_touches_operator_records() -> None:
    d = sign_record(OTHER_OPERATOR, "desired", "vib", 1000, "fleet", b"x")
    revoke = sign_record(OPERATOR, "revocation", key_id(pk(OTHER_OPERATOR)), 1, "fleet", b"")
    batch = [grant(OTHER_OPERATOR, 1), d, revoke]
    outcomes = set()
    for order in itertools.permutations(batch):
        s = store()
        for r in order * 2:
            s.merge(0.0, [r])
        outcomes.add(tuple(s.snapshot()))
    assert len(outcomes) == 1 and d in next(iter(outcomes))


def test_invite_seats_are_the_same_in_every_order_and_one_admission_per_device() -> None:
    one = invite(uses=1, nonce=b"\x05" * 16, region="r0")
    x1 = admission_of(node_key(1), one, at_s=JOINED_S + 100)
    y = admission_of(node_key(2), one, at_s=JOINED_S + 200)
    x2 = sign_record(node_key(1), "admission", x1.key, 2, x1.scope, x1.payload)
    outcomes = set()
    for order in itertools.permutations([x1, y, x2]):
        s = store()
        for r in order * 2:
            s.merge(0.0, [r])
        outcomes.add(tuple(s.snapshot()))
    assert outcomes == {(x1,)}
    s = store()
    s.merge(0.0, [x2])
    assert drops(s) == {"drop_invite_reused": 1}


def test_an_invite_of_limited_uses_must_name_its_region() -> None:
    with pytest.raises(ValueError, match="must name its region"):
        invite(uses=2)


# --- the membership gate (nodes on an in-memory link) --------------------------------------------


def admitted_region(count: int) -> tuple[Link, list[GossipNode]]:
    link = Link(seed=5, config=LAN, trust=trust())
    nodes = [
        link.add(f"n{i}", "r0", fleet_config=WAN, node_key=node_key(i), admission=admission_of(node_key(i)))
        for i in range(count)
    ]
    for node in nodes[1:]:
        node.join(link.now, [nodes[0].addr])
        link._flush(node)
    link.run_until(15.0)
    return link, nodes


def admitted_regions(regions: int, per_region: int) -> tuple[Link, list[GossipNode]]:
    """Admitted nodes in regions r0.., each joining through its region's first node and n0 of r0."""
    link = Link(seed=8, config=LAN, trust=trust())
    nodes = [
        link.add(
            f"r{r}n{i}",
            f"r{r}",
            fleet_config=WAN,
            node_key=node_key(4 * r + i),
            admission=admission_of(node_key(4 * r + i), region=f"r{r}"),
        )
        for r in range(regions)
        for i in range(per_region)
    ]
    for node in nodes[1:]:
        own = next(n for n in nodes if n.region == node.region)
        node.join(link.now, [a for a in (own.addr, nodes[0].addr) if a != node.addr])
        link._flush(node)
    return link, nodes


def member_ids(node: GossipNode, pool: str = "region") -> set[str]:
    return {v.node_id for v in node.members(pool) if v.state == MemberState.ALIVE}


def test_admitted_nodes_see_each_other() -> None:
    _link, nodes = admitted_region(4)
    for n in nodes:
        assert member_ids(n) == {m.node_id for m in nodes}


@pytest.mark.parametrize(
    ("bad_invite", "at_s", "reason"),
    [
        (_forged(), JOINED_S, "invite_forged"),
        (invite(), EXPIRES_S + 60, "invite_expired"),
        (invite(cluster_id="someone-else"), JOINED_S, "invite_other_cluster"),
    ],
    ids=["forged", "expired", "other-cluster"],
)
def test_a_node_without_a_valid_invite_never_appears_anywhere(
    bad_invite: adm.Invite, at_s: int, reason: str
) -> None:
    link, nodes = admitted_region(3)
    intruder = link.add(
        "x", "r0", node_key=node_key(9), admission=admission_of(node_key(9), bad_invite, at_s=at_s)
    )
    assert intruder.admission_problem == reason  # it knows, and its owner can say so
    intruder.join(link.now, [nodes[0].addr, nodes[1].addr])
    link._flush(intruder)
    link.run_until(link.now + 20.0)
    for n in nodes:
        assert intruder.node_id not in member_ids(n)
        assert n.state.get("admission", intruder.node_id) is None
    refusals = [(who, ev) for _t, who, ev in link.events if isinstance(ev, AdmissionRefused)]
    assert (nodes[0].node_id, AdmissionRefused(intruder.node_id, reason)) in refusals
    assert nodes[0].counters["region.drop_push_pull_not_admitted"] >= 1
    # And it learned nothing from the pool: no members, no records (the network key is not enough).
    assert member_ids(intruder) <= {intruder.node_id}
    assert {r.author for r in intruder.state.snapshot()} <= {intruder.node_id}


def test_a_revoked_node_is_expelled_everywhere_and_cannot_come_back() -> None:
    link, nodes = admitted_region(4)
    victim = nodes[3]
    revocation = sign_record(OPERATOR, "revocation", victim.node_id, 1, "fleet", b"stolen")
    assert nodes[1].publish_record(link.now, revocation)
    link._flush(nodes[1])
    link.run_until(link.now + 10.0)
    for n in nodes[:3]:
        assert victim.node_id not in member_ids(n)
        assert n.state.is_revoked(victim.node_id)
    assert any(who == victim.node_id and ev == Revoked(victim.node_id) for _t, who, ev in link.events)
    # It restarts (a higher incarnation) and tries again: still refused.
    link.crash(victim)
    again = link.add("n3", "r0", incarnation=50, node_key=node_key(3), admission=admission_of(node_key(3)))
    again.join(link.now, [nodes[0].addr])
    link._flush(again)
    link.run_until(link.now + 15.0)
    for n in nodes[:3]:
        assert victim.node_id not in member_ids(n)


def test_gateways_admit_each_other_by_the_admission_in_their_metadata() -> None:
    link, nodes = admitted_regions(2, 3)
    # A device without a valid invite forms a region of its own: it becomes its
    # region's gateway and tries the fleet pool.
    intruder = link.add(
        "x",
        "r9",
        fleet_config=WAN,
        node_key=node_key(20),
        admission=admission_of(node_key(20), _forged(), region="r9"),
    )
    intruder.join(link.now, [nodes[0].addr])
    link._flush(intruder)
    link.run_until(40.0)
    gateways = [n for n in nodes if n.is_gateway]
    assert {n.region for n in gateways} == {"r0", "r1"}
    for gw in gateways:
        fleet = member_ids(gw, "fleet")
        assert {g.node_id for g in gateways} <= fleet
        assert intruder.node_id not in fleet


# --- invites of limited uses ----------------------------------------------------------------


def test_an_invite_admits_its_uses_earliest_devices_whatever_the_order() -> None:
    two = invite(uses=2, nonce=b"\x03" * 16, region="r0")
    adm_a = admission_of(node_key(1), two, at_s=JOINED_S + 1)
    adm_b = admission_of(node_key(2), two, at_s=JOINED_S + 2)
    adm_c = admission_of(node_key(3), two, at_s=JOINED_S + 3)
    ids = [r.key for r in (adm_a, adm_b, adm_c)]
    forward, backward = store(), store()
    forward.merge(0.0, [adm_a, adm_b, adm_c])
    assert drops(forward) == {"drop_invite_used_up": 1}
    for r in (adm_c, adm_b, adm_a):
        backward.merge(0.0, [r])
    # c looked admitted until a arrived; then it was displaced (its records with it).
    assert backward.drain_refusals() == [(ids[2], "invite_used_up")]
    assert backward.counters["removed_used_up"] == 1
    for s in (forward, backward):
        assert [s.is_admitted(i) for i in ids] == [True, True, False]
    # A revoked device keeps its seat (seats are never freed: the outcome must not
    # depend on whether c arrived before or after the revocation).
    revoke_a = sign_record(OPERATOR, "revocation", ids[0], 1, "fleet", b"")
    forward.merge(0.0, [revoke_a, adm_c])
    assert not forward.is_admitted(ids[0]) and not forward.is_admitted(ids[2])


def test_a_displaced_member_is_expelled_from_the_pool() -> None:
    one = invite(uses=1, nonce=b"\x04" * 16, region="r0")
    link = Link(seed=9, config=LAN, trust=trust())
    first = link.add("n0", "r0", node_key=node_key(0), admission=admission_of(node_key(0)))
    late = link.add(
        "n1", "r0", node_key=node_key(1), admission=admission_of(node_key(1), one, at_s=JOINED_S + 5)
    )
    late.join(link.now, [first.addr])
    link._flush(late)
    link.run_until(5.0)
    assert late.node_id in member_ids(first)
    early = link.add(
        "n2", "r0", node_key=node_key(2), admission=admission_of(node_key(2), one, at_s=JOINED_S)
    )
    early.join(link.now, [first.addr])
    link._flush(early)
    link.run_until(15.0)
    assert early.node_id in member_ids(first)
    assert late.node_id not in member_ids(first)


def test_a_joiners_admission_spreads_with_it_so_every_member_lets_it_in_within_seconds() -> None:
    link, nodes = admitted_region(16)
    joiner = link.add(
        "j", "r0", fleet_config=WAN, node_key=node_key(30), admission=admission_of(node_key(30))
    )
    joiner.join(link.now, [nodes[5].addr])
    link._flush(joiner)
    link.run_until(link.now + 3.0)  # far below the push-pull interval: gossip carried it
    assert [n.node_id for n in nodes if joiner.node_id not in member_ids(n)] == []


def test_a_gateway_claiming_another_region_than_its_admission_is_refused_by_the_fleet_pool() -> None:
    link, nodes = admitted_regions(2, 2)
    # Admitted to r0, but it runs as the only node of "r9" and so becomes r9's gateway.
    liar = link.add(
        "x", "r9", fleet_config=WAN, node_key=node_key(21), admission=admission_of(node_key(21), region="r0")
    )
    liar.join(link.now, [nodes[0].addr])
    link._flush(liar)
    link.run_until(40.0)
    gateways = [n for n in nodes if n.is_gateway]
    assert gateways and all(liar.node_id not in member_ids(gw, "fleet") for gw in gateways)
    assert sum(gw.counters.get("fleet_drop_not_admitted", 0) for gw in gateways) >= 1


def test_a_displaced_node_presents_a_fresh_invite_and_is_admitted_again() -> None:
    one = invite(uses=1, nonce=b"\x06" * 16, region="r0")
    link = Link(seed=4, config=LAN, trust=trust())
    node = link.add(
        "n0", "r0", node_key=node_key(1), admission=admission_of(node_key(1), one, at_s=JOINED_S + 9)
    )
    earlier = admission_of(node_key(2), one, at_s=JOINED_S)
    node.state.merge(link.now, [earlier])  # as a restore would bring it: n0 is displaced
    assert not node.state.is_admitted(node.node_id)
    fresh = admission_of(node_key(1), invite(nonce=b"\x07" * 16, region="r0"), at_s=JOINED_S + 20)
    fresh = sign_record(node_key(1), "admission", fresh.key, 2, fresh.scope, fresh.payload)
    assert node.present_admission(link.now, fresh) is None
    assert node.state.is_admitted(node.node_id)
    # A node whose own admission is no good says why.
    bad = sign_record(node_key(4), "admission", key_id(pk(node_key(4))), 1, "region:r0", b"\x01junk")
    lone = link.add("n2", "r0", node_key=node_key(4), admission=bad)
    assert lone.admission_problem == "admission_malformed"
