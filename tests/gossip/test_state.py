"""The signed state store: merge rules, every drop reason, anti-entropy, and its properties."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip import records
from gossip.admission import make_admission, sign_invite
from gossip.codec import U64_MAX
from gossip.records import Record
from gossip.state import Digest, StateStore, StoreLimits, in_scope
from gossip.trust import StaticTrust, encode_grant

OP = nacl.signing.SigningKey(b"\x01" * 32)
OP2 = nacl.signing.SigningKey(b"\x02" * 32)
NODE_A = nacl.signing.SigningKey(b"\x0a" * 32)
NODE_B = nacl.signing.SigningKey(b"\x0b" * 32)
STRANGER = nacl.signing.SigningKey(b"\x0f" * 32)


def pk(sk: nacl.signing.SigningKey) -> bytes:
    return bytes(sk.verify_key)


def kid(sk: nacl.signing.SigningKey) -> str:
    return records.key_id(pk(sk))


def make_trust() -> StaticTrust:
    return StaticTrust(operators=[pk(OP), pk(OP2)], nodes=[pk(NODE_A), pk(NODE_B)])


def make_store(
    trust: StaticTrust | None = None, *, seed: int = 0, region: str | None = None, **limits: int
) -> StateStore:
    return StateStore(trust or make_trust(), random.Random(seed), limits=StoreLimits(**limits), region=region)


def desired(key: str, version: int, signer: nacl.signing.SigningKey = OP, **kw: object) -> Record:
    fields: dict[str, object] = {"scope": "fleet", "payload": f"{key}@{version}".encode()}
    fields.update(kw)
    return records.sign_record(signer, "desired", key, version, **fields)  # type: ignore[arg-type]


def inventory(signer: nacl.signing.SigningKey, version: int, region: str = "a") -> Record:
    return records.sign_record(signer, "inventory", kid(signer), version, f"region:{region}", b"cpu=4")


def revocation(target: str, version: int, signer: nacl.signing.SigningKey = OP) -> Record:
    return records.sign_record(signer, "revocation", target, version, "fleet", b"compromised")


def drops(store: StateStore) -> dict[str, int]:
    return {k: v for k, v in store.counters.items() if k.startswith("drop_") and v}


# --- merge rules ------------------------------------------------------------------


def test_new_record_is_accepted_returned_and_readable() -> None:
    s = make_store()
    r = desired("vib", 1)
    assert s.merge(0.0, [r]) == [r]
    assert s.get("desired", "vib") == r
    assert s.records() == [r] == s.records("desired")
    assert s.records("inventory") == []
    assert len(s) == 1
    assert s.counters["accepted"] == 1
    assert drops(s) == {}


def test_duplicate_is_dropped_without_verifying_again() -> None:
    s = make_store()
    r = desired("vib", 1)
    s.merge(0.0, [r])
    assert s.merge(0.0, [r]) == []
    assert drops(s) == {"drop_duplicate": 1}


def test_higher_version_wins_in_either_order() -> None:
    old, new = desired("vib", 1), desired("vib", 2)
    s1, s2 = make_store(), make_store()
    assert s1.merge(0.0, [old, new]) == [new]  # old was superseded within the batch
    s2.merge(0.0, [new])
    assert s2.merge(0.0, [old]) == []
    assert s1.snapshot() == s2.snapshot() == [new]
    assert drops(s2) == {"drop_stale": 1}


def test_equal_versions_break_ties_by_author_then_content_hash() -> None:
    a, b = desired("vib", 5, OP), desired("vib", 5, OP2)
    winner = max(a, b, key=lambda r: r.author)
    for order in ([a, b], [b, a]):
        s = make_store()
        s.merge(0.0, order)
        assert s.get("desired", "vib") == winner
    # Equivocation: one author, one version, two contents. The content hash decides.
    x, y = desired("vib", 9, payload=b"x"), desired("vib", 9, payload=b"y")
    winner = max(x, y, key=records.content_hash)
    for order in ([x, y], [y, x]):
        s = make_store()
        s.merge(0.0, order)
        assert s.get("desired", "vib") == winner


def test_tombstone_supersedes_and_hides_from_records() -> None:
    s = make_store()
    s.merge(0.0, [desired("vib", 1)])
    tomb = desired("vib", 2, payload=b"", deleted=True)
    assert s.merge(0.0, [tomb]) == [tomb]
    assert s.get("desired", "vib") == tomb
    assert s.records() == []
    assert s.records(include_deleted=True) == [tomb]
    assert s.merge(0.0, [desired("vib", 1)]) == []  # no resurrection


def test_bad_signature_is_dropped() -> None:
    s = make_store()
    r = desired("vib", 1)
    assert s.merge(0.0, [dataclasses.replace(r, payload=b"forged")]) == []
    sig = bytearray(r.signature)
    sig[0] ^= 1
    assert s.merge(0.0, [dataclasses.replace(r, signature=bytes(sig))]) == []
    assert drops(s) == {"drop_bad_signature": 2}
    assert len(s) == 0


def test_unknown_author_is_dropped() -> None:
    s = make_store()
    assert s.merge(0.0, [desired("vib", 1, STRANGER)]) == []
    assert drops(s) == {"drop_unknown_author": 1}


def test_trust_learned_later_admits_the_author() -> None:
    trust = make_trust()
    s = make_store(trust)
    r = desired("vib", 1, STRANGER)
    s.merge(0.0, [r])
    trust.add_operator(pk(STRANGER))
    assert s.merge(0.0, [r]) == [r]


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(desired("vib", 1, NODE_A), id="node-writes-desired"),
        pytest.param(
            records.sign_record(NODE_A, "inventory", kid(NODE_B), 1, "region:a", b""), id="other-inventory"
        ),
        pytest.param(inventory(OP, 1), id="operator-writes-inventory"),
        pytest.param(revocation(kid(OP), 1), id="self-revocation"),
        pytest.param(revocation(kid(OP2), 1), id="revoke-an-operator"),
        pytest.param(revocation(kid(NODE_A), 1, NODE_B), id="node-revokes"),
        pytest.param(
            records.sign_record(OP, "revocation", kid(NODE_A), 1, "fleet", b"", deleted=True),
            id="unrevoke",
        ),
        pytest.param(records.sign_record(NODE_A, "trust", "k", 1, "fleet", b""), id="node-writes-trust"),
        pytest.param(
            records.sign_record(NODE_A, "placement", "shared", 1, "region:a", b""), id="shared-placement"
        ),
    ],
)
def test_not_allowed(record: Record) -> None:
    s = make_store()
    assert s.merge(0.0, [record]) == []
    assert drops(s) == {"drop_not_allowed": 1}


def test_allowed_writes() -> None:
    s = make_store()
    ok = [
        desired("vib", 1),
        records.sign_record(OP, "trust", kid(STRANGER), 2, "fleet", encode_grant(pk(STRANGER), True)),
        revocation(kid(NODE_B), 3),
        inventory(NODE_A, 1),
        records.sign_record(NODE_A, "placement", kid(NODE_A), 2, "region:a", b"plan"),
    ]
    assert s.merge(0.0, ok) == ok
    assert drops(s) == {}


def test_unknown_kind_is_dropped() -> None:
    s = make_store()
    assert s.merge(0.0, [records.sign_record(OP, "event", "x", 1, "fleet", b"")]) == []
    assert drops(s) == {"drop_unknown_kind": 1}


@pytest.mark.parametrize(
    "record",
    [
        records.sign_record(NODE_A, "inventory", kid(NODE_A), 1, "fleet", b""),
        desired("vib", 1, scope="region:a"),
        desired("vib", 1, scope="region:"),
        desired("vib", 1, scope="planet"),
        desired("vib", 1, scope=""),
    ],
)
def test_bad_scope_is_dropped(record: Record) -> None:
    s = make_store()
    assert s.merge(0.0, [record]) == []
    assert drops(s) == {"drop_bad_scope": 1}


def test_region_store_keeps_own_region_and_fleet_only() -> None:
    s = make_store(region="a")
    mine, theirs, fleet = inventory(NODE_A, 1, "a"), inventory(NODE_B, 1, "b"), desired("vib", 1)
    assert s.merge(0.0, [mine, theirs, fleet]) == [mine, fleet]
    assert drops(s) == {"drop_out_of_scope": 1}
    assert in_scope("fleet", "a") and in_scope("region:a", "a") and not in_scope("region:b", "a")
    assert in_scope("region:b", None)


def test_for_scope_filters_held_records() -> None:
    s = make_store()
    a, b, fleet = inventory(NODE_A, 1, "a"), inventory(NODE_B, 1, "b"), desired("vib", 1)
    s.merge(0.0, [a, b, fleet])
    assert s.for_scope("a") == [fleet, a]
    assert s.for_scope("b") == [fleet, b]


def test_oversized_payload_is_dropped() -> None:
    s = make_store(payload_max_bytes=16)
    assert s.merge(0.0, [desired("vib", 1, payload=b"x" * 17)]) == []
    assert s.merge(0.0, [desired("vib", 2, payload=b"x" * 16)]) != []
    assert drops(s) == {"drop_oversized": 1}


def test_malformed_records_are_dropped_not_raised() -> None:
    s = make_store()
    good = desired("vib", 1)
    bad = [
        dataclasses.replace(good, key=""),
        dataclasses.replace(good, version=-1),
        dataclasses.replace(good, signature=b"short"),
        dataclasses.replace(good, payload="text"),  # type: ignore[arg-type]
        "not a record",
    ]
    assert s.merge(0.0, bad) == []  # type: ignore[arg-type]
    assert drops(s) == {"drop_malformed": 5}


def test_full_store_drops_new_slots_but_still_updates_held_ones() -> None:
    s = make_store(records_max=2)
    s.merge(0.0, [desired("a", 1), desired("b", 2)])
    assert s.merge(0.0, [desired("c", 3)]) == []
    assert drops(s) == {"drop_full": 1}
    newer = desired("a", 4)
    assert s.merge(0.0, [newer]) == [newer]
    assert len(s) == 2


def test_merge_encoded_counts_undecodable_blobs() -> None:
    s = make_store()
    r = desired("vib", 1)
    assert s.merge_encoded(0.0, [b"\x01garbage", records.encode_record(r), b""]) == [r]
    assert drops(s) == {"drop_undecodable": 2}


# --- revocation ---------------------------------------------------------------------


def test_revocation_drops_the_authors_records_and_refuses_new_ones() -> None:
    s = make_store()
    s.merge(0.0, [inventory(NODE_A, 1), inventory(NODE_B, 1)])
    rev = revocation(kid(NODE_A), 10)
    assert s.merge(0.0, [rev]) == [rev]
    assert s.revoked() == [kid(NODE_A)]
    assert s.is_revoked(kid(NODE_A))
    assert s.get("inventory", kid(NODE_A)) is None
    assert s.counters["removed_revoked"] == 1
    assert s.merge(0.0, [inventory(NODE_A, 2)]) == []
    assert drops(s) == {"drop_revoked_author": 1}
    assert s.digest().keys() == {kid(OP), kid(NODE_B)}


def test_revocation_is_order_independent() -> None:
    inv, rev = inventory(NODE_A, 1), revocation(kid(NODE_A), 1)
    s1, s2 = make_store(), make_store()
    s1.merge(0.0, [inv, rev])
    s2.merge(0.0, [rev, inv])
    assert s1.snapshot() == s2.snapshot() == [rev]


def test_trust_level_revocation_is_honoured() -> None:
    trust = make_trust()
    trust.revoke(kid(NODE_A))
    s = make_store(trust)
    assert s.merge(0.0, [inventory(NODE_A, 1)]) == []
    assert drops(s) == {"drop_revoked_author": 1}


# --- digests and anti-entropy ---------------------------------------------------------


def test_digest_is_highest_held_version_and_xor_fingerprint_per_author() -> None:
    s = make_store()
    a, b, inv = desired("a", 3), desired("b", 8), inventory(NODE_A, 2)
    s.merge(0.0, [a, b, inv])
    assert s.digest() == {
        kid(OP): (8, records.fingerprint(a) ^ records.fingerprint(b)),
        kid(NODE_A): (2, records.fingerprint(inv)),
    }
    assert s.digest(fleet_only=True) == {kid(OP): (8, records.fingerprint(a) ^ records.fingerprint(b))}
    assert s.latest_version(kid(OP)) == 8
    assert s.latest_version(kid(NODE_B)) is None


def test_missing_for_sends_only_what_the_peer_lacks_oldest_first() -> None:
    s = make_store()
    rs = [desired("a", 1), desired("b", 2), desired("c", 3), inventory(NODE_A, 5)]
    s.merge(0.0, rs)
    peer = make_store()
    peer.merge(0.0, rs[:1])
    assert s.missing_for(peer.digest(), 1 << 20) == [rs[1], rs[2], rs[3]]
    assert s.missing_for(s.digest(), 1 << 20) == []
    assert s.missing_for({}, 1 << 20) == sorted(rs, key=lambda r: (r.author, r.version))


def test_missing_for_respects_the_budget() -> None:
    s = make_store()
    rs = [desired(f"d{i}", i + 1, payload=b"x" * 100) for i in range(20)]
    s.merge(0.0, rs)
    per_record = records.encoded_size(rs[0]) + 5
    out = s.missing_for({}, 3 * per_record)
    assert 1 <= len(out) <= 3
    assert sum(records.encoded_size(r) + 5 for r in out) <= 3 * per_record
    assert s.missing_for({}, per_record - 1) == []
    assert s.missing_for({}, 0) == []


def test_missing_for_repairs_a_gap_below_the_peers_highest_version() -> None:
    # The peer saw v5 (pushed) but lost v3: a max-version digest alone would hide the gap.
    s, peer = make_store(), make_store()
    v3, v5 = desired("a", 3), desired("b", 5)
    s.merge(0.0, [v3, v5])
    peer.merge(0.0, [v5])
    assert v3 in s.missing_for(peer.digest(), 1 << 20)
    peer.merge(0.0, s.missing_for(peer.digest(), 1 << 20))
    assert peer.snapshot() == s.snapshot()
    assert s.missing_for(peer.digest(), 1 << 20) == []


def test_record_superseded_by_another_author_does_not_loop() -> None:
    # OP's v3 was superseded in its slot by OP2's v9; a peer that only has OP's v3
    # sends it back (dropped as stale) until it learns OP2's v9, and then both are quiet.
    old, new = desired("vib", 3, OP), desired("vib", 9, OP2)
    s, peer = make_store(), make_store()
    s.merge(0.0, [old, new])
    peer.merge(0.0, [old])
    assert kid(OP) not in s.digest()
    s.merge(0.0, peer.missing_for(s.digest(), 1 << 20))
    assert s.counters["drop_stale"] == 1
    peer.merge(0.0, s.missing_for(peer.digest(), 1 << 20))
    assert peer.snapshot() == s.snapshot() == [new]
    assert peer.missing_for(s.digest(), 1 << 20) == s.missing_for(peer.digest(), 1 << 20) == []


def test_missing_for_tolerates_malformed_remote_entries() -> None:
    s = make_store()
    r = desired("a", 1)
    s.merge(0.0, [r])
    bogus: dict[str, object] = {kid(OP): ("x", -1)}
    assert s.missing_for(bogus, 1 << 20) == [r]  # type: ignore[arg-type]


def test_fleet_only_exchange_ignores_region_records() -> None:
    s = make_store()
    fleet, inv = desired("a", 1), inventory(NODE_A, 1)
    s.merge(0.0, [fleet, inv])
    assert s.missing_for({}, 1 << 20, fleet_only=True) == [fleet]


def test_snapshot_restore_round_trip_reverifies() -> None:
    s = make_store()
    s.merge(0.0, [desired("a", 1), inventory(NODE_A, 2), revocation(kid(NODE_B), 3)])
    snap = s.snapshot()
    fresh = make_store()
    assert fresh.restore(snap) == 3
    assert fresh.snapshot() == snap
    assert fresh.digest() == s.digest()
    tampered = make_store()
    assert tampered.restore([dataclasses.replace(snap[0], payload=b"evil"), *snap[1:]]) == 2
    assert drops(tampered) == {"drop_bad_signature": 1}


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="delta_max_bytes"):
        StoreLimits(payload_max_bytes=10_000, delta_max_bytes=1_000)
    with pytest.raises(ValueError, match="records_max"):
        StoreLimits(records_max=0)
    with pytest.raises(ValueError, match="payload_max_bytes"):
        StoreLimits(payload_max_bytes=records.PAYLOAD_MAX_BYTES + 1)


def test_static_trust_refuses_bad_keys() -> None:
    with pytest.raises(ValueError):
        StaticTrust(operators=[b"short"])


# --- properties -------------------------------------------------------------------------

REGIONS = ("a", "b")
WORLD_CLUSTER = "world"
DESIRED_KEYS = ("d0", "d1", "d2")
PROPERTY_LIMITS = {"records_max": 1000, "payload_max_bytes": 64, "delta_max_bytes": 2048}


@dataclasses.dataclass(frozen=True)
class World:
    operators: tuple[nacl.signing.SigningKey, ...]
    nodes: tuple[nacl.signing.SigningKey, ...]
    records: tuple[Record, ...]
    admitted: bool = False  # nodes are known by admission records among `records`, not configured
    granted: bool = False  # an operator key is known by a grant among `records`

    @property
    def learns_keys(self) -> bool:
        """Some authors' keys come from records: one delivered before its key is refused, and
        comes again only if a store that holds it passes it on (here, none is the author)."""
        return self.admitted or self.granted

    def trust(self) -> StaticTrust:
        nodes = [] if self.admitted else [pk(k) for k in self.nodes]
        return StaticTrust(operators=[pk(k) for k in self.operators], nodes=nodes, cluster_id=WORLD_CLUSTER)

    def record_cost_bytes(self) -> int:
        """What the largest record costs in a delta: budgets are small multiples of it."""
        return max(records.encoded_size(r) for r in self.records) + 5


@st.composite
def worlds(draw: st.DrawFn, max_records: int = 14) -> World:
    seeds = draw(st.lists(st.binary(min_size=32, max_size=32), min_size=3, max_size=5, unique=True))
    n_ops = draw(st.integers(1, 2))
    operators = tuple(nacl.signing.SigningKey(s) for s in seeds[:n_ops])
    nodes = tuple(nacl.signing.SigningKey(s) for s in seeds[n_ops:])
    writers = operators + nodes
    versions = dict.fromkeys(range(len(writers)), 0)
    out: list[Record] = []
    for _ in range(draw(st.integers(1, max_records))):
        w = draw(st.integers(0, len(writers) - 1))
        versions[w] += draw(st.integers(1, 3))  # strictly increasing per author, with gaps
        sk, version = writers[w], versions[w]
        deleted = draw(st.booleans())
        payload = b"" if deleted else draw(st.binary(max_size=8))
        if w < n_ops:
            kind = draw(st.sampled_from(["desired", "desired", "revocation", "trust"]))
            if kind == "revocation":
                target = kid(draw(st.sampled_from(nodes)))
                out.append(records.sign_record(sk, kind, target, version, "fleet", b"r"))
            else:
                key = draw(st.sampled_from(DESIRED_KEYS))
                out.append(records.sign_record(sk, kind, key, version, "fleet", payload, deleted))
        else:
            region = draw(st.sampled_from(REGIONS))
            kind = draw(st.sampled_from(["inventory", "placement"]))
            out.append(records.sign_record(sk, kind, kid(sk), version, f"region:{region}", payload))
    granted_op = draw(st.booleans(), label="a granted operator")
    if granted_op:
        granted = nacl.signing.SigningKey(bytes(31) + b"\x99")
        gid = kid(granted)
        out.append(
            records.sign_record(operators[0], "trust", gid, 1, "fleet", encode_grant(pk(granted), True))
        )
        for _ in range(draw(st.integers(1, 3))):
            version = draw(st.integers(1, 5000))
            key = draw(st.sampled_from(DESIRED_KEYS))
            out.append(records.sign_record(granted, "desired", key, version, "fleet", b"g"))
        if draw(st.booleans(), label="then removed"):
            cutoff = draw(st.integers(0, 5000))
            removal = encode_grant(pk(granted), False, cutoff)
            out.append(records.sign_record(operators[0], "trust", gid, 2, "fleet", removal))
        if draw(st.booleans(), label="and its key id revoked"):
            out.append(records.sign_record(operators[0], "revocation", gid, 3, "fleet", b"r"))
    admitted = draw(st.booleans(), label="nodes admitted by records")
    if admitted:
        uses = draw(st.sampled_from([0, 1, 2]), label="invite uses")
        invite_region = REGIONS[0] if uses else ""
        invite = sign_invite(
            operators[0],
            WORLD_CLUSTER,
            expires_at_s=10**9,
            nonce=b"\x07" * 16,
            uses=uses,
            region=invite_region,
        )
        for sk in nodes:
            region = invite_region or draw(st.sampled_from(REGIONS))
            joined_s = draw(st.integers(0, 3))  # ties broken by node id
            out.append(make_admission(sk, invite, region=region, admitted_at_s=joined_s))
    return World(operators, nodes, tuple(out), admitted, granted_op)


def state_of(store: StateStore) -> tuple[list[Record], Digest]:
    return store.snapshot(), store.digest()


def anti_entropy_until_converged(stores: Sequence[StateStore], budget_bytes: int, rounds_max: int) -> int:
    """Pairwise digest -> missing_for -> merge in both directions; returns the rounds it took."""
    for round_no in range(rounds_max):
        if all(state_of(s) == state_of(stores[0]) for s in stores[1:]):
            return round_no
        for i, a in enumerate(stores):
            for j, b in enumerate(stores):
                if i != j:
                    b.merge(float(round_no), a.missing_for(b.digest(), budget_bytes))
    raise AssertionError(f"not converged after {rounds_max} rounds")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.data())
def test_any_delivery_then_anti_entropy_converges(world: World, data: st.DataObject) -> None:
    n_stores = data.draw(st.integers(2, 5), label="stores")
    trust = world.trust()
    stores = [
        StateStore(trust, random.Random(i), limits=StoreLimits(**PROPERTY_LIMITS)) for i in range(n_stores)
    ]
    index = st.integers(0, len(world.records) - 1)
    everything: list[Record] = []
    for s in stores:
        # Loss, duplication and any order: each store gets an arbitrary sequence of the records.
        delivered = [world.records[i] for i in data.draw(st.lists(index, max_size=2 * len(world.records)))]
        everything.extend(delivered)
        s.merge(0.0, delivered)
    budget = world.record_cost_bytes() * data.draw(st.integers(1, 3), label="budget records")
    anti_entropy_until_converged(stores, budget, rounds_max=300)
    # Every store ends in the same state, and nobody sends anything more.
    for other in stores[1:]:
        assert state_of(other) == state_of(stores[0])
    if not world.learns_keys:
        # With every key configured, that state is the merge of everything delivered anywhere.
        reference = StateStore(trust, random.Random(0), limits=StoreLimits(**PROPERTY_LIMITS))
        reference.merge(0.0, everything)
        assert state_of(stores[0]) == state_of(reference)
    for a in stores:
        for b in stores:
            assert a.missing_for(b.digest(), budget) == []


@settings(max_examples=40, deadline=None)
@given(worlds(), st.data())
def test_fleet_pool_exchange_converges_on_fleet_records(world: World, data: st.DataObject) -> None:
    trust = world.trust()
    # Gateways of two regions: each keeps its own region, and they exchange fleet records only.
    a = StateStore(trust, random.Random(1), limits=StoreLimits(**PROPERTY_LIMITS), region="a")
    b = StateStore(trust, random.Random(2), limits=StoreLimits(**PROPERTY_LIMITS), region="b")
    n = len(world.records)
    a.merge(0.0, [world.records[i] for i in data.draw(st.lists(st.integers(0, n - 1), max_size=n))])
    b.merge(0.0, [world.records[i] for i in data.draw(st.lists(st.integers(0, n - 1), max_size=n))])
    for _ in range(200):
        if a.digest(fleet_only=True) == b.digest(fleet_only=True):
            break
        b.merge(0.0, a.missing_for(b.digest(fleet_only=True), world.record_cost_bytes(), fleet_only=True))
        a.merge(0.0, b.missing_for(a.digest(fleet_only=True), world.record_cost_bytes(), fleet_only=True))
    fleet = [r for r in a.snapshot() if r.scope == "fleet"]
    assert fleet == [r for r in b.snapshot() if r.scope == "fleet"]
    assert all(in_scope(r.scope, "a") for r in a.snapshot())
    assert all(in_scope(r.scope, "b") for r in b.snapshot())


@settings(max_examples=60, deadline=None)
@given(worlds(), st.randoms(use_true_random=False), st.data())
def test_merge_is_commutative_associative_and_idempotent(
    world: World, rnd: random.Random, data: st.DataObject
) -> None:
    if world.learns_keys:
        # A record that comes before its author's grant or admission is dropped, and one a
        # removal's cutoff evicts can leave its slot empty where another store kept the
        # older value: one store alone is then not order-free; the stores together
        # converge (test_any_delivery_then_anti_entropy_converges covers those worlds).
        return
    trust = world.trust()
    rs = list(world.records)

    def store() -> StateStore:
        return StateStore(trust, random.Random(0), limits=StoreLimits(**PROPERTY_LIMITS))

    one_batch = store()
    one_batch.merge(0.0, rs)
    expected = state_of(one_batch)

    # Commutative: any permutation, with duplicates, one record at a time.
    shuffled = rs + [rs[i] for i in data.draw(st.lists(st.integers(0, len(rs) - 1), max_size=5))]
    rnd.shuffle(shuffled)
    one_by_one = store()
    for r in shuffled:
        one_by_one.merge(0.0, [r])
    assert state_of(one_by_one) == expected

    # Associative: (x + y) + z == x + (y + z), as batches applied in either grouping.
    i = data.draw(st.integers(0, len(rs)))
    j = data.draw(st.integers(i, len(rs)))
    x, y, z = rs[:i], rs[i:j], rs[j:]
    left, right = store(), store()
    left.merge(0.0, x + y)
    left.merge(0.0, z)
    right.merge(0.0, x)
    right.merge(0.0, y + z)
    assert state_of(left) == state_of(right) == expected

    # Idempotent: merging everything again changes nothing and returns nothing new.
    assert one_batch.merge(0.0, rs) == []
    assert state_of(one_batch) == expected


FIELDS = ("kind", "key", "version", "author", "scope", "payload", "deleted", "signature")


@settings(max_examples=150, deadline=None)
@given(worlds(max_records=4), st.data())
def test_a_tampered_record_is_never_accepted(world: World, data: st.DataObject) -> None:
    trust = world.trust()
    r = data.draw(st.sampled_from(world.records))
    field = data.draw(st.sampled_from(FIELDS))
    value: object
    if field == "signature":
        sig = bytearray(r.signature)
        sig[data.draw(st.integers(0, len(sig) - 1))] ^= data.draw(st.integers(1, 255))
        value = bytes(sig)
    elif field == "version":
        value = data.draw(st.integers(0, U64_MAX).filter(lambda v: v != r.version))
    elif field == "deleted":
        value = not r.deleted
    elif field == "payload":
        value = data.draw(st.binary(max_size=16).filter(lambda p: p != r.payload))
    elif field == "author":
        # Another trusted author, or any other string.
        others = [kid(k) for k in world.operators + world.nodes if kid(k) != r.author]
        value = data.draw(st.sampled_from(others) | st.text(min_size=1, max_size=20))
    elif field == "kind":
        value = data.draw(st.sampled_from(records.KINDS).filter(lambda k: k != r.kind))
    elif field == "scope":
        value = data.draw(
            st.sampled_from(["fleet", "region:a", "region:b", "region:c"]).filter(lambda s: s != r.scope)
        )
    else:
        value = data.draw(st.text(min_size=1, max_size=8).filter(lambda k: k != r.key))
    tampered = dataclasses.replace(r, **{field: value})  # type: ignore[arg-type]
    if tampered == r:
        return
    s = StateStore(trust, random.Random(0), limits=StoreLimits(**PROPERTY_LIMITS))
    assert s.merge(0.0, [tampered]) == []
    assert len(s) == 0
    # Also when the genuine record is already held: the forgery never replaces it.
    s.merge(0.0, [r])
    before = s.snapshot()
    assert s.merge(0.0, [tampered]) == []
    assert s.snapshot() == before


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=120), max_size=8))
def test_garbage_blobs_never_raise_out_of_the_store(blobs: list[bytes]) -> None:
    s = make_store()
    assert s.merge_encoded(0.0, blobs) == []
    assert len(s) == 0


@settings(max_examples=60, deadline=None)
@given(worlds(), st.integers(1, 4), st.data())
def test_the_store_never_exceeds_records_max(world: World, records_max: int, data: st.DataObject) -> None:
    s = StateStore(
        world.trust(), random.Random(0), limits=StoreLimits(**{**PROPERTY_LIMITS, "records_max": records_max})
    )
    rs = list(world.records)
    while rs:
        k = data.draw(st.integers(1, len(rs)))
        s.merge(0.0, rs[:k])
        rs = rs[k:]
        assert len(s) <= records_max
        assert len(s.snapshot()) == len(s)


@settings(max_examples=150, deadline=None)
@given(worlds(), st.data())
def test_records_of_a_kind_are_the_held_records_of_that_kind(world: World, data: st.DataObject) -> None:
    # records(kind) reads a per-kind index; whatever arrives, replaces or removes, it must list
    # exactly what a scan of every held record finds, in the same order.
    store = StateStore(world.trust(), random.Random(0), limits=StoreLimits(**PROPERTY_LIMITS))
    n = len(world.records)
    for _ in range(data.draw(st.integers(1, 4), label="batches")):
        batch = [world.records[i] for i in data.draw(st.lists(st.integers(0, n - 1), max_size=2 * n))]
        store.merge(0.0, batch)
        everything = store.records(include_deleted=True)
        for kind in sorted({r.kind for r in world.records}):
            assert store.records(kind, include_deleted=True) == [r for r in everything if r.kind == kind]
            assert store.records(kind) == [r for r in everything if r.kind == kind and not r.deleted]
