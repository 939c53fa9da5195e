"""Node and network faults, injected at virtual times.

- crash: the node stops at once; its timers, stall backlog and open streams
  vanish, and packets still addressed to it are dropped on arrival (packets it
  had already put on the wire still arrive, as on a real network). Either its
  host is lost with it (silence: connections to it time out), or only its
  process died on a host that is still up (connections to its port are
  refused with a reset).
- restart: the same node id comes back (same address or a new one) with a
  fresh core whose incarnation starts above the last one it persisted (the
  driver persists every IncarnationChanged), and joins through seeds.
- stall: the node's processing freezes for a while (a SIGSTOP, a long GC pause,
  a starved CPU); every event for it is deferred and processed at the end of
  the stall, in order, with now = the stall's end (a starved event loop working
  off its backlog). Its host still completes TCP handshakes on its port.
- leave: a graceful leave; the node is driven for one more second so its
  notice goes out, then stopped.
- join: a brand-new node (a fresh id and address) joins cold through seeds.
- partition / heal: the network splits into groups, and later heals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sim.fleet import Fleet

# How long a leaving node keeps running so its leave notice goes out (core-api.md: ~1 s).
LEAVE_LINGER_S = 1.0


def crash_at(fleet: Fleet, at_s: float, idx: int, *, host_lost: bool = True) -> None:
    """Crash node idx at at_s: its whole host (host_lost), or only its process."""

    def run(now: float) -> None:
        if fleet.slots[idx].up:
            fleet.fault_counts["crashes"] += 1
            fleet.crash(idx, host_lost=host_lost)

    fleet.engine.call_at(at_s, run)


def restart_at(fleet: Fleet, at_s: float, idx: int, *, new_addr: bool) -> None:
    """Restart a stopped node idx at at_s, at its old address or a new one."""

    def run(now: float) -> None:
        if not fleet.slots[idx].up:
            fleet.fault_counts["restarts"] += 1
            fleet.restart(idx, new_addr=new_addr)

    fleet.engine.call_at(at_s, run)


def stall_at(fleet: Fleet, at_s: float, idx: int, duration_s: float) -> None:
    """Stall node idx from at_s for duration_s."""

    def run(now: float) -> None:
        if fleet.slots[idx].up and not fleet.slots[idx].stalled:
            fleet.fault_counts["stalls"] += 1
            fleet.stall(idx, duration_s)

    fleet.engine.call_at(at_s, run)


def leave_at(fleet: Fleet, at_s: float, idx: int) -> None:
    """Node idx leaves gracefully at at_s and stops LEAVE_LINGER_S later."""

    def run(now: float) -> None:
        if not fleet.slots[idx].up:
            return
        fleet.fault_counts["leaves"] += 1
        fleet.leave(idx)
        fleet.engine.call_at(now + LEAVE_LINGER_S, lambda t: fleet.retire(idx))

    fleet.engine.call_at(at_s, run)


def join_new_at(
    fleet: Fleet,
    at_s: float,
    region: int,
    *,
    intruder: str | None = None,
    then: Callable[[str, float], None] | None = None,
) -> None:
    """A brand-new node joins region cold at at_s, through a seed in its region and one in region 0.

    intruder: a device without a valid invite (sim.admission.INTRUDER_KINDS).
    then(node_id, now): told the new node's id once it exists.
    """

    def run(now: float) -> None:
        fleet.fault_counts["intrusions" if intruder is not None else "joins"] += 1
        slot = fleet.spawn(region, intruder=intruder)
        if then is not None:
            then(slot.node_id, now)
        seeds = fleet.seeds_for(slot.idx)
        fleet.engine.call_node_at(now, slot.idx, lambda core, t: core.join(t, seeds))

    fleet.engine.call_at(at_s, run)


def partition_at(fleet: Fleet, at_s: float, groups: Sequence[Sequence[int]], heal_at_s: float | None) -> None:
    """Split the network into groups at at_s; heal at heal_at_s (None: never)."""

    def split(now: float) -> None:
        fleet.fault_counts["partitions"] += 1
        fleet.partition(groups)

    def heal(now: float) -> None:
        fleet.heal()

    fleet.engine.call_at(at_s, split)
    if heal_at_s is not None:
        fleet.engine.call_at(heal_at_s, heal)
