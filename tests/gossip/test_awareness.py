"""Tests for gossip.awareness: Lifeguard's local health multiplier."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.awareness import Awareness


def test_starts_healthy() -> None:
    awareness = Awareness(8)
    assert awareness.health_score == 0
    assert awareness.scale_timeout(0.5) == 0.5


def test_delta_moves_score_and_scales_timeout() -> None:
    awareness = Awareness(8)
    awareness.apply_delta(3)
    assert awareness.health_score == 3
    assert awareness.scale_timeout(0.5) == pytest.approx(2.0)
    awareness.apply_delta(-1)
    assert awareness.health_score == 2
    assert awareness.scale_timeout(1.0) == pytest.approx(3.0)


def test_score_is_clamped_at_both_ends() -> None:
    awareness = Awareness(8)
    awareness.apply_delta(-5)
    assert awareness.health_score == 0
    awareness.apply_delta(100)
    assert awareness.health_score == 7
    assert awareness.scale_timeout(1.0) == pytest.approx(8.0)
    # Railed at the top, one step down must take effect at once (no hidden excess).
    awareness.apply_delta(-1)
    assert awareness.health_score == 6


def test_multiplier_of_one_never_scales() -> None:
    awareness = Awareness(1)
    awareness.apply_delta(5)
    assert awareness.health_score == 0
    assert awareness.scale_timeout(2.0) == 2.0


@pytest.mark.parametrize("max_multiplier", [0, -3])
def test_rejects_multiplier_below_one(max_multiplier: int) -> None:
    with pytest.raises(ValueError, match="max_multiplier"):
        Awareness(max_multiplier)


@given(
    max_multiplier=st.integers(min_value=1, max_value=64),
    deltas=st.lists(st.integers(min_value=-100, max_value=100), max_size=50),
    timeout_s=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
)
def test_score_stays_in_range_and_scales_linearly(
    max_multiplier: int, deltas: list[int], timeout_s: float
) -> None:
    awareness = Awareness(max_multiplier)
    expected = 0
    for delta in deltas:
        awareness.apply_delta(delta)
        expected = min(max(expected + delta, 0), max_multiplier - 1)
        assert awareness.health_score == expected
        assert 0 <= awareness.health_score <= max_multiplier - 1
        assert awareness.scale_timeout(timeout_s) == timeout_s * (expected + 1)
