"""What each simulated node sees: the members of its pools and the records it holds.

Two sources, kept in this one module so the metrics, the invariant checkers and
the admission watch read the same thing:
- `Views`: each node's pool views rebuilt from its own MemberChanged and
  GatewayChanged events (a warm start's restored view is installed too, since
  restoring emits no events). Cheap enough to read at every convergence poll.
- `members`, `held_version`, `fleet_digest`: what a live core itself answers,
  read at the end of a run (the events_match_view invariant compares the two).
`first_unseen` finds a node that does not see another, in either source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from gossip.events import Event, GatewayChanged, MemberChanged, MemberState
from gossip.node import MemberView
from gossip.state import Digest
from node.core import Node
from sim.observer import Observer
from sim.slot import NodeSlot


class Views(Observer):
    """Every node's view of its region pool and fleet pool, by node index, from its events."""

    def __init__(self) -> None:
        # Each node's view of the others (itself left out): node id -> state.
        self.region: list[dict[str, MemberState]] = []
        self.fleet: list[dict[str, MemberState]] = []
        self.gateway: list[bool] = []
        # Bumped on any view or gateway change (convergence checks cache on it), and the
        # times of the last changes towards convergence in each pool.
        self.changes = 0
        self.last_region_alive_s = 0.0
        self.last_fleet_change_s = 0.0

    def pool(self, pool: str) -> list[dict[str, MemberState]]:
        """The views of one pool ("region" or "fleet"), by node index."""
        return self.region if pool == "region" else self.fleet

    def on_spawn(self, idx: int, node_id: str, region: int, views: Sequence[MemberView]) -> None:
        self.region.append({v.node_id: v.state for v in views if v.node_id != node_id})
        self.fleet.append({})
        self.gateway.append(False)
        self.changes += 1

    def on_down(self, now: float, idx: int) -> None:
        self.region[idx] = {}
        self.fleet[idx] = {}
        self.gateway[idx] = False
        self.changes += 1

    def on_restart(self, now: float, slot: NodeSlot) -> None:
        self.region[slot.idx] = {}
        self.fleet[slot.idx] = {}
        self.changes += 1

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        if type(event) is MemberChanged:
            if event.node_id == slot.node_id:
                return
            self.pool(event.pool)[slot.idx][event.node_id] = event.state
            self.changes += 1
            if event.state == MemberState.ALIVE:
                if event.pool == "region":
                    self.last_region_alive_s = now
                else:
                    self.last_fleet_change_s = now
        elif type(event) is GatewayChanged:
            idx = slot.idx
            self.gateway[idx] = event.is_gateway
            self.fleet[idx] = {}
            self.changes += 1
            self.last_fleet_change_s = now


def members(core: Node, pool: str) -> dict[str, MemberState]:
    """What a live core lists in a pool ("region" or "fleet"), itself included: node id -> state."""
    return {m.node_id: m.state for m in core.members(pool)}


def held_version(core: Node, kind: str, key: str) -> int | None:
    """The version of record (kind, key) a live core holds (None: none)."""
    held = core.state.get(kind, key)
    return None if held is None else held.version


def fleet_digest(core: Node) -> Digest:
    """A live core's fleet-only state digest (author -> highest version, fingerprint), as gateways compare."""
    return core.state.digest(fleet_only=True)


def first_unseen(
    group: Sequence[int],
    slots: Sequence[NodeSlot],
    view_of: Callable[[int], Mapping[str, MemberState]],
    ok: tuple[MemberState, ...],
) -> tuple[int, int, MemberState | None] | None:
    """The first (observer, subject, state) among `group` (node indexes, in order) where the
    observer's view does not hold the subject in one of the `ok` states; None when all see all."""
    ids = [slots[i].node_id for i in group]
    for obs in group:
        view = view_of(obs)
        # Runs over every pair at every convergence poll: one lookup per pair, and the
        # observer itself (never in its own view) is only told apart on a miss.
        for k, node_id in enumerate(ids):
            state = view.get(node_id)
            if state not in ok and group[k] != obs:
                return obs, group[k], state
    return None
