"""A leader's bookkeeping for one term: acknowledgements, the lease, check-quorum, commits (pure)."""

from __future__ import annotations

import math

from consensus.config import VoterConfig

# Non-voters whose announcement count a leader keeps (members_max of a pool); beyond, the
# oldest is forgotten, and its next announcement carries the proof again.
ANNOUNCED_KEPT = 4096


class Leadership:
    """What the leader of one term tracks about its voters."""

    def __init__(self, node_id: str, now: float, certificate: bytes) -> None:
        self.node_id = node_id
        self.since_s = now
        self.certificate = certificate
        self._acked_sent_s: dict[str, float] = {}  # voter -> newest heartbeat send time it acknowledged
        self._stored: dict[str, tuple[int, int]] = {}  # voter -> config rank it said it stored
        self._announce_next = 0  # round-robin position among non-voters
        self._announced: dict[str, int] = {}  # non-voter -> announcements sent to it this term

    def on_ack(self, voter: str, sent_s: float, rank: tuple[int, int]) -> None:
        if sent_s > self._acked_sent_s.get(voter, -math.inf):
            self._acked_sent_s[voter] = sent_s
        if rank > self._stored.get(voter, (-1, -1)):
            self._stored[voter] = rank

    def acknowledged(self, voter: str) -> bool:
        """The voter acknowledged a heartbeat of this term (it no longer needs the certificate)."""
        return voter in self._acked_sent_s

    def quorum_sent_s(self, config: VoterConfig, now: float) -> float:
        """The newest send time that a majority (the leader included, at now) has acknowledged."""
        times = sorted(
            (now if v == self.node_id else self._acked_sent_s.get(v, -math.inf) for v in config.voters),
            reverse=True,
        )
        return times[config.quorum - 1]

    def lease_until_s(self, config: VoterConfig, now: float, lease_s: float) -> float:
        return self.quorum_sent_s(config, now) + lease_s

    def lost_quorum(self, config: VoterConfig, now: float, window_s: float) -> bool:
        """Check-quorum: no majority has answered within window_s (counted from the term's start)."""
        return now - max(self.since_s, self.quorum_sent_s(config, now)) >= window_s

    def committed(self, config: VoterConfig) -> bool:
        """A majority of config (the leader included) stored config or a later one."""
        stored = sum(
            1 for v in config.voters if v == self.node_id or self._stored.get(v, (-1, -1)) >= config.rank
        )
        return stored >= config.quorum

    def announce_carries_proof(self, member: str, every: int) -> bool:
        """Whether this term's next announcement to member carries the certificate: the first
        one, then every `every`-th (one lost, or a member that restarted, gets it again soon;
        the others read the leader's own word, which they trust in their era as Raft does)."""
        sent = self._announced.get(member, 0)
        self._announced[member] = sent + 1
        if len(self._announced) > ANNOUNCED_KEPT:
            del self._announced[next(iter(self._announced))]
        return sent % every == 0

    def announce_batch(self, non_voters: list[str], per_round: int) -> list[str]:
        """The next non-voters to announce to, round robin over the sorted list."""
        if not non_voters:
            return []
        n = min(per_round, len(non_voters))
        start = self._announce_next % len(non_voters)
        self._announce_next = start + n
        return [non_voters[(start + i) % len(non_voters)] for i in range(n)]
