"""One node's election core for its region: a hosted core on the ELECTION channel (sans-IO).

Raft's election without a log: terms, randomized timeouts, one vote per term,
majorities of a small voter set, with pre-vote, check-quorum, leader
stickiness and a lease; the voter configuration is the one replicated entry.
A region with no configuration founds one (unanimity of its founding voters);
an operator may reset it (`reset`). docs/design.md ("Regional leaders") says
why each rule is there; docs/core-api.md ("The election core") is the driver's
contract, above all: the hard state is saved before any message that depends
on it is queued.

Roles: FOLLOWER (voter or not), PRE_CANDIDATE (asking pre-votes),
CANDIDATE (asking votes, or proposing a founding), LEADER.

This file is long because the transitions between the four roles share one
hard state and one set of timers; the rules themselves live in pure modules
(voting.py: what a voter grants; leading.py: acks, lease, commits; config.py:
which voter changes next).
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import replace
from enum import StrEnum

import nacl.signing

from consensus.certificate import LeaderClaim, check_vote, encode_certificate, sign_vote, verify_certificate
from consensus.config import Era, VoterConfig, era_better, founding_voters, next_change
from consensus.events import ConfigChanged, LeaderChanged
from consensus.hardstate import HardState, HardStateStore
from consensus.leading import Leadership
from consensus.messages import (
    Ack,
    Announce,
    Heartbeat,
    Message,
    PreVote,
    Vote,
    VoteReply,
    decode,
    encode,
)
from consensus.peers import ElectionPeers
from consensus.timing import ElectionConfig
from consensus.view import RegionView
from consensus.voting import Verdict, judge_founding, judge_pre_vote, judge_vote
from gossip.events import Event, HostedEvent, MemberChanged, RecordsAccepted
from gossip.io import AppSend
from gossip.kinds import VOTERS_RESET_KIND
from gossip.records import Record
from gossip.votersreset import decode_reset
from gossip.wire import DecodeError

ELECTION_CHANNEL = 1  # node/channels.py Channel.ELECTION (consensus may not import node/)
HINTS_KEPT = 256  # last hint time per member (the rate limit)
# Certificates verified (bytes -> the claim): a non-voter gets the same one in every announcement
# (every 3 s), and checking its signatures again costs ~60 us each (the simulator runs thousands).
VERIFIED_KEPT = 8


class Role(StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class ElectionCore:
    """The election of one node in its region pool (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        region: str,
        rng: random.Random,
        config: ElectionConfig | None,
        store: HardStateStore,
        peers: ElectionPeers,
        signing_key: nacl.signing.SigningKey,
        *,
        now: float = 0.0,
    ) -> None:
        self.node_id = node_id
        self.region = region
        self.settings = config or ElectionConfig()
        self._rng = rng
        self._store = store
        self._peers = peers
        self._key = signing_key
        self._hs = store.load() or HardState()
        self._view = RegionView(node_id, peers.live_members, now)
        self.role = Role.FOLLOWER
        self._leader = ""  # the leader this node believes in
        self._leader_term = 0
        self._leader_seen_s = -math.inf
        self._cert = b""  # the believed leader's verified certificate (our own when leading)
        self._leading: Leadership | None = None
        # Stickiness and the lease's other half: after acknowledging a leader a voter
        # supports no one else for election_timeout_min_s. A restarted node does not
        # remember whom it acknowledged, so it starts as if it had just done so.
        self._promise_until_s = now + self.settings.election_timeout_min_s
        self._promised: tuple[Era, int, str] | None = None
        self._votes: dict[str, bytes] = {}  # candidate: voter -> signature (pre-vote: b"")
        self._founding = False
        self._started_s = now
        self._config_heard_s = -math.inf
        self._tentative_since_s = now
        self._hints: dict[str, float] = {}
        self._heartbeat_at_s = math.inf
        self._wake_s = now + self._timeout_s()
        if self._hs.config is None:
            self._wake_s = now
        self._out: list[AppSend] = []
        self._events: list[HostedEvent] = []
        self._counters: dict[str, int] = {}
        self._verified_certs: OrderedDict[bytes, LeaderClaim] = OrderedDict()

    # --- reads ----------------------------------------------------------------------------

    @property
    def channel(self) -> int:
        return ELECTION_CHANNEL

    @property
    def hard_state(self) -> HardState:
        return self._hs

    def leader(self) -> str | None:
        """The leader's id as this node believes, or None."""
        return self._leader or None

    def is_leader(self, now: float) -> bool:
        """True while this node leads and its lease (a majority's recent acknowledgements) holds."""
        ld, cfg = self._leading, self._hs.config
        if self.role != Role.LEADER or ld is None or cfg is None:
            return False
        return now < ld.lease_until_s(cfg, now, self.settings.lease_s)

    def config(self) -> VoterConfig | None:
        """The established voter configuration (None before founding completes)."""
        return self._hs.config if self._hs.established else None

    def certificate(self) -> bytes | None:
        """The believed leader's certificate (verify_certificate checks it), or None."""
        return self._cert or None

    def leader_age_s(self, now: float) -> float | None:
        """Seconds since this node last heard from (or, leading, was) the believed leader; None: none."""
        if not self._leader:
            return None
        return 0.0 if self.role == Role.LEADER else max(0.0, now - self._leader_seen_s)

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    # --- commands ---------------------------------------------------------------------------

    def reset(self, now: float, generation: int, live_members: list[str]) -> str | None:
        """An operator's `region reset-voters` of `generation`: re-seed the voters; the problem or None.

        live_members must be the same list at every node (the one the signed record
        carries), so that every node derives the same configuration.
        """
        hs = self._hs
        if generation < 1:
            return "reset generation must be 1 or more"
        if hs.era is not None and generation <= hs.era.generation:
            return f"reset generation {generation} is not above the one held ({hs.era.generation})"
        voters = founding_voters(live_members, self.settings.voters_max)
        if not voters:
            return "reset names no live member"
        era = Era(generation, voters[0])
        self._save(HardState(era, 0, "", VoterConfig(1, voters, 0), True))
        self._count("resets")
        self._follow(now)
        self._wake_s = now + self._timeout_s()
        self._set_leader(now, "")
        self._events.append(ConfigChanged(self.region, era, self._hs.config))  # type: ignore[arg-type]
        return None

    def _maybe_reset(self, now: float, records: tuple[Record, ...]) -> None:
        """An operator's `voters-reset` record for our region was accepted here: apply it."""
        for record in records:
            if record.kind != VOTERS_RESET_KIND or record.deleted:
                continue
            try:
                # The store checked it, unless its kind table had no check (tests).
                reset = decode_reset(record.payload)
            except DecodeError:
                self._count("drop_bad_reset")
                continue
            if reset.region != self.region:
                continue
            held = self._hs.era
            if held is not None and reset.generation <= held.generation:
                self._count("resets_already_held")  # a restart re-learning it, or an older one
                continue
            if self.reset(now, reset.generation, list(reset.members)) is not None:
                self._count("resets_refused")

    # --- HostedCore -------------------------------------------------------------------------

    def observe(self, now: float, event: Event) -> None:
        if type(event) is RecordsAccepted:
            self._maybe_reset(now, event.records)
            return
        if type(event) is not MemberChanged or event.pool != "region":
            return
        fresh = self._view.observe(now, event)
        cfg = self._hs.config
        if fresh and self.role == Role.LEADER and cfg is not None and not cfg.has(event.node_id):
            self._announce(event.node_id)  # a newcomer learns the leader before it would found

    def handle_message(self, now: float, pool: str, from_id: str, payload: bytes) -> None:
        if pool != "region" or from_id == self.node_id:
            self._count("drop_pool")
            return
        try:
            msg = decode(payload)
        except DecodeError as exc:
            self._count("drop_" + exc.reason)
            return
        self._dispatch(now, from_id, msg)

    def handle_timer(self, now: float) -> None:
        if self.role == Role.LEADER:
            if now >= self._heartbeat_at_s:
                self._lead_tick(now)
            return
        if now < self._wake_s:
            return
        self._wake_s = now + self._timeout_s()
        hs, cfg = self._hs, self._hs.config
        if cfg is None:
            self._maybe_found(now)
        elif not hs.established:
            self._tentative_timeout(now)
        elif not cfg.has(self.node_id):
            self._wake_s = now + self.settings.announce_interval_s
            if self._leader and now - self._leader_seen_s > self.settings.leader_forgotten_s:
                self._set_leader(now, "")
        else:
            self._set_leader(now, "")
            self._start_pre_vote(now)

    def next_deadline(self) -> float | None:
        return self._heartbeat_at_s if self.role == Role.LEADER else self._wake_s

    def poll_messages(self) -> list[AppSend]:
        out, self._out = self._out, []
        return out

    def drain_events(self) -> list[HostedEvent]:
        out, self._events = self._events, []
        return out

    def poll_records(self) -> list[tuple[Record, bool]]:
        return []  # the election publishes no record (the driver may record ConfigChanged)

    # --- founding ---------------------------------------------------------------------------

    def _maybe_found(self, now: float) -> None:
        s = self.settings
        ready_s = max(
            self._started_s + s.found_after_s,
            self._view.changed_s + s.view_stable_s,
            self._config_heard_s + s.found_after_s,
        )
        if now < ready_s:
            self._wake_s = ready_s
            return
        voters = founding_voters(self._view.live_with_me(), s.voters_max)
        if voters[0] != self.node_id:
            self._wake_s = now + s.found_after_s  # the lowest id founds; we vote
            return
        self._found(now, voters)

    def _found(self, now: float, voters: tuple[str, ...]) -> None:
        hs, era = self._hs, Era(0, self.node_id)
        term = hs.term + 1 if hs.era == era else 1
        self._save(HardState(era, term, self.node_id, VoterConfig(1, voters, term), False))
        self._count("foundings_proposed")
        self._tentative_since_s = now
        self._stand(now, founding=True)

    def _tentative_timeout(self, now: float) -> None:
        """A founding proposal not proven yet: the founder proposes again; a voter may give up."""
        hs = self._hs
        assert hs.era is not None
        if hs.era.founder == self.node_id:
            voters = founding_voters(self._view.live_with_me(), self.settings.voters_max)
            if voters[0] == self.node_id:
                self._found(now, voters)
                return
        elif (
            hs.era.founder in self._view.live()
            or now - self._tentative_since_s < 2 * self.settings.found_after_s
        ):
            return
        # A lower id is live (the founder yields) or our founder is gone: drop the proposal.
        # Safe: a proposal that won has a certificate, and a voter that saw it is established.
        self._save(replace(hs, config=None))
        self._follow(now)
        self._count("foundings_abandoned")
        self._wake_s = now

    # --- standing for election --------------------------------------------------------------

    def _start_pre_vote(self, now: float) -> None:
        hs, cfg = self._hs, self._hs.config
        assert hs.era is not None and cfg is not None
        self.role = Role.PRE_CANDIDATE
        self._votes = {self.node_id: b""}
        self._count("pre_votes_started")
        for v in cfg.voters:
            if v != self.node_id:
                self._send(v, PreVote(hs.era, hs.term + 1, cfg))
        if len(self._votes) >= cfg.quorum:
            self._campaign(now)

    def _campaign(self, now: float) -> None:
        hs = self._hs
        self._save(replace(hs, term=hs.term + 1, voted_for=self.node_id))
        self._count("campaigns")
        self._stand(now, founding=False)

    def _stand(self, now: float, *, founding: bool) -> None:
        """Ask for votes in the current term (the hard state already names us)."""
        hs, cfg = self._hs, self._hs.config
        assert hs.era is not None and cfg is not None
        self.role = Role.CANDIDATE
        self._founding = founding
        self._wake_s = now + self._timeout_s()
        self._votes = {self.node_id: sign_vote(self._key, self.region, hs.era, hs.term, self.node_id, cfg)}
        for v in cfg.voters:
            if v != self.node_id:
                self._send(v, Vote(hs.era, hs.term, cfg, founding))
        self._check_won(now)

    def _check_won(self, now: float) -> None:
        cfg = self._hs.config
        assert cfg is not None
        needed = len(cfg.voters) if self._founding else cfg.quorum  # a founding needs every voter
        if len(self._votes) >= needed:
            self._become_leader(now)

    def _become_leader(self, now: float) -> None:
        hs, cfg = self._hs, self._hs.config
        assert hs.era is not None and cfg is not None
        cert = encode_certificate(hs.era, hs.term, self.node_id, cfg, self._votes)
        new = replace(hs, established=True)
        if cfg.made_in_term != hs.term:
            # Ongaro's fix: commit something of our own term (the config, re-stamped)
            # before making any change of voters.
            new = replace(new, config=VoterConfig(cfg.epoch + 1, cfg.voters, hs.term))
        if new != hs:
            self._save(new)
        self.role = Role.LEADER
        self._leading = Leadership(self.node_id, now, cert)
        self._cert = cert
        self._count("elected")
        self._set_leader(now, self.node_id)
        if new.config != cfg or not hs.established:
            self._config_changed()
        current = new.config
        assert current is not None
        for m in self._view.live():
            if not current.has(m):
                self._announce(m)
        self._lead_tick(now)

    # --- leading ----------------------------------------------------------------------------

    def _lead_tick(self, now: float) -> None:
        hs, cfg, ld, s = self._hs, self._hs.config, self._leading, self.settings
        assert hs.era is not None and cfg is not None and ld is not None
        if ld.lost_quorum(cfg, now, s.election_timeout_max_s):
            self._count("check_quorum_step_downs")
            self._follow(now)
            self._set_leader(now, "")
            return
        self._maybe_change_voters(now)
        cfg = self._hs.config
        assert cfg is not None
        for v in cfg.voters:
            if v != self.node_id:
                cert = b"" if ld.acknowledged(v) else ld.certificate
                self._send(v, Heartbeat(hs.era, hs.term, now, cfg, cert))
        non_voters = [m for m in self._view.live() if not cfg.has(m)]
        per_round = math.ceil(len(non_voters) * s.heartbeat_interval_s / s.announce_interval_s)
        for m in ld.announce_batch(non_voters, per_round):
            self._announce(m)
        self._heartbeat_at_s = now + s.heartbeat_interval_s

    def _maybe_change_voters(self, now: float) -> None:
        hs, cfg, ld, s = self._hs, self._hs.config, self._leading, self.settings
        assert cfg is not None and ld is not None
        if cfg.made_in_term != hs.term or not ld.committed(cfg):
            return  # one change at a time, each stored by a majority of its own voters first
        gone = [v for v in cfg.voters if self._view.is_gone(v, now, s.gone_after_s)]
        voters = next_change(cfg.voters, gone, self._view.stable(now, s.stable_after_s), s.voters_max)
        if voters is None or (len(voters) < len(cfg.voters) and len(gone) >= cfg.quorum):
            return  # nothing to do, or a majority is gone: only an operator reset helps then
        self._save(replace(hs, config=VoterConfig(cfg.epoch + 1, voters, hs.term)))
        self._count("voter_changes")
        self._config_changed()

    def _on_ack(self, now: float, src: str, m: Ack) -> None:
        hs, cfg, ld = self._hs, self._hs.config, self._leading
        if self.role != Role.LEADER or ld is None or cfg is None or m.era != hs.era or m.term != hs.term:
            self._count("stale_ack")
            return
        if not cfg.has(src):
            self._count("drop_not_voter")
            return
        ld.on_ack(src, min(m.sent_s, now), m.config_rank)  # a future send time never extends the lease

    # --- voting -----------------------------------------------------------------------------

    def _on_pre_vote(self, now: float, src: str, m: PreVote) -> None:
        verdict = judge_pre_vote(self._hs, src, m, sticky=self._sticky(now))
        self._answer(now, src, m.era, verdict, pre=True)

    def _on_vote(self, now: float, src: str, m: Vote) -> None:
        if m.founding:
            verdict = judge_founding(self._hs, self.node_id, src, m, sticky=now < self._promise_until_s)
        else:
            verdict = judge_vote(self._hs, self.node_id, src, m, sticky=self._sticky(now))
        if verdict.grant and m.founding:
            self._follow(now)
            self._config_heard_s = now
            self._tentative_since_s = now
            self._wake_s = now + 2 * self.settings.found_after_s
        self._answer(now, src, m.era, verdict, pre=False, candidate_config=m.config)

    def _sticky(self, now: float) -> bool:
        return self.role == Role.LEADER or now < self._promise_until_s

    def _answer(
        self,
        now: float,
        src: str,
        era: Era,
        verdict: Verdict,
        *,
        pre: bool,
        candidate_config: VoterConfig | None = None,
    ) -> None:
        """Apply a voting verdict: save what it says first, then answer."""
        self._count(verdict.outcome)
        if not verdict.reply:
            return
        if verdict.grant and not pre:
            assert verdict.state is not None and candidate_config is not None
            self._grant(now, src, verdict.state, candidate_config)
            return
        if verdict.state is not None:
            rose = verdict.state.term > self._hs.term
            self._save(verdict.state)
            if rose:
                self._follow(now)
        self._send(src, VoteReply(era, verdict.reply_term, pre, verdict.grant, b""))
        if verdict.hint:
            self._hint(now, src)

    def _grant(self, now: float, src: str, new: HardState, candidate_config: VoterConfig) -> None:
        assert new.era is not None
        if new.term > self._hs.term:
            self._follow(now)
        self._save(new)  # durable before the vote leaves: never two votes in one term
        signature = sign_vote(self._key, self.region, new.era, new.term, src, candidate_config)
        self._send(src, VoteReply(new.era, new.term, False, True, signature))
        if self._hs.established:
            self._wake_s = now + self._timeout_s()

    def _on_vote_reply(self, now: float, src: str, m: VoteReply) -> None:
        hs, cfg = self._hs, self._hs.config
        if m.era != hs.era or cfg is None:
            self._count("stale_vote_reply")
            return
        if not cfg.has(src):
            self._count("drop_not_voter")
            return
        if not m.granted:
            if m.term > hs.term and hs.established:
                self._save(replace(hs, term=m.term, voted_for=""))
                self._follow(now)
            return
        if m.pre and self.role == Role.PRE_CANDIDATE and m.term == hs.term + 1:
            self._votes[src] = b""
            if len(self._votes) >= cfg.quorum:
                self._campaign(now)
        elif not m.pre and self.role == Role.CANDIDATE and m.term == hs.term:
            assert hs.era is not None
            key = self._peers.member_key(src)
            if not check_vote(key, m.signature, self.region, hs.era, hs.term, self.node_id, cfg):
                self._count("drop_bad_signature")
                return
            self._votes[src] = m.signature
            self._check_won(now)

    # --- following --------------------------------------------------------------------------

    def _on_heartbeat(self, now: float, src: str, m: Heartbeat) -> None:
        if not m.config.has(src):
            self._count("drop_not_voter")
            return
        if not self._accept_leader(now, src, m.era, m.term, m.config, m.certificate, src):
            return
        self._wake_s = now + self._timeout_s()
        promise = (m.era, m.term, src)
        if now < self._promise_until_s and self._promised != promise:
            self._count("acks_withheld")  # still bound to another leader's lease
            return
        self._promised = promise
        self._promise_until_s = now + self.settings.election_timeout_min_s
        cfg = self._hs.config
        assert cfg is not None
        self._send(src, Ack(m.era, m.term, m.sent_s, cfg.rank))

    def _on_announce(self, now: float, src: str, m: Announce) -> None:
        hs = self._hs
        # Without its proof, only the leader's own word, which _accept_leader trusts in our era.
        if m.leader and (m.certificate or m.leader == src):
            self._accept_leader(now, src, m.era, m.term, m.config, m.certificate, m.leader)
        elif hs.established and m.era == hs.era and m.term > hs.term:
            self._save(replace(hs, term=m.term, voted_for=""))  # Raft: a higher term ends ours
            self._follow(now)
            self._set_leader(now, "")
        else:
            self._count("announce_ignored")

    def _accept_leader(
        self, now: float, src: str, era: Era, term: int, config: VoterConfig, cert: bytes, leader: str
    ) -> bool:
        """Follow `leader` of (era, term) if the rules allow it, storing its config; False if not."""
        hs = self._hs
        if hs.established and era == hs.era:
            if term < hs.term:
                self._count("stale_leader")
                self._hint(now, src)
                return False
            if term == hs.term and self.role == Role.LEADER:
                return False
            # Raft trusts a leader's own heartbeat in our era; a relayed claim needs its proof.
            if leader != src and self._verified(cert, era, term, leader) is None:
                self._count("drop_unproven")
                return False
            voted = hs.voted_for if term == hs.term else ""
            best = config if config.rank > hs.config.rank else hs.config  # type: ignore[union-attr]
            new = HardState(era, term, voted, best, True)
        else:
            worse = hs.era is not None and (
                era.generation < hs.era.generation or (hs.established and not era_better(era, hs.era))
            )
            if worse:
                self._count("drop_worse_era")
                self._hint(now, src)
                return False
            if self._verified(cert, era, term, leader) is None:
                self._count("drop_unproven")
                return False
            if hs.established:
                self._count("eras_merged")
            voted = hs.voted_for if (era == hs.era and term == hs.term) else ""
            new = HardState(era, term, voted, config, True)
        if cert:
            self._cert = cert
        elif leader != self._leader or term != self._leader_term:
            self._cert = b""  # a new leader's proof has not reached us yet
        if new != hs:
            old_config = hs.config if hs.established else None
            self._save(new)
            if new.config != old_config:
                self._config_changed()
        if self.role != Role.FOLLOWER:
            self._follow(now)
        self._config_heard_s = now
        self._leader_seen_s = now
        self._set_leader(now, leader)
        return True

    def _verified(self, cert: bytes, era: Era, term: int, leader: str) -> LeaderClaim | None:
        if not cert:
            return None
        claim = self._verified_certs.get(cert)
        if claim is None:
            claim = verify_certificate(cert, self.region, None, self._peers.member_key)
            if claim is not None:
                # Only valid ones are kept: a forged certificate costs its sender our CPU each
                # time, as before, but never evicts the real one.
                self._verified_certs[cert] = claim
                if len(self._verified_certs) > VERIFIED_KEPT:
                    self._verified_certs.popitem(last=False)
        else:
            self._verified_certs.move_to_end(cert)
        if claim is None or claim.era != era or claim.term != term or claim.leader != leader:
            return None
        return claim

    # --- plumbing ---------------------------------------------------------------------------

    def _dispatch(self, now: float, src: str, msg: Message) -> None:
        match msg:
            case PreVote():
                self._on_pre_vote(now, src, msg)
            case Vote():
                self._on_vote(now, src, msg)
            case VoteReply():
                self._on_vote_reply(now, src, msg)
            case Heartbeat():
                self._on_heartbeat(now, src, msg)
            case Ack():
                self._on_ack(now, src, msg)
            case Announce():
                self._on_announce(now, src, msg)

    def _follow(self, now: float) -> None:
        """Back to follower (from any role); a leader's term bookkeeping ends."""
        if self.role == Role.FOLLOWER:
            return
        if self.role == Role.LEADER:
            self._wake_s = now + self._timeout_s()
        self.role = Role.FOLLOWER
        self._leading = None
        self._votes = {}
        self._heartbeat_at_s = math.inf

    def _set_leader(self, now: float, leader: str) -> None:
        if leader:
            self._leader_seen_s = now
        if leader == self._leader and (not leader or self._hs.term == self._leader_term):
            return
        self._leader = leader
        self._leader_term = self._hs.term
        if not leader:
            self._cert = b""
        self._events.append(LeaderChanged(self.region, self._hs.era, self._hs.term, leader))

    def _config_changed(self) -> None:
        hs = self._hs
        assert hs.era is not None and hs.config is not None
        self._events.append(ConfigChanged(self.region, hs.era, hs.config))

    def _announce(self, dst: str) -> None:
        hs, cfg = self._hs, self._hs.config
        if hs.era is not None and cfg is not None and self._leader and self._cert:
            ld = self._leading
            # The certificate is most of an announcement: a leader sends it to each non-voter
            # only now and then (Leadership.announce_carries_proof); a relayed claim always.
            proof = ld is None or ld.announce_carries_proof(dst, self.settings.announce_proof_every)
            self._send(dst, Announce(hs.era, self._hs.term, self._leader, cfg, self._cert if proof else b""))

    def _hint(self, now: float, dst: str) -> None:
        """Tell a member that lags (an older term or a worse era) what we know, at most once a second."""
        if now - self._hints.get(dst, -math.inf) < 1.0 or not self._hs.established:
            return
        self._hints[dst] = now
        if len(self._hints) > HINTS_KEPT:
            del self._hints[next(iter(self._hints))]
        hs, cfg = self._hs, self._hs.config
        assert hs.era is not None and cfg is not None
        leader, cert = (self._leader, self._cert) if self._cert else ("", b"")
        self._send(dst, Announce(hs.era, hs.term, leader, cfg, cert))

    def _send(self, dst: str, msg: Message) -> None:
        payload = encode(msg)
        self._out.append(AppSend(dst, payload))
        self._count("sent_messages")
        self._count("sent_bytes", len(payload))

    def _save(self, state: HardState) -> None:
        self._store.save(state)
        self._hs = state

    def _timeout_s(self) -> float:
        return self._rng.uniform(self.settings.election_timeout_min_s, self.settings.election_timeout_max_s)

    def _count(self, key: str, n: int = 1) -> None:
        self._counters[key] = self._counters.get(key, 0) + n
