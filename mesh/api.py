"""The node's HTTP API (aiohttp): membership reads, health, and this milestone's debug hooks.

Handlers ask the node service (mesh.agent.Agent) and never reach into a core.
A read about another region is forwarded to one of the API addresses that
region publishes in its summary; the forwarded request carries a header so it
is answered where it lands and never forwarded again.

Debug hooks (only with `murmur agent --debug-hooks`): `POST /v1/debug/broadcast`
sends a fleet-wide broadcast and `GET /v1/debug/broadcasts` lists the ones this
node received. They exist so tests can watch a broadcast cross regions; the next
milestone replaces them with operator-signed desired-state records.
"""

from __future__ import annotations

import base64
import json
import logging
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

REQUEST_BODY_MAX_BYTES = 64 * 1024
FORWARD_TIMEOUT_S = 2.0
FORWARDED_HEADER = "X-Murmur-Forwarded"
POOLS = ("region", "fleet")


class MemberLike(Protocol):
    """One member in this node's view (gossip.node.MemberView)."""

    @property
    def node_id(self) -> str: ...
    @property
    def addr(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def incarnation(self) -> int: ...
    @property
    def gateway(self) -> bool: ...
    @property
    def api_addr(self) -> str: ...


class SummaryLike(Protocol):
    """A region's summary (gossip.node.RegionSummary)."""

    @property
    def region(self) -> str: ...
    @property
    def alive(self) -> int: ...
    @property
    def api_addrs(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class ReceivedBroadcast:
    """A fleet-wide broadcast this node received (debug hook)."""

    origin_id: str
    seq: int
    payload: bytes
    received_unix: float


class NodeService(Protocol):
    """What the API asks of the node."""

    @property
    def node_id(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def debug_hooks(self) -> bool: ...
    def members(self, pool: str) -> Sequence[MemberLike]: ...
    def summaries(self) -> Mapping[str, SummaryLike]: ...
    def health(self) -> dict[str, Any]: ...
    def broadcast(self, payload: bytes) -> tuple[str, int]: ...
    def received_broadcasts(self) -> Sequence[ReceivedBroadcast]: ...


SERVICE = web.AppKey("service", NodeService)
CLIENT = web.AppKey("client", aiohttp.ClientSession)


def member_json(member: MemberLike) -> dict[str, Any]:
    """The public JSON shape of one member (`murmur nodes --json` prints a list of these)."""
    return {
        "id": member.node_id,
        "addr": member.addr,
        "region": member.region,
        "state": str(member.state),
        "incarnation": member.incarnation,
        "gateway": member.gateway,
        "api": member.api_addr,
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def get_nodes(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    region = request.query.get("region", service.region)
    pool = request.query.get("pool", "region")
    if pool not in POOLS:
        return _error(400, f"unknown pool {pool!r}; use pool=region or pool=fleet")
    if region == service.region or pool == "fleet":
        return web.json_response([member_json(m) for m in service.members(pool)])
    if request.headers.get(FORWARDED_HEADER):
        # Forwarded here by a stale summary: answer, but never forward twice.
        return _error(421, f"node {service.node_id} is in region {service.region!r}, not {region!r}")
    summaries = service.summaries()
    summary = summaries.get(region)
    if summary is None:
        known = ", ".join(sorted(summaries)) or "none yet"
        return _error(404, f"unknown region {region!r}; regions this node knows: {known}")
    return await _forward(request.app[CLIENT], region, summary.api_addrs)


async def _forward(client: aiohttp.ClientSession, region: str, api_addrs: Sequence[str]) -> web.Response:
    if not api_addrs:
        return _error(502, f"region {region!r} publishes no API address yet; retry in a few seconds")
    order = list(api_addrs)
    random.shuffle(order)  # spread reads over the region's published nodes
    failures: list[str] = []
    for api in order:
        url = f"http://{api}/v1/nodes"
        try:
            async with client.get(url, params={"region": region}, headers={FORWARDED_HEADER: "1"}) as resp:
                if resp.status != 200:
                    failures.append(f"{api}: HTTP {resp.status}")
                    continue
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, ValueError) as exc:
            failures.append(f"{api}: {type(exc).__name__}")
            continue
        if isinstance(body, list):
            return web.json_response(body)
        failures.append(f"{api}: not a member list")
    log.info("region %s: no API address answered (%s)", region, "; ".join(failures))
    return _error(
        502,
        f"region {region!r}: none of its API addresses answered ({'; '.join(failures)}); "
        "its nodes may be down or unreachable from here",
    )


async def get_health(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].health())


async def post_debug_broadcast(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        doc = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, 'body must be JSON: {"payload": "text"}')
    payload = doc.get("payload") if isinstance(doc, dict) else None
    if not isinstance(payload, str):
        return _error(400, 'body must be JSON: {"payload": "text"}')
    try:
        origin_id, seq = service.broadcast(payload.encode("utf-8"))
    except ValueError as exc:
        return _error(413, f"broadcast refused: {exc}")
    return web.json_response({"origin_id": origin_id, "seq": seq}, status=202)


async def get_debug_broadcasts(request: web.Request) -> web.Response:
    received = request.app[SERVICE].received_broadcasts()
    return web.json_response(
        [
            {
                "origin_id": item.origin_id,
                "seq": item.seq,
                "payload": item.payload.decode("utf-8", errors="replace"),
                "payload_b64": base64.b64encode(item.payload).decode("ascii"),
                "received_unix": item.received_unix,
            }
            for item in received
        ]
    )


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        app[CLIENT] = client
        yield


def create_app(service: NodeService) -> web.Application:
    """The API application for `service`; embed it with AppRunner and TCPSite."""
    app = web.Application(client_max_size=REQUEST_BODY_MAX_BYTES)
    app[SERVICE] = service
    app.cleanup_ctx.append(_client_ctx)
    app.router.add_get("/v1/nodes", get_nodes)
    app.router.add_get("/v1/health", get_health)
    if service.debug_hooks:
        app.router.add_post("/v1/debug/broadcast", post_debug_broadcast)
        app.router.add_get("/v1/debug/broadcasts", get_debug_broadcasts)
    return app
