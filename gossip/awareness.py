"""Lifeguard's local health multiplier (memberlist awareness.go), sans-IO.

A node that misses its own acks or has to refute suspicions about itself is
probably the slow one (a stalled CPU, a saturated link), not its peers. Its
health score rises, and every probe timeout it sets is scaled up, so a sick
node waits longer before accusing healthy peers.
"""

from __future__ import annotations


class Awareness:
    """Local health score in [0, max_multiplier - 1]; 0 is healthy."""

    __slots__ = ("_max_multiplier", "_score")

    def __init__(self, max_multiplier: int) -> None:
        """Start healthy; timeouts can grow to max_multiplier times their base value."""
        if max_multiplier < 1:
            raise ValueError(f"awareness max_multiplier must be at least 1, got {max_multiplier}")
        self._max_multiplier = max_multiplier
        self._score = 0

    @property
    def health_score(self) -> int:
        """Current score: 0 is healthy, max_multiplier - 1 is the worst."""
        return self._score

    def apply_delta(self, delta: int) -> None:
        """Add delta to the score, clamped to [0, max_multiplier - 1]."""
        # Clamp rather than accumulate: a node railed at the top must recover with
        # the first good round, not after paying back every missed ack.
        self._score = min(max(self._score + delta, 0), self._max_multiplier - 1)

    def scale_timeout(self, timeout_s: float) -> float:
        """timeout_s scaled by the current health: timeout_s * (score + 1)."""
        return timeout_s * (self._score + 1)
