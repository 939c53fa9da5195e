"""The election's timings and limits, in one place (like gossip/config.py's profiles)."""

from __future__ import annotations

from dataclasses import dataclass

VOTERS_MAX = 5  # the most voters a region may have (messages must fit 1024 bytes)


@dataclass(frozen=True, slots=True)
class ElectionConfig:
    """Timings for a LAN region (the `lan` profile's peer of the election); all in seconds.

    Safety needs `lease_s < election_timeout_min_s`: a voter that acknowledged a
    leader refuses other candidates for election_timeout_min_s from then, so the
    leader may act alone until lease_s after it SENT the heartbeat a majority
    acknowledged. The margin covers clocks that run at slightly different rates.
    """

    heartbeat_interval_s: float = 0.25  # leader -> voters
    election_timeout_min_s: float = 1.0  # a follower stands after [min, max) without a heartbeat
    election_timeout_max_s: float = 2.0
    lease_s: float = 0.8  # < election_timeout_min_s, by a 20% clock-rate margin
    announce_interval_s: float = 3.0  # leader -> each non-voter, round robin
    announce_proof_every: int = 5  # the certificate rides the first and every 5th of them
    voters_max: int = 5
    stable_after_s: float = 10.0  # a member alive this long (and not suspect) may become a voter
    gone_after_s: float = 10.0  # a voter we never had news of since start counts as gone after this
    found_after_s: float = 3.0  # with no config heard this long after start, a region may be founded
    view_stable_s: float = 1.0  # ... once the region view has not changed for this long
    leader_forgotten_s: float = 10.0  # a non-voter forgets a leader it has not heard of for this long

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval_s < self.election_timeout_min_s < self.election_timeout_max_s:
            raise ValueError(
                "need 0 < heartbeat_interval_s < election_timeout_min_s < election_timeout_max_s"
            )
        if not 0 < self.lease_s < self.election_timeout_min_s:
            raise ValueError("need 0 < lease_s < election_timeout_min_s (the lease must end before votes)")
        if not 1 <= self.voters_max <= VOTERS_MAX:
            # An announcement carries the config and a certificate (which carries the config
            # it was made under): with 64-character ids, 5 voters is what fits 1024 bytes.
            raise ValueError(f"need 1 <= voters_max <= {VOTERS_MAX}")
        if self.announce_interval_s <= 0:
            raise ValueError("need announce_interval_s > 0")
        if self.announce_proof_every < 1:
            raise ValueError("need announce_proof_every >= 1")
