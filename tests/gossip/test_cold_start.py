"""A site that boots all at once, seeded only at another region's nodes, ends as one pool.

Issue 8, finding 9: two nodes of region north run; then four nodes of region
south start at the same instant, each seeded only at a north node and with no
mDNS. Each south node is redirected (north cannot serve a south region pool),
finds no south gateway yet, and becomes the gateway of a one-member south pool;
they all meet in the fleet pool. They must merge into one south pool.
"""

from __future__ import annotations

import random

from gossip import codec
from gossip.config import LAN, WAN
from gossip.events import MemberState
from gossip.io import StreamOpen
from gossip.islands import REGION_MERGE_INTERVAL_S, REGION_MERGE_SEEDS_MAX
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


def test_an_island_merges_when_a_redirect_names_gateways_of_our_region_it_never_heard_of() -> None:
    link = Link(seed=2, config=LAN)
    s0, s1, s2, s3 = (link.add(f"s{i}", "south", fleet_config=WAN) for i in range(4))
    s1.join(link.now, [s0.addr])
    s3.join(link.now, [s2.addr])
    for node in (s1, s3):
        link._flush(node)
    link.run_until(20.0)
    # Two islands of one region, with no other region to meet in.
    assert alive_in_region(s0) == {"s0", "s1"} and alive_in_region(s2) == {"s2", "s3"}
    # s2 asks a node of another region, which redirects it with south's summary as it knows it.
    summary = codec.Summary("south", 4, "s0", 2, (("s0", s0.addr), ("s1", s1.addr)), ())
    redirect = codec.PushPull(codec.POOL_REGION, "north", True, (), (summary,), True)
    s2.on_redirect(codec.POOL_REGION, link.now, redirect)
    s2.handle_timer(link.now)
    link._flush(s2)
    link.run_until(link.now + 20.0)
    for node in (s0, s1, s2, s3):
        assert alive_in_region(node) == {"s0", "s1", "s2", "s3"}
    assert s2.counters["region_merge_joins"] == 1


def test_a_region_that_is_one_pool_never_tries_to_merge() -> None:
    # Three regions joined the usual way (a seed in the node's region and one in r0),
    # then a minute of steady state: the merge rule must stay silent.
    link = Link(seed=3, config=LAN)
    by_region = {r: [link.add(f"r{r}n{i}", f"r{r}", fleet_config=WAN) for i in range(5)] for r in range(3)}
    first = by_region[0][0]
    for nodes in by_region.values():
        for node in nodes:
            if node is not first:
                node.join(link.now, [*([nodes[0].addr] if node is not nodes[0] else []), first.addr])
                link._flush(node)
    link.run_until(90.0)
    for nodes in by_region.values():
        for node in nodes:
            assert alive_in_region(node) == {n.node_id for n in nodes}
            assert node.counters.get("region_merge_joins", 0) == 0, node.node_id


def _join_targets(node: GossipNode) -> list[str]:
    return [out.dst for out in node.poll_transmit() if isinstance(out, StreamOpen)]


def test_merge_joins_are_bounded_and_rate_limited() -> None:
    node = GossipNode("s", "s:7946", "south", random.Random(1), region_config=LAN, fleet_config=WAN)
    # Ten published summaries of our region, each naming three members we never heard of.
    summaries = [
        codec.Summary("south", v, f"a{v}", 3, tuple((f"x{v}{k}", f"x{v}{k}:7946") for k in "abc"), ())
        for v in range(1, 11)
    ]
    node.merge_summaries(codec.POOL_REGION, 0.0, summaries)
    node.handle_timer(0.0)
    first = set(_join_targets(node))
    assert len(first) == REGION_MERGE_SEEDS_MAX
    t = 0.0
    later: set[str] = set()
    while t < REGION_MERGE_INTERVAL_S - 0.01:
        t = min(node.next_deadline() or t + 0.5, REGION_MERGE_INTERVAL_S - 0.01)
        node.handle_timer(t)
        later.update(_join_targets(node))
    assert later <= first, "new merge targets before the interval ran out"
    node.handle_timer(REGION_MERGE_INTERVAL_S)
    second = set(_join_targets(node)) - first
    assert len(second) == REGION_MERGE_SEEDS_MAX
    assert node.counters["region_merge_joins"] == 2


def test_a_node_of_another_region_named_as_ours_is_never_taken_into_the_region_pool() -> None:
    link = Link(seed=4, config=LAN)
    n0, n1 = (link.add(f"n{i}", "north", fleet_config=WAN) for i in range(2))
    n1.join(link.now, [n0.addr])
    link._flush(n1)
    s0 = link.add("s0", "south", fleet_config=WAN)
    link.run_until(10.0)
    # A liar (a summary, or fleet-pool metadata) says north's nodes are south's gateways.
    lie = codec.Summary("south", 7, "mallory", 2, (("n0", n0.addr), ("n1", n1.addr)), ())
    s0.merge_summaries(codec.POOL_FLEET, link.now, [lie])
    s0.handle_timer(link.now)
    link._flush(s0)
    link.run_until(40.0)
    assert s0.counters["region_merge_joins"] == 1
    assert s0.counters["region.redirects_received"] >= 1  # north answered with a redirect
    assert alive_in_region(s0) == {"s0"}
    assert alive_in_region(n0) == alive_in_region(n1) == {"n0", "n1"}


def test_a_region_pool_reply_from_another_region_is_dropped() -> None:
    node = GossipNode("s0", "s0:7946", "south", random.Random(1), region_config=LAN, fleet_config=WAN)
    node.join(0.0, ["liar:7946"])
    opened = [out for out in node.poll_transmit() if isinstance(out, StreamOpen)]
    assert len(opened) == 1
    # A node that answers a south join as north, with its members, instead of redirecting.
    north = codec.encode_meta("north", "")
    reply = codec.PushPull(
        codec.POOL_REGION,
        "north",
        False,
        (
            codec.MemberEntry("liar", "liar:7946", north, 1, codec.STATE_ALIVE),
            codec.MemberEntry("n9", "n9:7946", north, 1, codec.STATE_ALIVE),
        ),
        (),
    )
    node.handle_stream_reply(0.1, opened[0].request_id, codec.encode_frame(reply))
    assert alive_in_region(node) == {"s0"}
    assert node.counters["drop_stream_wrong_region"] == 1
