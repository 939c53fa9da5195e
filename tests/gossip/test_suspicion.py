"""Tests for gossip.suspicion: Lifeguard's shrinking suspicion timer."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.suspicion import Suspicion


def make(k: int = 3, min_s: float = 2.0, max_s: float = 12.0, start_s: float = 100.0) -> Suspicion:
    return Suspicion("accuser", k, min_s, max_s, start_s)


def test_starts_at_max_timeout() -> None:
    suspicion = make()
    assert suspicion.confirmations == 0
    assert suspicion.deadline_s() == 112.0


def test_each_confirmation_shrinks_along_the_log_curve() -> None:
    suspicion = make(k=3, min_s=2.0, max_s=12.0)
    for n, confirmer in enumerate(["b", "c", "d"], start=1):
        assert suspicion.confirm(confirmer)
        assert suspicion.confirmations == n
        expected_s = max(2.0, 12.0 - 10.0 * math.log(n + 1) / math.log(4))
        assert suspicion.deadline_s() == pytest.approx(100.0 + expected_s)
    assert suspicion.deadline_s() == pytest.approx(102.0)


def test_original_accuser_does_not_count() -> None:
    # Our own suspect message gossiped back to us is not independent evidence.
    suspicion = make()
    assert not suspicion.confirm("accuser")
    assert suspicion.confirmations == 0
    assert suspicion.deadline_s() == 112.0


def test_duplicate_confirmer_counts_once() -> None:
    suspicion = make()
    assert suspicion.confirm("b")
    deadline_s = suspicion.deadline_s()
    assert not suspicion.confirm("b")
    assert suspicion.confirmations == 1
    assert suspicion.deadline_s() == deadline_s


def test_stops_accepting_after_k_confirmations() -> None:
    suspicion = make(k=2)
    assert suspicion.confirm("b")
    assert suspicion.confirm("c")
    assert not suspicion.confirm("d")
    assert suspicion.confirmations == 2
    assert suspicion.deadline_s() == pytest.approx(102.0)


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_uses_min_from_the_start(k: int) -> None:
    suspicion = make(k=k)
    assert suspicion.deadline_s() == 102.0
    assert not suspicion.confirm("b")
    assert suspicion.confirmations == 0


def test_equal_min_and_max_is_a_fixed_timer() -> None:
    suspicion = make(k=3, min_s=5.0, max_s=5.0)
    assert suspicion.deadline_s() == 105.0
    assert suspicion.confirm("b")
    assert suspicion.deadline_s() == 105.0


@pytest.mark.parametrize(("min_s", "max_s"), [(5.0, 4.0), (-1.0, 4.0)])
def test_rejects_bad_timeouts(min_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        make(min_s=min_s, max_s=max_s)


@given(
    k=st.integers(min_value=-2, max_value=10),
    min_s=st.floats(min_value=0.0, max_value=1e4, allow_nan=False),
    extra_s=st.floats(min_value=0.0, max_value=1e4, allow_nan=False),
    start_s=st.floats(min_value=0.0, max_value=1e7, allow_nan=False),
    confirmers=st.lists(st.sampled_from(["accuser", "b", "c", "d", "e", "f", "g", "h"]), max_size=30),
)
def test_timeout_is_monotone_bounded_and_counts_only_new_confirmers(
    k: int, min_s: float, extra_s: float, start_s: float, confirmers: list[str]
) -> None:
    max_s = min_s + extra_s
    suspicion = Suspicion("accuser", k, min_s, max_s, start_s)
    seen: list[str] = []
    previous_s = suspicion.deadline_s()
    assert start_s + min_s <= previous_s <= start_s + max_s
    for confirmer in confirmers:
        expected_new = confirmer != "accuser" and confirmer not in seen and len(seen) < k
        assert suspicion.confirm(confirmer) == expected_new
        if expected_new:
            seen.append(confirmer)
        assert suspicion.confirmations == len(seen)
        deadline_s = suspicion.deadline_s()
        assert deadline_s <= previous_s
        assert start_s + min_s <= deadline_s <= start_s + max_s
        previous_s = deadline_s
    if k >= 1 and len(seen) == k:
        assert suspicion.deadline_s() == pytest.approx(start_s + min_s)


# --- connection evidence (docs/design.md, "Refused connections") -------------------------


def evidence(needed: int = 2, floor_s: float = 1.0, stalled_s: float = 15.0) -> Suspicion:
    return Suspicion(
        "accuser",
        3,
        2.0,
        12.0,
        100.0,
        refusers_needed=needed,
        refused_floor_s=floor_s,
        stalled_floor_s=stalled_s,
    )


def test_refusals_from_enough_members_confirm_after_the_floor() -> None:
    suspicion = evidence()
    assert suspicion.refused("a", 100.0)
    assert suspicion.deadline_s() == 112.0  # one witness is not enough
    assert not suspicion.refused("a", 100.1)  # nor is the same one twice
    assert suspicion.refused("b", 100.2)
    assert suspicion.refused_quorum
    assert suspicion.deadline_s() == 101.0


def test_a_completed_handshake_holds_the_suspect_past_the_lifeguard_minimum() -> None:
    suspicion = evidence()
    for confirmer in ["b", "c", "d"]:
        suspicion.confirm(confirmer)
    assert suspicion.deadline_s() == pytest.approx(102.0)
    assert suspicion.accepted(100.5)
    assert not suspicion.accepted(101.0)
    assert suspicion.stalled
    assert suspicion.deadline_s() == 115.0


def test_refusals_win_over_an_earlier_stall() -> None:
    # A frozen process that was then killed: its port refuses now.
    suspicion = evidence()
    suspicion.accepted(100.0)
    suspicion.refused("a", 103.0)
    suspicion.refused("b", 103.0)
    assert suspicion.deadline_s() == 101.0


def test_refusers_needed_must_be_positive() -> None:
    with pytest.raises(ValueError, match="refusers_needed"):
        evidence(needed=0)


@given(
    k=st.integers(min_value=0, max_value=6),
    min_s=st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
    extra_s=st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
    needed=st.integers(min_value=1, max_value=4),
    floor_s=st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
    stalled_s=st.floats(min_value=0.0, max_value=60.0, allow_nan=False),
    steps=st.lists(
        st.tuples(st.sampled_from(["confirm", "refused", "accepted"]), st.sampled_from("abcdefg")),
        max_size=30,
    ),
)
def test_evidence_never_shortens_a_suspicion_below_its_rule(
    k: int,
    min_s: float,
    extra_s: float,
    needed: int,
    floor_s: float,
    stalled_s: float,
    steps: list[tuple[str, str]],
) -> None:
    """The rule, as a property: evidence only ever moves the deadline where the rule says.

    A twin timer fed the same confirmations but no connection evidence is today's
    Lifeguard timer. Without a quorum of distinct refusers the deadline is the twin's
    (or later, once a handshake was seen: never before stalled_s); with a quorum it is
    never later than the twin's, never before the floor unless the twin's is earlier.
    """
    start_s = 1000.0
    suspicion = Suspicion(
        "accuser",
        k,
        min_s,
        min_s + extra_s,
        start_s,
        refusers_needed=needed,
        refused_floor_s=floor_s,
        stalled_floor_s=stalled_s,
    )
    twin = Suspicion("accuser", k, min_s, min_s + extra_s, start_s)
    refusers: list[str] = []
    stalled = False
    for step, who in steps:
        if step == "confirm":
            assert suspicion.confirm(who) == twin.confirm(who)
        elif step == "refused":
            assert suspicion.refused(who, start_s) == (who not in refusers)
            if who not in refusers:
                refusers.append(who)
        else:
            assert suspicion.accepted(start_s) == (not stalled)
            stalled = True
        lifeguard_s = twin.deadline_s()
        deadline_s = suspicion.deadline_s()
        assert suspicion.refusers == tuple(refusers)
        if len(refusers) >= needed:
            assert deadline_s == min(lifeguard_s, start_s + floor_s)
        elif stalled:
            assert deadline_s == max(lifeguard_s, start_s + stalled_s)
        else:
            assert deadline_s == lifeguard_s
