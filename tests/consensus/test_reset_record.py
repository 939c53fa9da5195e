"""The election core takes an operator's `voters-reset` record from the gossip events it is shown,
and keeps the certificates it verified (a non-voter hears the same one every few seconds)."""

from __future__ import annotations

import random

import msgpack
import nacl.signing
import pytest

from consensus.certificate import encode_certificate, sign_vote
from consensus.config import Era, VoterConfig
from consensus.election import ElectionCore
from consensus.hardstate import HardState, MemoryStore
from consensus.messages import Announce, encode
from gossip.events import RecordsAccepted
from gossip.kinds import DEFAULT_KINDS, FLEET_SCOPE, VOTERS_RESET_KIND
from gossip.records import Record, sign_record
from gossip.votersreset import (
    MEMBERS_MAX,
    VOTERS_RESET_FORMAT,
    VotersReset,
    decode_reset,
    encode_reset,
    reset_problem,
)
from gossip.wire import DecodeError
from tests.consensus.harness import REGION, node_key

OPERATOR = nacl.signing.SigningKey(b"o" * 32)
ERA = Era(0, "a")
CFG = VoterConfig(2, ("a", "b", "c"), 1)


class CountingPeers:
    def __init__(self, live: list[str]) -> None:
        self.live = live
        self.key_reads = 0

    def live_members(self) -> list[str]:
        return list(self.live)

    def member_key(self, node_id: str) -> bytes | None:
        self.key_reads += 1
        return bytes(node_key(node_id).verify_key)


def reset_record(region: str, generation: int, members: tuple[str, ...], version: int = 1) -> Record:
    payload = encode_reset(VotersReset(region, generation, members))
    return sign_record(OPERATOR, VOTERS_RESET_KIND, region, version, FLEET_SCOPE, payload)


def make(
    node_id: str = "d", live: list[str] | None = None
) -> tuple[ElectionCore, MemoryStore, CountingPeers]:
    store = MemoryStore(HardState(ERA, 3, "", CFG, True))
    peers = CountingPeers(live if live is not None else ["a", "b", "c", "d", "e"])
    c = ElectionCore(node_id, REGION, random.Random(1), None, store, peers, node_key(node_id), now=0.0)
    return c, store, peers


def test_a_reset_record_of_our_region_reseeds_the_voters_in_a_new_era() -> None:
    c, store, _ = make("d")
    c.observe(5.0, RecordsAccepted((reset_record(REGION, 1, ("c", "d", "e")),)))
    assert store.state is not None and store.state.era == Era(1, "c")
    assert store.state.config is not None and store.state.config.voters == ("c", "d", "e")
    assert c.config() == VoterConfig(1, ("c", "d", "e"), 0)
    assert c.counters()["resets"] == 1


def test_a_node_left_out_of_the_members_still_takes_the_new_era() -> None:
    c, store, _ = make("z")
    c.observe(5.0, RecordsAccepted((reset_record(REGION, 1, ("c", "d", "e")),)))
    assert store.state is not None and store.state.era == Era(1, "c")
    assert c.config() is not None and not c.config().has("z")  # type: ignore[union-attr]


def test_other_regions_and_old_generations_are_ignored() -> None:
    c, store, _ = make("d")
    c.observe(1.0, RecordsAccepted((reset_record("elsewhere", 1, ("c", "d")),)))
    assert store.state is not None and store.state.era == ERA
    c.observe(2.0, RecordsAccepted((reset_record(REGION, 2, ("c", "d")),)))
    saves = store.saves
    c.observe(3.0, RecordsAccepted((reset_record(REGION, 2, ("a", "b"), version=2),)))
    c.observe(3.0, RecordsAccepted((reset_record(REGION, 1, ("a", "b"), version=3),)))
    assert store.saves == saves
    assert store.state.era == Era(2, "c")
    assert c.counters()["resets_already_held"] == 2


def test_a_restarted_node_keeps_the_reset_and_ignores_the_record_again() -> None:
    c, store, peers = make("d")
    record = reset_record(REGION, 1, ("c", "d", "e"))
    c.observe(1.0, RecordsAccepted((record,)))
    again = ElectionCore("d", REGION, random.Random(2), None, store, peers, node_key("d"), now=9.0)
    again.observe(9.0, RecordsAccepted((record,)))
    assert again.hard_state.era == Era(1, "c")
    assert again.counters().get("resets", 0) == 0


def test_a_bad_reset_payload_is_counted_not_raised() -> None:
    # A table without the payload check (DEFAULT_KINDS has it; a test table may not) lets one in.
    c, store, _ = make("d")
    bad = sign_record(OPERATOR, VOTERS_RESET_KIND, REGION, 1, FLEET_SCOPE, b"\x01\xc1")
    c.observe(1.0, RecordsAccepted((bad,)))
    assert c.counters()["drop_bad_reset"] == 1
    assert store.state is not None and store.state.era == ERA


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x02" + msgpack.packb([REGION, 1, ["a"]]),  # another format
        bytes([VOTERS_RESET_FORMAT]) + msgpack.packb([REGION, 1]),
        bytes([VOTERS_RESET_FORMAT]) + msgpack.packb([REGION, 0, ["a"]]),
        bytes([VOTERS_RESET_FORMAT]) + msgpack.packb([REGION, 2**64 - 1, ["a"]]),
        bytes([VOTERS_RESET_FORMAT]) + msgpack.packb([REGION, 1, []]),
        bytes([VOTERS_RESET_FORMAT]) + msgpack.packb([REGION, 1, ["b", "a"]]),
        bytes([VOTERS_RESET_FORMAT]) + msgpack.packb([REGION, 1, ["a", "a"]]),
        bytes([VOTERS_RESET_FORMAT]) + msgpack.packb([REGION, 1, [1]]),
        bytes([VOTERS_RESET_FORMAT]) + msgpack.packb(["", 1, ["a"]]),
        bytes([VOTERS_RESET_FORMAT]) + msgpack.packb([REGION, 1, ["x" * 65]]),
        bytes([VOTERS_RESET_FORMAT])
        + msgpack.packb([REGION, 1, [f"n{i:03d}" for i in range(MEMBERS_MAX + 1)]]),
        bytes([VOTERS_RESET_FORMAT]) + msgpack.packb([REGION, 1, [[[["deep"]]]]]),
        bytes([VOTERS_RESET_FORMAT]) + b"\x00" * 9000,
    ],
)
def test_the_payload_check_refuses_malformed_resets(payload: bytes) -> None:
    assert reset_problem(payload) is not None
    with pytest.raises(DecodeError):
        decode_reset(payload)


def test_the_kind_table_checks_the_payload_and_lets_any_operator_write_it() -> None:
    policy = DEFAULT_KINDS[VOTERS_RESET_KIND]
    assert policy.payload_check is reset_problem and not policy.deletable
    good = encode_reset(VotersReset(REGION, 3, ("a", "b")))
    assert reset_problem(good) is None and decode_reset(good) == VotersReset(REGION, 3, ("a", "b"))


def test_a_verified_certificate_is_not_verified_again() -> None:
    c, _store, peers = make("z", live=["a", "b", "c"])
    sigs = {v: sign_vote(node_key(v), REGION, ERA, 4, "a", CFG) for v in ("a", "b")}
    cert = encode_certificate(ERA, 4, "a", CFG, sigs)
    c.handle_message(1.0, "region", "b", encode(Announce(ERA, 4, "a", CFG, cert)))
    assert c.leader() == "a"
    reads = peers.key_reads
    assert reads >= 2
    for t in range(2, 6):
        c.handle_message(float(t), "region", "b", encode(Announce(ERA, 4, "a", CFG, cert)))
    assert peers.key_reads == reads
    assert c.leader_age_s(6.0) == pytest.approx(1.0)
