"""Single election cores driven directly: a lost message is a message not delivered."""

from __future__ import annotations

import random

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.certificate import encode_certificate, sign_vote, verify_certificate
from consensus.config import Era, VoterConfig
from consensus.election import ELECTION_CHANNEL, ElectionCore, Role
from consensus.hardstate import HardState, MemoryStore
from consensus.messages import (
    MESSAGE_MAX_BYTES,
    VERSION,
    Ack,
    Announce,
    Heartbeat,
    PreVote,
    Vote,
    VoteReply,
    decode,
    encode,
)
from consensus.timing import ElectionConfig
from node.channels import Channel
from tests.consensus.harness import REGION, node_key

ERA = Era(0, "a")
CFG = VoterConfig(2, ("a", "b", "c"), 1)


class Peers:
    def __init__(self, live: list[str]) -> None:
        self.live = live

    def live_members(self) -> list[str]:
        return list(self.live)

    def member_key(self, node_id: str) -> bytes | None:
        return bytes(node_key(node_id).verify_key)


class EagerStore(MemoryStore):
    """Records saves and, at each save, the messages the core had queued before it.

    It stands for the most eager driver possible: one that sends whatever is queued
    the moment the core stops to save. Persist-before-send means such a driver
    still never sends a message that depends on a state not yet saved.
    """

    def __init__(self, state: HardState | None = None) -> None:
        super().__init__(state)
        self.core: ElectionCore | None = None
        self.log: list[tuple[str, object]] = []

    def save(self, state: HardState) -> None:
        self.flush()
        super().save(state)
        self.log.append(("save", state))

    def flush(self) -> None:
        if self.core is not None:
            for m in self.core.poll_messages():
                self.log.append(("send", (m.dst_id, decode(m.payload))))


def core(
    node_id: str = "b", state: HardState | None = None, now: float = 0.0
) -> tuple[ElectionCore, EagerStore]:
    store = EagerStore(state if state is not None else HardState(ERA, 1, "", CFG, True))
    c = ElectionCore(
        node_id, REGION, random.Random(1), None, store, Peers(["a", "b", "c"]), node_key(node_id), now=now
    )
    store.core = c
    return c, store


def feed(c: ElectionCore, src: str, msg: object, now: float) -> None:
    """Deliver without draining the output (the store's log sees every message)."""
    c.handle_message(now, "region", src, encode(msg))  # type: ignore[arg-type]


def deliver(c: ElectionCore, src: str, msg: object, now: float) -> list[object]:
    c.handle_message(now, "region", src, encode(msg))  # type: ignore[arg-type]
    return [decode(m.payload) for m in c.poll_messages()]


def test_the_channel_is_the_node_tables_election_channel() -> None:
    assert ELECTION_CHANNEL == Channel.ELECTION


def test_a_vote_is_saved_before_it_is_queued_even_for_the_most_eager_driver() -> None:
    c, store = core()
    feed(c, "c", Vote(ERA, 2, CFG, False), now=5.0)
    store.flush()
    sends = [i for i, (kind, _) in enumerate(store.log) if kind == "send"]
    saves = [i for i, (kind, s) in enumerate(store.log) if kind == "save" and s.voted_for == "c"]  # type: ignore[union-attr]
    assert saves and sends and saves[0] < sends[0]
    granted = store.log[sends[0]][1][1]  # type: ignore[index]
    assert type(granted) is VoteReply and granted.granted and granted.term == 2


def test_a_candidacy_and_a_founding_are_saved_before_their_requests() -> None:
    c, store = core("a", now=0.0)
    c.handle_timer(10.0)  # election timeout: pre-vote first (nothing to save)
    store.flush()
    assert all(kind == "send" for kind, _ in store.log)
    for v in ("b", "c"):
        feed(c, v, VoteReply(ERA, 2, True, True, b""), 10.01)
    store.flush()
    first_vote = next(i for i, (k, m) in enumerate(store.log) if k == "send" and type(m[1]) is Vote)  # type: ignore[index]
    assert any(k == "save" and s.term == 2 and s.voted_for == "a" for k, s in store.log[:first_vote])  # type: ignore[union-attr]

    fresh = EagerStore()
    f = ElectionCore("a", REGION, random.Random(1), None, fresh, Peers(["b", "c"]), node_key("a"))
    fresh.core = f
    f.handle_timer(5.0)  # no config heard: the lowest id founds
    fresh.flush()
    kinds = [k for k, _ in fresh.log]
    assert kinds[0] == "save" and "send" in kinds
    assert fresh.state is not None and fresh.state.config == VoterConfig(1, ("a", "b", "c"), 1)


def test_a_restarted_node_never_votes_twice_in_a_term() -> None:
    c, store = core()
    out = deliver(c, "c", Vote(ERA, 2, CFG, False), now=5.0)
    assert any(type(m) is VoteReply and m.granted for m in out)
    # Crash: all that survives is the store. The restart refuses a's vote in term 2.
    again = ElectionCore(
        "b", REGION, random.Random(2), None, store, Peers(["a", "c"]), node_key("b"), now=6.0
    )
    out = deliver(again, "a", Vote(ERA, 2, CFG, False), now=8.0)
    assert [m.granted for m in out if type(m) is VoteReply] == [False]
    out = deliver(again, "c", Vote(ERA, 2, CFG, False), now=8.1)  # the same candidate: granted again
    assert [m.granted for m in out if type(m) is VoteReply] == [True]


def test_a_follower_that_hears_a_live_leader_refuses_pre_votes_and_votes() -> None:
    c, _ = core(now=0.0)
    out = deliver(c, "a", Heartbeat(ERA, 1, 2.0, CFG, b""), now=2.0)
    assert [type(m) for m in out] == [Ack]
    for msg in (PreVote(ERA, 2, CFG), Vote(ERA, 2, CFG, False)):
        out = deliver(c, "c", msg, now=2.5)
        assert [m.granted for m in out if type(m) is VoteReply] == [False]
    assert c.hard_state.term == 1  # a vote request it ignored did not raise its term
    out = deliver(c, "c", Vote(ERA, 2, CFG, False), now=3.1)  # an election timeout later
    assert [m.granted for m in out if type(m) is VoteReply] == [True]


def test_a_restarted_node_waits_an_election_timeout_before_voting() -> None:
    c, _ = core(now=10.0)
    out = deliver(c, "c", Vote(ERA, 2, CFG, False), now=10.5)
    assert [m.granted for m in out if type(m) is VoteReply] == [False]


def test_a_pre_vote_never_raises_a_term_or_records_a_vote() -> None:
    c, store = core(now=0.0)
    saves = store.saves
    out = deliver(c, "c", PreVote(ERA, 5, CFG), now=3.0)
    assert [m.granted for m in out if type(m) is VoteReply] == [True]
    assert store.saves == saves and c.hard_state.term == 1


def test_an_out_of_date_candidate_gets_no_vote() -> None:
    newer = VoterConfig(3, ("a", "b", "c"), 1)
    c, _ = core(state=HardState(ERA, 1, "", newer, True))
    out = deliver(c, "c", Vote(ERA, 2, CFG, False), now=3.0)
    assert [m.granted for m in out if type(m) is VoteReply] == [False]


def test_messages_from_non_voters_are_counted_drops() -> None:
    c, _ = core()
    outsider = VoterConfig(1, ("x",), 0)
    assert deliver(c, "x", Vote(ERA, 2, CFG, False), 3.0) == []
    assert deliver(c, "x", PreVote(ERA, 2, outsider), 3.0) == []
    assert deliver(c, "x", Heartbeat(ERA, 2, 3.0, CFG, b""), 3.0) == []
    assert c.counters()["drop_not_voter"] == 3


def test_a_leader_wins_with_signed_votes_and_its_certificate_proves_it() -> None:
    c, _ = core("a")
    c.handle_timer(10.0)
    deliver(c, "b", VoteReply(ERA, 2, True, True, b""), 10.01)
    sig = sign_vote(node_key("b"), REGION, ERA, 2, "a", CFG)
    deliver(c, "c", VoteReply(ERA, 2, False, True, b"\x00" * 64), 10.02)  # a forged vote
    assert c.role == Role.CANDIDATE and c.counters()["drop_bad_signature"] == 1
    deliver(c, "b", VoteReply(ERA, 2, False, True, sig), 10.03)
    assert c.role == Role.LEADER and c.leader() == "a"
    cert = c.certificate()
    assert cert is not None
    claim = verify_certificate(cert, REGION, CFG, Peers([]).member_key)
    assert claim is not None and (claim.era, claim.term, claim.leader) == (ERA, 2, "a")
    assert verify_certificate(cert, "other-region", CFG, Peers([]).member_key) is None
    assert not c.is_leader(10.04)  # no lease until a majority acknowledges a heartbeat
    sent = 10.03
    deliver(c, "b", Ack(ERA, 2, sent, c.hard_state.config.rank), 10.05)  # type: ignore[union-attr]
    assert c.is_leader(10.5) and not c.is_leader(sent + 0.8)


def test_certificates_keep_a_bare_majority_and_reject_tampering() -> None:
    cfg = VoterConfig(1, tuple(f"v{i}" for i in range(5)), 1)
    sigs = {v: sign_vote(node_key(v), REGION, ERA, 1, "v0", cfg) for v in cfg.voters}
    cert = encode_certificate(ERA, 1, "v0", cfg, sigs)
    body = msgpack.unpackb(cert[1:])
    assert len(body[5]) == 3
    key = Peers([]).member_key
    assert verify_certificate(cert, REGION, None, key) is not None
    body[5][1] = body[5][0]  # the same signer twice
    assert verify_certificate(bytes([cert[0]]) + msgpack.packb(body), REGION, None, key) is None
    body[5] = body[5][:1]  # too few
    assert verify_certificate(bytes([cert[0]]) + msgpack.packb(body), REGION, None, key) is None
    assert verify_certificate(cert, REGION, VoterConfig(1, ("v0", "v1", "v2"), 1), key) is None
    assert verify_certificate(cert[:-1], REGION, None, key) is None


def test_the_largest_message_fits_an_application_payload() -> None:
    ids = tuple(sorted(chr(ord("a") + i) * 64 for i in range(5)))
    cfg = VoterConfig(2**63, ids, 2**63)
    era = Era(2**63, ids[0])
    sigs = {v: sign_vote(node_key(v), REGION, era, 2**63, ids[0], cfg) for v in ids}
    cert = encode_certificate(era, 2**63, ids[0], cfg, sigs)
    other = VoterConfig(2**63 - 1, ids, 2**63)
    payload = encode(Announce(era, 2**63, ids[0], other, cert))
    assert len(payload) <= MESSAGE_MAX_BYTES
    assert decode(payload) == Announce(era, 2**63, ids[0], other, cert)


def test_bad_input_is_counted_never_raised() -> None:
    c, _ = core()
    cases = {
        "drop_oversized": b"\xe1" + b"\x00" * 2000,
        "drop_bad_version": b"\x00\x91\x01",
        "drop_empty": b"",
        "drop_malformed": bytes([VERSION]) + b"\xc1",
        "drop_unknown_type": bytes([VERSION]) + msgpack.packb([99, 0, "a", 1]),
        "drop_bad_field": bytes([VERSION]) + msgpack.packb([1, -1, "a", 1, [1, 1, ["a"]]]),
        "drop_bad_config": bytes([VERSION]) + msgpack.packb([1, 0, "a", 1, [1, 1, ["b", "a"]]]),
    }
    for key, payload in cases.items():
        c.handle_message(1.0, "region", "c", payload)
        assert c.counters().get(key) == 1, key
    huge = bytes([VERSION]) + msgpack.packb([1, 0, "a", 1])[:-1] + b"\xcf" + b"\xff" * 8
    c.handle_message(1.0, "region", "c", huge)  # a term of 2**64 - 1 is fine; nothing above fits
    c.handle_message(1.0, "region", "c", bytes([VERSION]) + msgpack.packb([8, None, b"\x00" * 40]))
    assert c.counters()["drop_bad_certificate"] == 1
    deep = bytes([VERSION]) + b"\x91" * 500 + b"\x01"
    c.handle_message(1.0, "region", "c", deep)
    assert c.counters()["drop_malformed"] >= 2
    assert c.poll_messages() == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1100))
def test_random_bytes_never_crash_the_core(data: bytes) -> None:
    c, _ = core()
    c.handle_message(1.0, "region", "c", data)
    c.handle_message(1.0, "region", "c", bytes([VERSION]) + data)


def test_an_established_node_refuses_a_founding_and_tells_the_founder() -> None:
    c, _ = core(now=0.0)
    c.handle_message(0.5, "region", "a", encode(Heartbeat(ERA, 1, 0.5, CFG, b"")))
    c.poll_messages()
    proposal = VoterConfig(1, ("a", "b"), 1)
    out = deliver(c, "a", Vote(Era(0, "a"), 1, proposal, True), now=5.0)
    assert any(type(m) is VoteReply and not m.granted for m in out)
    assert c.counters()["foundings_refused"] == 1


def test_reset_refuses_an_old_generation_and_the_old_era_forever() -> None:
    c, _ = core()
    assert c.reset(1.0, 1, ["b", "c", "d"]) is None
    assert c.hard_state.era == Era(1, "b") and c.config() == VoterConfig(1, ("b", "c", "d"), 0)
    assert c.reset(2.0, 1, ["b"]) is not None
    out = deliver(c, "a", Heartbeat(ERA, 9, 3.0, CFG, b""), now=3.0)
    assert not any(type(m) is Ack for m in out)
    assert c.counters()["drop_worse_era"] == 1


def test_timings_that_would_break_the_lease_are_refused() -> None:
    for bad in (
        {"lease_s": 1.0},
        {"heartbeat_interval_s": 1.5},
        {"voters_max": 0},
        {"voters_max": 6},
    ):
        try:
            ElectionConfig(**bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def leader_with_non_voter() -> tuple[ElectionCore, list[Announce]]:
    """Leader a of voters a, b, c, with d live but no voter; and what it told d on winning."""
    store = MemoryStore(HardState(ERA, 1, "", CFG, True))
    c = ElectionCore("a", REGION, random.Random(1), None, store, Peers(["a", "b", "c", "d"]), node_key("a"))
    c.handle_timer(10.0)
    deliver(c, "b", VoteReply(ERA, 2, True, True, b""), 10.01)  # the pre-vote
    c.handle_message(
        10.01,
        "region",
        "b",
        encode(VoteReply(ERA, 2, False, True, sign_vote(node_key("b"), REGION, ERA, 2, "a", CFG))),
    )
    told = [decode(o.payload) for o in c.poll_messages() if o.dst_id == "d"]
    assert c.role == Role.LEADER
    return c, [m for m in told if isinstance(m, Announce)]


def test_a_leader_sends_its_proof_to_a_non_voter_only_now_and_then() -> None:
    c, to_d = leader_with_non_voter()
    assert to_d and to_d[0].certificate  # told at once on winning, with the proof
    now = 10.01
    while len(to_d) < 11 and now < 100.0:
        now += 0.05
        c.handle_timer(now)
        feed(c, "b", Ack(ERA, 2, now, CFG.rank), now)
        to_d += [
            m
            for m in map(decode, (o.payload for o in c.poll_messages() if o.dst_id == "d"))
            if isinstance(m, Announce)
        ]
    every = ElectionConfig().announce_proof_every
    assert [bool(a.certificate) for a in to_d[: 2 * every + 1]] == [
        i % every == 0 for i in range(2 * every + 1)
    ]
    assert all(a.leader == "a" and a.term == 2 for a in to_d)


def test_a_non_voter_takes_the_leaders_own_word_in_its_era_but_a_relayed_claim_needs_proof() -> None:
    light = Announce(ERA, 2, "a", CFG, b"")
    established, _ = core("d")
    deliver(established, "b", light, 1.0)  # relayed by b, without proof: only its higher term counts
    assert established.leader() is None and established.hard_state.term == 2
    deliver(established, "a", light, 1.1)  # the leader's own word, in our era
    assert established.leader() == "a" and established.hard_state.term == 2
    store = MemoryStore(None)
    newcomer = ElectionCore(
        "d", REGION, random.Random(1), None, store, Peers(["a", "b", "c", "d"]), node_key("d")
    )
    deliver(newcomer, "a", light, 1.0)  # no era of its own yet: it needs the proof
    assert newcomer.leader() is None and newcomer.counters()["drop_unproven"] == 1
