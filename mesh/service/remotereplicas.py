"""Other regions' ready replicas of a model, for a request this node's region cannot serve.

The router (inference/routing.py) prefers this node's region. Only when the region has no
ready replica left to try (none placed, all lost, a model deployed elsewhere only) does the
node look further: it reads every other region's placement, as `murmur placements
--region R` does (GET /v1/placements at one of the API addresses the region's summary
publishes, marked forwarded), and offers that region's ready replicas as candidates,
ranked after any of its own. Answers are kept REMOTE_TTL_S, so a stream of requests costs
one read per region per TTL; concurrent requests share one read; a region that does not
answer counts as having no replica until the TTL has passed. docs/inference.md, "Routing".
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from inference.assignments import ReplicaState
from inference.routing import Candidate, PeerLoad
from mesh.service.placementapi import ask_placement

REMOTE_TTL_S = 5.0  # how long another region's placement is used before it is read again
REMOTE_ROWS_MAX = 4096  # replicas kept of one region's answer

_API_ADDR = re.compile(r"[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}|\[[0-9A-Fa-f:.]{2,45}\]:[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class RemoteReplica:
    """A ready replica in another region, as that region's placement lists it."""

    deployment: str
    node_id: str
    api_addr: str


@dataclass(frozen=True, slots=True)
class _Held:
    read_s: float
    replicas: tuple[RemoteReplica, ...]


def ready_replicas(doc: Any, region: str) -> tuple[RemoteReplica, ...]:
    """The ready replicas with an API address in a placement answer of `region`; an answer of
    any other shape, or for another region, gives none (never an exception)."""
    if not isinstance(doc, dict) or doc.get("region") != region or not isinstance(doc.get("replicas"), list):
        return ()
    out: list[RemoteReplica] = []
    for row in doc["replicas"][:REMOTE_ROWS_MAX]:
        if not isinstance(row, dict) or row.get("state") != str(ReplicaState.READY):
            continue
        deployment, node, api = row.get("deployment"), row.get("node"), row.get("api")
        if (
            isinstance(deployment, str)
            and isinstance(node, str)
            and isinstance(api, str)
            and _API_ADDR.fullmatch(api)
        ):
            out.append(RemoteReplica(deployment, node, api))
    return tuple(out)


class RemoteReplicas:
    """What this node knows of other regions' ready replicas, read on demand and kept a while."""

    def __init__(
        self,
        other_regions: Callable[[], Mapping[str, tuple[str, ...]]],
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = REMOTE_TTL_S,
    ) -> None:
        self._other_regions = other_regions  # region -> the API addresses its summary publishes
        self._clock = clock
        self._ttl_s = ttl_s
        self._held: dict[str, _Held] = {}
        self._reading: dict[str, asyncio.Task[None]] = {}
        self.reads = 0  # placements read from other regions (each region, each time)

    async def candidates(self, model: str, client: aiohttp.ClientSession, load: PeerLoad) -> list[Candidate]:
        """Other regions' ready replicas of `model`, freshly enough read, with this node's load
        figures for each; [] when no other region has one (or none answered)."""
        regions = dict(self._other_regions())
        for gone in set(self._held) - set(regions):
            del self._held[gone]
        await asyncio.gather(*(self._fresh(r, addrs, client) for r, addrs in sorted(regions.items())))
        out: list[Candidate] = []
        for region in sorted(regions):
            held = self._held.get(region)
            for replica in held.replicas if held is not None else ():
                if replica.deployment == model:
                    peer = load.of(replica.node_id)
                    out.append(
                        Candidate(
                            replica.node_id,
                            region,
                            ReplicaState.READY,
                            replica.api_addr,
                            peer.in_flight,
                            peer.rtt_s,
                        )
                    )
        return out

    async def _fresh(self, region: str, api_addrs: tuple[str, ...], client: aiohttp.ClientSession) -> None:
        held = self._held.get(region)
        if held is not None and self._clock() - held.read_s < self._ttl_s:
            return
        task = self._reading.get(region)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(region, api_addrs, client))
            self._reading[region] = task
            task.add_done_callback(lambda _task: self._reading.pop(region, None))
        # shield: a request whose client went away must not cancel the read others wait for
        await asyncio.shield(task)

    async def _read(self, region: str, api_addrs: tuple[str, ...], client: aiohttp.ClientSession) -> None:
        self.reads += 1
        replicas: tuple[RemoteReplica, ...] = ()
        if api_addrs:
            doc, _why = await ask_placement(client, region, api_addrs)
            replicas = ready_replicas(doc, region)
        self._held[region] = _Held(self._clock(), replicas)
