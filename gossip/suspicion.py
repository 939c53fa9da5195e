"""Lifeguard's suspicion timer (memberlist suspicion.go), with connection evidence, sans-IO.

A suspect's timer starts at the maximum and shrinks towards the minimum as
independent peers confirm the suspicion, on a log curve: the first few
confirmations count most. A lone (possibly wrong) accuser thus gives the suspect
a long time to refute, while a node many peers agree is gone is declared dead
quickly. The core owns the clock: it polls deadline_s() instead of arming a timer.

Connection checks (docs/design.md, "Refused connections") add two kinds of
evidence. A refused connection means nothing listens at the suspect's gossip
port any more: once refusers_needed members saw one independently, the suspect
is dead refused_floor_s after the suspicion started (unless the Lifeguard timer
is shorter still). A completed handshake with no ack means the host is up and
the process holds its socket but is frozen: such a suspect is not declared dead
before stalled_floor_s, however many confirm it.
"""

from __future__ import annotations

import math


class Suspicion:
    """The timer for one suspect member, driven towards min_timeout_s by k confirmations."""

    __slots__ = (
        "_confirmers",
        "_from_id",
        "_k",
        "_max_timeout_s",
        "_min_timeout_s",
        "_refused_floor_s",
        "_refusers",
        "_refusers_needed",
        "_stalled_floor_s",
        "_stalled_since_s",
        "_started_at_s",
    )

    def __init__(
        self,
        from_id: str,
        k: int,
        min_timeout_s: float,
        max_timeout_s: float,
        started_at_s: float,
        *,
        refusers_needed: int = 2,
        refused_floor_s: float = 1.0,
        stalled_floor_s: float = 15.0,
    ) -> None:
        """Start the timer at max_timeout_s (at min_timeout_s if k < 1) from started_at_s.

        refusers_needed: independent refusals that confirm the suspect dead (at least 1).
        """
        if not 0.0 <= min_timeout_s <= max_timeout_s:
            raise ValueError(
                "suspicion timeouts must satisfy 0 <= min_timeout_s <= max_timeout_s, "
                f"got min_timeout_s={min_timeout_s}, max_timeout_s={max_timeout_s}"
            )
        if refusers_needed < 1:
            raise ValueError(f"refusers_needed must be at least 1, got {refusers_needed}")
        self._from_id = from_id
        self._k = k
        self._min_timeout_s = min_timeout_s
        self._max_timeout_s = max_timeout_s
        self._started_at_s = started_at_s
        self._refusers_needed = refusers_needed
        self._refused_floor_s = refused_floor_s
        self._stalled_floor_s = stalled_floor_s
        # Insertion-ordered dicts rather than sets: iteration stays deterministic.
        self._confirmers: dict[str, None] = {}
        # Who saw the suspect's port refuse a connection, and when we learned it.
        self._refusers: dict[str, float] = {}
        self._stalled_since_s: float | None = None

    @property
    def confirmations(self) -> int:
        """Independent confirmations counted so far (never more than k)."""
        return len(self._confirmers)

    @property
    def refusers(self) -> tuple[str, ...]:
        """The members that saw a refused connection, in the order we learned of them."""
        return tuple(self._refusers)

    @property
    def stalled(self) -> bool:
        """Whether some member saw the suspect's host complete a handshake (a frozen process)."""
        return self._stalled_since_s is not None

    @property
    def refused_quorum(self) -> bool:
        """Whether enough members saw refusals to confirm the suspect dead after the floor."""
        return len(self._refusers) >= self._refusers_needed

    def confirm(self, from_id: str) -> bool:
        """Count from_id's confirmation; True only if it is new and the timer can still shrink."""
        if len(self._confirmers) >= self._k:
            return False
        # The original accuser's own suspect message gossiped back to us is not
        # independent evidence.
        if from_id == self._from_id or from_id in self._confirmers:
            return False
        self._confirmers[from_id] = None
        return True

    def refused(self, by_id: str, now: float) -> bool:
        """Note that by_id saw the suspect refuse a connection; True if by_id is a new refuser."""
        if by_id in self._refusers:
            return False
        self._refusers[by_id] = now
        return True

    def accepted(self, now: float) -> bool:
        """Note that someone saw the suspect's host complete a handshake; True the first time."""
        if self._stalled_since_s is not None:
            return False
        self._stalled_since_s = now
        return True

    def _timeout_s(self) -> float:
        """The current Lifeguard timeout, measured from started_at_s."""
        if self._k < 1:
            # No confirmations to wait for (a pool too small to have k independent
            # peers): take the minimum from the start.
            return self._min_timeout_s
        n = len(self._confirmers)
        fraction = math.log(n + 1) / math.log(self._k + 1)
        span_s = self._max_timeout_s - self._min_timeout_s
        return max(self._min_timeout_s, self._max_timeout_s - span_s * fraction)

    def deadline_s(self) -> float:
        """When the suspect is declared dead unless it refutes."""
        lifeguard_s = self._started_at_s + self._timeout_s()
        if len(self._refusers) >= self._refusers_needed:
            # Refusals are the strongest evidence: they win over a stall seen earlier
            # (a frozen process that was then killed).
            return min(lifeguard_s, self._started_at_s + self._refused_floor_s)
        if self._stalled_since_s is not None:
            return max(lifeguard_s, self._started_at_s + self._stalled_floor_s)
        return lifeguard_s
