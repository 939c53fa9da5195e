"""A site that boots all at once, seeded only at another region's nodes, ends as one pool.

Issue 8, finding 9: two nodes of region north run; then four nodes of region
south start at the same instant, each seeded only at a north node and with no
mDNS. Each south node is redirected (north cannot serve a south region pool),
finds no south gateway yet, and becomes the gateway of a one-member south pool;
they all meet in the fleet pool. They must merge into one south pool.
"""

from __future__ import annotations

from gossip.config import LAN, WAN
from gossip.events import MemberState
from gossip.node import GossipNode
from tests.gossip.harness import Link


def cold_site(seed: int = 1) -> tuple[Link, list[GossipNode], list[GossipNode]]:
    """North (2 nodes, joined), then 4 south nodes started together, each seeded at a north node."""
    link = Link(seed=seed, config=LAN)
    north = [link.add(f"north{i}", "north", fleet_config=WAN) for i in range(2)]
    north[1].join(link.now, [north[0].addr])
    link._flush(north[1])
    link.run_until(20.0)
    south = [link.add(f"south{i}", "south", fleet_config=WAN) for i in range(4)]
    for i, node in enumerate(south):
        node.join(link.now, [north[i % 2].addr])
        link._flush(node)
    return link, north, south


def alive_in_region(node: GossipNode) -> set[str]:
    return {v.node_id for v in node.members() if v.state == MemberState.ALIVE}


def test_a_region_started_at_once_behind_another_regions_seeds_becomes_one_pool() -> None:
    link, north, south = cold_site()
    link.run_until(link.now + 80.0)
    everyone = {n.node_id for n in south}
    for node in south:
        assert alive_in_region(node) == everyone, f"{node.node_id} lists {sorted(alive_in_region(node))}"
    # ...and north never took a south node into its region pool, nor south a north one.
    for node in north:
        assert alive_in_region(node) == {n.node_id for n in north}
    assert 1 <= sum(n.is_gateway for n in south) <= 3
