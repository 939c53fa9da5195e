"""Watched connections (gossip/watch.py; docs/design.md, "Watched connections").

The bookkeeping alone, then the pool on the in-memory link: `Link.kill_process`
kills a process on a live host (its port refuses, its kernel closes what it
held), `Link.crash` loses the host (silence).
"""

from __future__ import annotations

from gossip.config import LAN
from gossip.events import MemberState
from gossip.io import Unwatch, Watch
from gossip.node import GossipNode
from gossip.watch import WATCH_COUNT_MAX, Watches
from tests.gossip.harness import Link
from tests.gossip.test_conn_checks import all_dead_at, mesh, states_of

LIVE = [("a", "h:1"), ("c", "h:3"), ("e", "h:5"), ("g", "h:7")]


def test_a_node_watches_its_ring_successors_wrapping_around() -> None:
    w = Watches(pool=0, count=2, retry_s=5.0)
    out = w.plan(0.0, "f", LIVE)
    assert [o.dst for o in out if isinstance(o, Watch)] == ["h:7", "h:1"]  # g, then a (wrapped)
    assert w.watched() == ["a", "g"]
    assert w.plan(1.0, "f", LIVE) == []  # nothing changed: nothing to do
    ids = {o.watch_id for o in out if isinstance(o, Watch)}
    assert all(i & 1 == 0 for i in ids)  # the pool's bit


def test_watches_follow_membership_and_addresses() -> None:
    w = Watches(pool=1, count=2, retry_s=5.0)
    first = {o.dst: o.watch_id for o in w.plan(0.0, "b", LIVE) if isinstance(o, Watch)}
    assert sorted(first) == ["h:3", "h:5"]
    # c left; e moved to a new address: both watches close, e and g are watched.
    out = w.plan(1.0, "b", [("a", "h:1"), ("e", "h:9"), ("g", "h:7")])
    assert sorted(o.watch_id for o in out if isinstance(o, Unwatch)) == sorted(first.values())
    assert sorted(o.dst for o in out if isinstance(o, Watch)) == ["h:7", "h:9"]
    assert all(o.watch_id & 1 == 1 for o in out if isinstance(o, Watch))


def test_an_end_is_evidence_only_when_the_peer_closed_and_is_retried_later() -> None:
    w = Watches(pool=0, count=1, retry_s=5.0)
    (opened,) = w.plan(0.0, "a", LIVE)
    assert isinstance(opened, Watch)
    assert w.ended(1.0, opened.watch_id, peer_closed=False) is None
    assert w.counters["watches_failed"] == 1
    assert w.plan(2.0, "a", LIVE) == []  # within retry_s: not again yet
    (again,) = w.plan(6.0, "a", LIVE)
    assert isinstance(again, Watch) and again.dst == "h:3"
    assert w.ended(7.0, again.watch_id, peer_closed=True) == ("c", "h:3")
    assert w.ended(7.0, again.watch_id, peer_closed=True) is None  # a repeat is unknown: counted
    assert w.counters["drop_watch_unknown"] == 1


def test_the_count_is_bounded_and_zero_turns_watches_off() -> None:
    many = [(f"m{i:02d}", f"h:{i}") for i in range(20)]
    assert len(Watches(pool=0, count=99, retry_s=1.0).plan(0.0, "a", many)) == WATCH_COUNT_MAX
    off = Watches(pool=0, count=0, retry_s=1.0)
    assert not off.enabled and off.plan(0.0, "a", many) == []
    assert Watches(pool=0, count=3, retry_s=1.0).plan(0.0, "a", []) == []


def first_suspected_at(link: Link, victim: GossipNode, since_s: float) -> float:
    return min(t for t, _, s in states_of(link, victim, since_s) if s == MemberState.SUSPECT)


def test_a_killed_process_is_probed_at_once_by_its_watchers_and_dead_everywhere_soon() -> None:
    worst_s = 0.0
    for seed in range(1, 11):
        link, nodes = mesh(seed=seed)
        victim = nodes[3]
        watchers = [n for n in nodes if victim.addr in _watched(link, n)]
        assert len(watchers) == LAN.watch_count  # every member is watched by watch_count others
        t0 = link.now
        link.kill_process(victim)
        link.run_until(t0 + 20.0)
        # The watchers' probes start one trip after the kill; the probe (0.5 s) ends unanswered
        # with refusals from the prober and its helpers, and the 1 s floor runs from there.
        assert first_suspected_at(link, victim, t0) <= t0 + LAN.probe_interval_s + 0.05
        assert sum(n.counters.get("region.urgent_probes", 0) for n in watchers) >= 1
        assert sum(n.counters.get("region.watches_closed_by_peer", 0) for n in watchers) == len(watchers)
        worst_s = max(worst_s, all_dead_at(link, victim, t0) - t0)
    assert worst_s <= LAN.probe_interval_s + LAN.refused_dead_after_s + 0.5, worst_s


def _watched(link: Link, node: GossipNode) -> list[str]:
    return [dst for (addr, _, _), dst in link.watches.items() if addr == node.addr]


def test_a_lost_host_closes_nothing_so_no_probe_is_urgent() -> None:
    link, nodes = mesh()
    victim = nodes[3]
    t0 = link.now
    link.crash(victim)
    link.run_until(t0 + 30.0)
    assert sum(n.counters.get("region.urgent_probes", 0) for n in nodes) == 0
    assert all_dead_at(link, victim, t0) - t0 >= 5.0  # today's path: the Lifeguard timeout


def test_a_closed_watch_of_a_live_member_costs_one_probe_and_no_suspicion() -> None:
    # The peer closed it (say, it restarted its listener) but it answers pings: nothing happens.
    link, nodes = mesh()
    target = nodes[2]
    (watcher_addr, _, watch_id) = next(k for k, dst in link.watches.items() if dst == target.addr)
    watcher = link.nodes[watcher_addr]
    t0 = link.now
    watcher.handle_watch_ended(t0, watch_id, True)
    link._flush(watcher)
    link.run_until(t0 + 10.0)
    assert watcher.counters["region.urgent_probes"] == 1
    assert states_of(link, target, t0) == []
    # It is watched again after watch_retry_s.
    assert any(dst == target.addr and a == watcher_addr for (a, _, _), dst in link.watches.items())


def test_a_failed_watch_is_no_evidence_and_an_unknown_one_is_counted() -> None:
    link, _ = mesh()
    (watcher_addr, _, watch_id) = next(iter(link.watches))
    watcher = link.nodes[watcher_addr]
    watcher.handle_watch_ended(link.now, watch_id, False)
    watcher.handle_watch_ended(link.now, 987654, True)
    link._flush(watcher)
    assert watcher.counters.get("region.urgent_probes", 0) == 0
    assert watcher.counters["region.watches_failed"] == 1
    assert watcher.counters["region.drop_watch_unknown"] == 1


def test_a_watch_that_ends_while_its_members_probe_is_under_way_adds_none_and_is_counted() -> None:
    link, nodes = mesh()
    target = nodes[2]
    (watcher_addr, _, watch_id) = next(k for k, dst in link.watches.items() if dst == target.addr)
    watcher = link.nodes[watcher_addr]
    pool = watcher.gossip.region_pool
    t = link.now
    while not (pool._probe is not None and pool._probe.target_id == target.node_id):
        t += 0.01
        link.run_until(t)
        assert t < 120.0, "the watcher never probed its target"
    watcher.handle_watch_ended(link.now, watch_id, True)
    link._flush(watcher)
    assert watcher.counters.get("region.urgent_probes", 0) == 0
    assert watcher.counters["region.urgent_probe_under_way"] == 1
