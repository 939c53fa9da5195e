"""inference/artifact_gc.py: least recently used first, never a needed one, down to the budget."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from inference.artifact_gc import HeldArtifact, to_delete


def held(n: int, size: int = 10) -> list[HeldArtifact]:
    return [HeldArtifact(f"{i:064x}", size, float(i)) for i in range(n)]


def test_least_recently_used_go_first_until_within_budget() -> None:
    arts = held(5)
    assert to_delete(arts, set(), 30) == [arts[0].sha256, arts[1].sha256]
    assert to_delete(arts, set(), 50) == []


def test_needed_artifacts_stay_even_over_budget() -> None:
    arts = held(3)
    keep = {a.sha256 for a in arts[:2]}
    assert to_delete(arts, keep, 0) == [arts[2].sha256]


@given(
    st.lists(
        st.tuples(st.integers(1, 100), st.floats(0, 100), st.booleans()),
        max_size=20,
        unique_by=lambda t: t[1],
    ),
    st.integers(0, 1000),
)
def test_property_never_a_needed_one_and_within_budget_when_possible(
    rows: list[tuple[int, float, bool]], budget: int
) -> None:
    arts = [HeldArtifact(f"{i:064x}", size, used) for i, (size, used, _k) in enumerate(rows)]
    keep = {a.sha256 for a, (_s, _u, k) in zip(arts, rows, strict=True) if k}
    gone = to_delete(arts, keep, budget)
    assert not set(gone) & keep
    left = sum(a.size_bytes for a in arts if a.sha256 not in gone)
    needed = sum(a.size_bytes for a in arts if a.sha256 in keep)
    assert left <= budget or left == needed  # within budget, or only needed ones are left
    # least recently used first: nothing deleted is newer than an unneeded one kept
    kept_unneeded = [a.last_used for a in arts if a.sha256 not in gone and a.sha256 not in keep]
    deleted = [a.last_used for a in arts if a.sha256 in gone]
    if kept_unneeded and deleted:
        assert max(deleted) <= min(kept_unneeded)
