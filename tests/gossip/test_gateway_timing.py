"""A member is stable at exactly alive_since + GATEWAY_STABLE_S, in every view (gossip/gateways.py).

Swarm seeds 57, 151 and 178 of `murmur sim --swarm` left a region with four
gateways 15 s after a restart: one member's recheck landed exactly on the
restarted member's `alive_since + GATEWAY_STABLE_S`, still saw it young (float
rounding of `now - since`), and kept its old choice for another recheck interval.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from gossip.config import LAN
from gossip.gateways import GATEWAY_STABLE_S, choose_gateways, rank_hash
from gossip.node import GATEWAYS_PER_REGION, GossipNode
from tests.gossip.harness import Link

OLD = [f"old{i}" for i in range(5)]


@given(
    since_s=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    stable_s=st.floats(min_value=0.5, max_value=100.0, allow_nan=False),
)
@example(since_s=30.005028291878066, stable_s=GATEWAY_STABLE_S)  # the member of swarm seed 57
def test_a_member_is_stable_at_the_moment_the_choice_said(since_s: float, stable_s: float) -> None:
    stable = [(f"s{i}", f"s{i}:1", -1e9) for i in range(GATEWAYS_PER_REGION)]
    cands = [*stable, ("young", "young:1", since_s)]
    first = choose_gateways(cands, since_s, stable_s=stable_s)
    assert first.next_change_s == since_s + stable_s
    # At that moment the member is stable: nothing is left to change, so no later recheck is needed.
    assert choose_gateways(cands, first.next_change_s, stable_s=stable_s).next_change_s == float("inf")


def _first_ranked_name(others: list[str]) -> str:
    best = min(rank_hash(o) for o in others)
    return next(f"new{i}" for i in range(10_000) if rank_hash(f"new{i}") < best)


def _gateway_ids(node: GossipNode) -> set[str]:
    return {v.node_id for v in node.members() if v.gateway}


def test_every_member_makes_a_newcomer_gateway_at_the_recheck_that_finds_it_stable() -> None:
    link = Link(seed=5, config=LAN)
    old = [link.add(name, "r1") for name in OLD]
    for node in old[1:]:
        node.join(link.now, [old[0].addr])
        link._flush(node)
    link.run_until(30.0)  # every old member is stable in every view
    before = {n.node_id for n in old if n.is_gateway}
    assert len(before) == GATEWAYS_PER_REGION
    name = _first_ranked_name(OLD)  # ranks first: a gateway once stable
    new = link.add(name, "r1")
    new.join(link.now, [old[0].addr])
    link._flush(new)
    link.run_until(32.0)
    seen_s = []
    for node in old:
        m = node.region_pool.member(name)
        assert m is not None
        seen_s.append(m.alive_since_s)
    assert all(name not in _gateway_ids(n) for n in old)  # young: not yet
    # Each view rechecks 5 s after it re-chose on hearing of the newcomer: exactly when the
    # newcomer turns stable there. Well within the next recheck, every view has switched.
    link.run_until(max(seen_s) + GATEWAY_STABLE_S + 0.5)
    for node in [*old, new]:
        assert name in _gateway_ids(node), (node.node_id, sorted(_gateway_ids(node)))
    acting = sorted(n.node_id for n in [*old, new] if n.is_gateway)
    assert len(acting) == GATEWAYS_PER_REGION and name in acting, acting
