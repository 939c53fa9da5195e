"""Lifeguard's suspicion timer (memberlist suspicion.go), sans-IO.

A suspect's timer starts at the maximum and shrinks towards the minimum as
independent peers confirm the suspicion, on a log curve: the first few
confirmations count most. A lone (possibly wrong) accuser thus gives the suspect
a long time to refute, while a node many peers agree is gone is declared dead
quickly. The core owns the clock: it polls deadline_s() instead of arming a timer.
"""

from __future__ import annotations

import math


class Suspicion:
    """The timer for one suspect member, driven towards min_timeout_s by k confirmations."""

    __slots__ = ("_confirmers", "_from_id", "_k", "_max_timeout_s", "_min_timeout_s", "_started_at_s")

    def __init__(
        self,
        from_id: str,
        k: int,
        min_timeout_s: float,
        max_timeout_s: float,
        started_at_s: float,
    ) -> None:
        """Start the timer at max_timeout_s (at min_timeout_s if k < 1) from started_at_s."""
        if not 0.0 <= min_timeout_s <= max_timeout_s:
            raise ValueError(
                "suspicion timeouts must satisfy 0 <= min_timeout_s <= max_timeout_s, "
                f"got min_timeout_s={min_timeout_s}, max_timeout_s={max_timeout_s}"
            )
        self._from_id = from_id
        self._k = k
        self._min_timeout_s = min_timeout_s
        self._max_timeout_s = max_timeout_s
        self._started_at_s = started_at_s
        # An insertion-ordered dict rather than a set: iteration stays deterministic.
        self._confirmers: dict[str, None] = {}

    @property
    def confirmations(self) -> int:
        """Independent confirmations counted so far (never more than k)."""
        return len(self._confirmers)

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

    def _timeout_s(self) -> float:
        """The current total timeout, measured from started_at_s."""
        if self._k < 1:
            # No confirmations to wait for (a pool too small to have k independent
            # peers): take the minimum from the start.
            return self._min_timeout_s
        n = len(self._confirmers)
        fraction = math.log(n + 1) / math.log(self._k + 1)
        span_s = self._max_timeout_s - self._min_timeout_s
        return max(self._min_timeout_s, self._max_timeout_s - span_s * fraction)

    def deadline_s(self) -> float:
        """When the suspect is declared dead unless it refutes: started_at_s + current timeout."""
        return self._started_at_s + self._timeout_s()
