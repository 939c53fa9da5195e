"""Where an inference request is served: here, at the best ready replica elsewhere, or nowhere.

The rules (docs/inference.md, "Routing"), in order:

1. A request that already crossed a hop (it carries the forwarding header) is served
   here or refused: it is never forwarded again, so no request can loop.
2. A node that holds a ready replica serves the request itself: no hop is cheaper.
3. Otherwise the best ready replica on another node, not tried yet for this request:
   same region first (cross-site links are slow and break), then the fewest requests
   this node has in flight to that node (its queue as seen from here), then the lowest
   round-trip time this node measured to it (unknown counts as slowest), then node id,
   so that every node breaks ties the same way.
4. No such replica: refuse with 503 and why.

A failed forward is retried once on another replica (`ATTEMPTS_MAX`): the caller adds
the failed node to `tried` and asks again. `PeerLoad` is the bounded table of in-flight
counts and round-trip times the driver feeds from its own forwards. Pure and sans-IO.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from inference.assignments import ReplicaState

ATTEMPTS_MAX = 2  # the first forward and one retry on another replica
RTT_WEIGHT_NEW = 0.2  # each measurement's share in the moving average of a peer's round trip
PEERS_MAX = 4096  # peers whose load is remembered; the region's size bounds it in practice


@dataclass(frozen=True, slots=True)
class Candidate:
    """A replica of the requested model and what the router knows about its node."""

    node_id: str
    region: str
    state: ReplicaState
    api_addr: str  # "" when the node publishes none: it cannot be forwarded to
    in_flight: int = 0
    rtt_s: float | None = None


@dataclass(frozen=True, slots=True)
class ServeHere:
    """Run the request on this node's replica."""


@dataclass(frozen=True, slots=True)
class Forward:
    """Forward the request to `node_id`'s API at `api_addr`."""

    node_id: str
    api_addr: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """No replica can take the request: answer `status` with `reason`."""

    status: int
    reason: str


Route = ServeHere | Forward | Refuse


def choose(
    model: str,
    *,
    node_id: str,
    region: str,
    candidates: Sequence[Candidate],
    tried: Iterable[str] = (),
    forwarded: bool = False,
) -> Route:
    """Where to serve one request for `model` on node `node_id` of `region` (the rules above)."""
    tried_ids = frozenset(tried)
    here = any(c.node_id == node_id and c.state is ReplicaState.READY for c in candidates)
    if here and node_id not in tried_ids:
        return ServeHere()
    if forwarded:
        return Refuse(
            503,
            f"model {model!r}: no ready replica on node {node_id}, and a forwarded request is never "
            "forwarded again; the sending node retries another replica",
        )
    usable = [
        c
        for c in candidates
        if c.state is ReplicaState.READY
        and c.api_addr
        and c.node_id != node_id
        and c.node_id not in tried_ids
    ]
    if not usable:
        reason = (
            "no other ready replica is left to try" if tried_ids else "no ready replica in this node's view"
        )
        return Refuse(503, f"model {model!r}: {reason}; retry in a few seconds, or check `murmur status`")
    best = min(usable, key=lambda c: _rank(c, region))
    return Forward(best.node_id, best.api_addr)


def _rank(c: Candidate, region: str) -> tuple[bool, int, float, str]:
    rtt_s = math.inf if c.rtt_s is None or not math.isfinite(c.rtt_s) else c.rtt_s
    return (c.region != region, c.in_flight, rtt_s, c.node_id)


@dataclass(frozen=True, slots=True)
class Load:
    """Requests in flight from this node to a peer, and the moving average of their round trips."""

    in_flight: int = 0
    rtt_s: float | None = None


class PeerLoad:
    """In-flight counts and round-trip times of this node's forwards, per peer (bounded)."""

    def __init__(self, peers_max: int = PEERS_MAX) -> None:
        self._peers_max = peers_max
        self._loads: dict[str, Load] = {}

    def of(self, node_id: str) -> Load:
        """What this node knows of `node_id` (nothing yet: no load, unknown round trip)."""
        return self._loads.get(node_id, Load())

    def started(self, node_id: str) -> None:
        """A forward to `node_id` left this node."""
        load = self.of(node_id)
        self._put(node_id, Load(load.in_flight + 1, load.rtt_s))

    def finished(self, node_id: str, rtt_s: float | None) -> None:
        """A forward to `node_id` ended: answered after `rtt_s`, or failed (None: the round trip
        says nothing about the peer's speed, so the average is kept)."""
        load = self.of(node_id)
        average = load.rtt_s
        if rtt_s is not None and math.isfinite(rtt_s) and rtt_s >= 0:
            average = rtt_s if average is None else (1 - RTT_WEIGHT_NEW) * average + RTT_WEIGHT_NEW * rtt_s
        self._put(node_id, Load(max(0, load.in_flight - 1), average))

    def _put(self, node_id: str, load: Load) -> None:
        self._loads.pop(node_id, None)
        if len(self._loads) >= self._peers_max:
            # The least recently used peer is forgotten; a peer with forwards in flight is
            # recent by construction, so only idle history is lost.
            del self._loads[next(iter(self._loads))]
        self._loads[node_id] = load
