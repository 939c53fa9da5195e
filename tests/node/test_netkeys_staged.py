"""Staged network-key changes (install, use, remove; node/netkeys.py, gossip/netkey.py format 2)
and each node's `keyring` record (gossip/keyholding.py)."""

from __future__ import annotations

import contextlib
import itertools
import random

import msgpack
import nacl.public
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.events import RecordsAccepted
from gossip.keyholding import KeyHolding, decode_holding, encode_holding, holding_problem
from gossip.kinds import ADMISSION_KIND, KEYRING_KIND, NETKEY_KIND
from gossip.netkey import (
    NETKEY_SLOT,
    NetKeyNotice,
    decode_notice,
    encode_notice,
    network_key_id,
    notice_problem,
)
from gossip.records import Record, sign_record
from gossip.wire import DecodeError
from node.core import Node
from node.netkeys import OFFER, REQUEST, NetKeyCore, NetworkKeyInUse, NetworkKeysRetired
from tests.gossip.harness import Link
from tests.node.test_netkeys import NEW_KEY, OLD_KEY, OPERATOR, add, keys_of, mesh, node_key

K1, K2 = OLD_KEY, NEW_KEY
ID1, ID2 = network_key_id(K1), network_key_id(K2)
K3 = b"\x03" * 32
ID3 = network_key_id(K3)


def staged(epoch: int, stage: str, primary: str, keys: tuple[tuple[str, int], ...]) -> Record:
    """The operator's staged `netkey` record (as `murmur keys install|use|remove` signs it)."""
    notice = NetKeyNotice(epoch, primary, 0, stage, stage=stage, keys=keys)
    return sign_record(OPERATOR, NETKEY_KIND, NETKEY_SLOT, epoch, "fleet", encode_notice(notice))


INSTALL = staged(2, "install", ID1, ((ID1, 0), (ID2, 2)))
USE = staged(3, "use", ID2, ((ID1, 0), (ID2, 2)))
REMOVE = staged(4, "remove", ID2, ((ID2, 2),))


def apply(link: Link, node: Node, record: Record, key: bytes | None = None) -> None:
    problem = node.command(link.now, lambda t: keys_of(node).apply(t, record, key))
    assert problem is None, problem
    assert node.publish_record(link.now, record)
    link._flush(node)


# --- the records' payloads -------------------------------------------------------------------


def test_staged_notices_round_trip_and_rotations_keep_format_1() -> None:
    for record in (INSTALL, USE, REMOVE):
        notice = decode_notice(record.payload)
        assert record.payload[0] == 2 and notice.staged
        assert decode_notice(encode_notice(notice)) == notice
    assert decode_notice(USE.payload).wanted_ids == (ID1, ID2)
    assert decode_notice(INSTALL.payload).key_epoch(ID2) == 2
    rotation = NetKeyNotice(5, ID3, 60, "manual")
    assert encode_notice(rotation)[0] == 1 and decode_notice(encode_notice(rotation)).wanted_ids == (ID3,)


@pytest.mark.parametrize(
    "bad",
    [
        NetKeyNotice(2, ID3, 0, stage="install", keys=((ID1, 0), (ID2, 2))),  # primary not listed
        NetKeyNotice(2, ID1, 60, stage="install", keys=((ID1, 0),)),  # a grace period
        NetKeyNotice(2, ID1, 0, stage="install", keys=()),  # no key
        NetKeyNotice(2, ID1, 0, stage="install", keys=((ID1, 0), (ID1, 1))),  # twice
        NetKeyNotice(2, ID1, 0, stage="install", keys=((ID1, 3),)),  # added after the record
        NetKeyNotice(2, ID1, 0, stage="swap", keys=((ID1, 0),)),  # no such stage
        NetKeyNotice(2, ID1, 0, stage="install", keys=((ID1, 0), ("zz", 0))),
        NetKeyNotice(
            9, ID1, 0, stage="use", keys=tuple((network_key_id(bytes([i]) * 32), 0) for i in range(8))
        ),
        NetKeyNotice(2, ID1, 0, keys=((ID1, 0),)),  # a rotation lists nothing
    ],
)
def test_staged_notices_out_of_bounds_are_refused(bad: NetKeyNotice) -> None:
    with pytest.raises(ValueError):
        encode_notice(bad)


def test_malformed_staged_payloads_are_refused() -> None:
    good = msgpack.packb([2, ID1, 0, "", [], "install", [[ID1, 0]]])
    assert notice_problem(b"\x02" + good) is None
    for fields in (
        [2, ID1, 0, "", [], "install"],  # short
        [2, ID1, 0, "", [], "install", [[ID1, 0]], 1],  # long
        [2, ID1, 0, "", [], 7, [[ID1, 0]]],
        [2, ID1, 0, "", [], "install", [[ID1]]],
        [2, ID1, 0, "", [], "install", [[ID1, "0"]]],
        [2, ID1, 0, "", [], "install", [[ID1, 2**63]]],
        [2, ID1, 0, "", [], "install", {"a": 1}],
    ):
        assert notice_problem(b"\x02" + msgpack.packb(fields)) is not None, fields


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_staged_and_keyring_payloads_raise_only_decode_error(data: bytes) -> None:
    for payload in (b"\x02" + data, b"\x01" + data):
        with contextlib.suppress(DecodeError):
            decode_notice(payload)
        with contextlib.suppress(DecodeError):
            decode_holding(payload)


def test_keyring_records_round_trip_and_are_bounded() -> None:
    holding = KeyHolding(3, ID2, (ID1, ID2))
    assert decode_holding(encode_holding(holding)) == holding
    for bad in (
        KeyHolding(3, ID3, (ID1, ID2)),  # the primary not held
        KeyHolding(-1, ID1, (ID1,)),
        KeyHolding(1, ID1, ()),
        KeyHolding(1, ID1, (ID1, ID1)),
        KeyHolding(1, ID1, tuple(network_key_id(bytes([i]) * 32) for i in range(9))),
    ):
        with pytest.raises(ValueError):
            encode_holding(bad)
    assert holding_problem(b"\x01" + msgpack.packb([1, ID1, [ID1], 4])) is not None
    assert holding_problem(b"\x01" + b"\x00" * 600) is not None


# --- the stages over a mesh ----------------------------------------------------------------


def holdings(node: Node, members: list[Node]) -> dict[str, KeyHolding]:
    """What `node` reads of each member's `keyring` record."""
    out: dict[str, KeyHolding] = {}
    for m in members:
        record = node.gossip.state.get(KEYRING_KIND, m.node_id)
        if record is not None:
            out[m.node_id] = decode_holding(record.payload)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_install_use_remove_over_lossy_links(seed: int) -> None:
    link, nodes = mesh(seed)
    rng = random.Random(seed)
    link.drop = lambda src, dst: rng.random() < 0.2
    apply(link, nodes[seed % 4], INSTALL, K2)
    link.run_until(link.now + 30.0)
    for node in nodes:
        core = keys_of(node)
        assert set(core.key_ids) == {ID1, ID2} and core.primary_id == ID1, f"seed={seed} {node.node_id}"
    link.run_until(link.now + 100.0)  # longer than any rotation's use_after_s: a staged install never seals
    assert all(keys_of(n).primary_id == ID1 for n in nodes)
    # Every node's keyring record says so (10-30 s after the change), in its own region.
    region = [n for n in nodes if n.region == "r0"]
    assert {h.held for h in holdings(region[0], region).values()} == {(ID1, ID2)}

    apply(link, nodes[5], USE)  # at a node of the other region
    link.run_until(link.now + 30.0)
    assert all(keys_of(n).primary_id == ID2 and set(keys_of(n).key_ids) == {ID1, ID2} for n in nodes)

    apply(link, nodes[2], REMOVE)
    link.run_until(link.now + 30.0)
    for node in nodes:
        assert keys_of(node).key_ids == (ID2,) and keys_of(node).primary_id == ID2, f"seed={seed}"
        assert ID1 in keys_of(node).retired_ids
    link.run_until(link.now + 40.0)
    assert set(holdings(region[1], region).values()) == {KeyHolding(4, ID2, (ID2,))}


def test_a_node_away_through_every_stage_lands_on_the_newest_keyring() -> None:
    link, nodes = mesh(seed=4, regions=1, per_region=4)
    away = nodes[3]
    link.drop = lambda src, dst: away.addr in (src, dst)
    apply(link, nodes[0], INSTALL, K2)
    link.run_until(link.now + 5.0)
    apply(link, nodes[1], USE)
    link.run_until(link.now + 5.0)
    apply(link, nodes[2], REMOVE)
    link.run_until(link.now + 5.0)
    assert keys_of(away).key_ids == (ID1,)
    link.drop = lambda src, dst: False
    link.run_until(link.now + 120.0)
    core = keys_of(away)
    assert core.notice is not None and core.notice.epoch == 4
    assert core.key_ids == (ID2,) and core.primary_id == ID2
    # It sealed with the new key before it dropped the old one: never without a key to seal.
    mine = [
        e
        for _t, n, e in link.events
        if n == away.node_id and isinstance(e, NetworkKeyInUse | NetworkKeysRetired)
    ]
    assert [type(e) for e in mine] == [NetworkKeyInUse, NetworkKeysRetired]


def test_commands_refuse_what_the_node_cannot_follow() -> None:
    link, nodes = mesh(seed=5, regions=1, per_region=2)
    node = nodes[0]

    def refused(record: Record, key: bytes | None = None) -> str:
        problem = node.command(link.now, lambda t: keys_of(node).apply(t, record, key))
        assert problem is not None
        return problem

    assert "comes with its new key" in refused(INSTALL)
    assert "id differs" in refused(INSTALL, K3)
    assert "does not hold key" in refused(USE)  # K2 was never installed here
    apply(link, node, INSTALL, K2)
    assert "not newer" in refused(INSTALL, K2)


# --- an attacker holding an old operator-signed install record ---------------------------------


def test_a_replayed_install_record_never_brings_back_a_removed_key() -> None:
    link, nodes = mesh(seed=6, regions=1, per_region=4)
    apply(link, nodes[0], INSTALL, K2)
    link.run_until(link.now + 10.0)
    apply(link, nodes[0], USE)
    link.run_until(link.now + 10.0)
    apply(link, nodes[0], REMOVE)
    link.run_until(link.now + 10.0)
    assert all(keys_of(n).key_ids == (ID2,) for n in nodes)

    # 1. Replayed into the mesh: every store holds a newer `netkey` record, so none takes it.
    for node in nodes:
        assert not node.publish_record(link.now, INSTALL)
    # 2. Shown to a core anyway (a store that lost its newer record): an older epoch is stale.
    victim = nodes[1]
    victim.command(link.now, lambda t: keys_of(victim).observe(t, RecordsAccepted((INSTALL,))))
    assert keys_of(victim).counters["notice_stale"] >= 1
    # 3. Re-signed into a new epoch, it is no replay: the API's node refuses the removed key.
    again = staged(5, "install", ID2, ((ID2, 2), (ID1, 5)))
    problem = nodes[2].command(link.now, lambda t: keys_of(nodes[2]).apply(t, again, K1))
    assert problem is not None and "never comes back" in problem
    # 4. A node whose disk kept only its retired list and an old token's key comes back, and
    #    meets the replayed record before the newest: it neither seals with nor takes K1.
    link.crash(nodes[3])
    fresh = add(link, 3, "r0", keys=(K2,), retired=(ID1,))  # as the agent passes network.keys'
    core = keys_of(fresh)
    admissions = [r for r in nodes[0].gossip.state.records() if r.kind == ADMISSION_KIND]
    fresh.gossip.state.restore([*admissions, INSTALL])
    link.run_until(link.now + 0.01)
    assert core.primary_id == ID2 and ID1 not in core.key_ids
    # ... and a member that kept K1 offers it: refused and counted.
    sealed = nacl.public.Box(
        node_key(1).to_curve25519_private_key(),
        nacl.signing.VerifyKey(bytes(node_key(3).verify_key)).to_curve25519_public_key(),
    ).encrypt(K1, b"\x05" * 24)
    payload = msgpack.packb([OFFER, 2, bytes(sealed)])
    fresh.command(link.now, lambda t: core.handle_message(t, "region", nodes[1].node_id, payload))
    assert core.counters["drop_offer_retired"] == 1 and ID1 not in core.key_ids
    link.run_until(link.now + 60.0)
    assert core.key_ids == (ID2,) and core.notice is not None and core.notice.epoch == 4


def test_a_key_is_handed_out_only_while_the_newest_record_lists_it() -> None:
    link, nodes = mesh(seed=7, regions=1, per_region=3)
    apply(link, nodes[0], INSTALL, K2)
    link.run_until(link.now + 10.0)
    core = keys_of(nodes[0])
    asker = nodes[1].node_id

    def ask(key_id: str) -> None:
        link.now += 2.0  # past the answer rate limit
        request = msgpack.packb([REQUEST, 1, bytes.fromhex(key_id)])
        nodes[0].command(link.now, lambda t: core.handle_message(t, "region", asker, request))

    ask(ID2)
    assert core.counters.get("request_not_held", 0) == 0
    ask(ID3)  # not a key the record lists
    assert core.counters["request_not_held"] == 1
    for bad in ([REQUEST, 1, b"short"], [REQUEST, 1, ID2], [REQUEST, 1, bytes(16), 4]):
        nodes[0].command(link.now, lambda t, b=bad: core.handle_message(t, "region", asker, msgpack.packb(b)))
    assert core.counters["drop_malformed"] == 3


# --- one core, records in any order ------------------------------------------------------------


class Peers:
    """KeyPeers of a core alone: one member, m1, whose key offers come from."""

    M1 = nacl.signing.SigningKey(b"\x44" * 32)

    def __init__(self) -> None:
        self.own: Record | None = None

    def live_members(self, pool: str) -> list[str]:
        return ["m1"] if pool == "region" else []

    def member_key(self, node_id: str) -> bytes | None:
        return bytes(self.M1.verify_key) if node_id == "m1" else None

    def is_revoked(self, node_id: str) -> bool:
        return False

    def notice_record(self) -> Record | None:
        return None

    def own_holding(self) -> Record | None:
        return self.own

    def latest_version(self) -> int:
        return self.own.version if self.own is not None else 0

    def region_scope(self) -> str:
        return "region:r0"


ME = nacl.signing.SigningKey(b"\x45" * 32)


def lone_core(peers: Peers) -> NetKeyCore:
    core = NetKeyCore("me", random.Random(1), node_key=ME, peers=peers, keys=(K1,), now=0.0)
    core.handle_timer(0.0)
    deadline = core.next_deadline()
    if deadline is not None:  # the delayed keyring record (NetKeyConfig.report_delay_min_s/max_s)
        assert 10.0 <= deadline <= 30.0
        core.handle_timer(deadline)
    return core


def offer(core: NetKeyCore, now: float, epoch: int, key: bytes) -> None:
    box = nacl.public.Box(Peers.M1.to_curve25519_private_key(), ME.verify_key.to_curve25519_public_key())
    core.handle_message(
        now, "region", "m1", msgpack.packb([OFFER, epoch, bytes(box.encrypt(key, b"\x01" * 24))])
    )


@settings(max_examples=60, deadline=None)
@given(st.permutations([INSTALL, USE, REMOVE]), st.integers(0, 3), st.integers(1, 4))
def test_any_order_of_the_stages_ends_on_the_newest_and_never_without_a_sealing_key(
    order: list[Record], offer_at: int, offer_epoch: int
) -> None:
    core = lone_core(Peers())
    events = []
    for i, record in enumerate([*order[:offer_at], None, *order[offer_at:]]):
        now = 100.0 + i
        if record is None:
            offer(core, now, offer_epoch, K2)
        else:
            core.observe(now, RecordsAccepted((record,)))
        core.handle_timer(now)
        events += core.drain_events()
        assert core.primary_id in core.key_ids
    assert core.notice is not None and core.notice.epoch == 4
    assert core.key_ids == (ID2,) and core.primary_id == ID2
    assert [e for e in events if isinstance(e, NetworkKeyInUse)][-1].key_id == ID2


def test_a_keyring_record_of_an_earlier_life_is_superseded() -> None:
    peers = Peers()
    core = lone_core(peers)
    ((first, _urgent),) = core.poll_records()
    assert decode_holding(first.payload) == KeyHolding(0, ID1, (ID1,)) and first.version == 1
    # A peer hands back our record from before a lost disk: version 9, other keys.
    old = sign_record(ME, KEYRING_KIND, "me", 9, "region:r0", encode_holding(KeyHolding(7, ID3, (ID3,))))
    peers.own = old
    core.observe(40.0, RecordsAccepted((old,)))
    assert core.poll_records() == []  # said after the delay, not at once
    core.handle_timer(80.0)
    ((again, _urgent),) = core.poll_records()
    assert again.version == 10 and decode_holding(again.payload) == KeyHolding(0, ID1, (ID1,))
    # Our own record coming back changes nothing.
    peers.own = again
    core.observe(90.0, RecordsAccepted((again,)))
    core.handle_timer(200.0)
    assert core.poll_records() == []


def test_a_restart_with_the_same_keys_publishes_nothing_new() -> None:
    peers = Peers()
    core = lone_core(peers)
    ((record, _urgent),) = core.poll_records()
    peers.own = record
    assert lone_core(peers).poll_records() == []
    assert list(itertools.islice(iter(core.key_ids), 1)) == [ID1]
