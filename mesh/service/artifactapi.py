"""The API's artifact-transfer endpoints and who holds an artifact.

- `GET /v1/artifacts/{sha256}/holders`: the nodes that hold an artifact, from the inventory
  records of this node's region (each lists the artifacts its node holds); when none of
  them does (the artifact was uploaded in another region), every other region is asked at
  the API addresses its summary publishes (mesh/service/forward.py `ask_each`), all at once
  within the forward budget. A forwarded request (`X-Murmur-Forwarded`) or `?local=1` is
  answered from this region alone, so a read is never forwarded twice.
- `GET /v1/transfers`: this node's transfers from peers (mesh/service/fetcher.py).
- `POST /v1/debug/artifact-serving` (only with --debug-hooks): slow this node's serving of
  artifacts down to `rate_bytes_per_s`, so a test can kill a holder mid-transfer.

`find_holders` is what the fetcher asks: the same answer, as `Holder`s. docs/artifacts.md.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol, cast

import aiohttp
from aiohttp import web

from gossip.kinds import INVENTORY_KIND
from inference.inventory import decode, holds
from inference.transfer_plan import Holder
from mesh.service.api import (
    CLIENT,
    FORWARD_BUDGET_S,
    FORWARD_TIMEOUT_S,
    FORWARDED_HEADER,
    SERVICE,
    NodeService,
)
from mesh.service.artifacts import ArtifactError, ArtifactStore
from mesh.service.artifactserve import SERVE_DEBUG, ServeDebug
from mesh.service.fetcher import Fetcher
from mesh.service.forward import ask_each
from mesh.service.signedbody import error_response

HOLDERS_MAX = 64  # rows one region answers with (the fetcher uses a few)


class ArtifactService(NodeService, Protocol):
    """The node service with its fetcher (mesh.service.agent.Agent)."""

    @property
    def fetcher(self) -> Fetcher | None: ...


def region_holders(service: NodeService, sha256: str) -> list[dict[str, str]]:
    """Alive members of this node's region whose inventory lists `sha256`, by node id."""
    rows: list[dict[str, str]] = []
    for member in service.members("region"):
        if str(member.state) != "alive" or not member.api_addr:
            continue
        record = service.record(INVENTORY_KIND, member.node_id)
        doc = decode(record.payload) if record is not None and not record.deleted else None
        if doc is not None and holds(doc, sha256):
            rows.append({"node": member.node_id, "region": member.region, "api": member.api_addr})
    return sorted(rows, key=lambda r: r["node"])[:HOLDERS_MAX]


def _rows(body: Any) -> list[dict[str, str]] | None:
    """The holder rows of another node's answer, or None if it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("holders"), list):
        return None
    rows = []
    for row in body["holders"][:HOLDERS_MAX]:
        if isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("node", "region", "api")):
            rows.append({"node": row["node"], "region": row["region"], "api": row["api"]})
    return rows


async def fleet_holders(
    service: NodeService, client: aiohttp.ClientSession, sha256: str
) -> tuple[list[dict[str, str]], list[str]]:
    """Holders in the other regions (each asked at its published API addresses), and why a
    region gave no answer."""
    others = [(name, s) for name, s in sorted(service.summaries().items()) if name != service.region]
    deadline_s = asyncio.get_running_loop().time() + FORWARD_BUDGET_S

    async def ask(name: str, api_addrs: tuple[str, ...]) -> tuple[list[dict[str, str]] | None, list[str]]:
        if not api_addrs:
            return None, [f"{name}: publishes no API address yet"]
        return await ask_each(
            client,
            api_addrs,
            f"/v1/artifacts/{sha256}/holders",
            _rows,
            header=FORWARDED_HEADER,
            deadline_s=deadline_s,
            timeout_s=FORWARD_TIMEOUT_S,
            refused="not a holder list",
        )

    answers = await asyncio.gather(*(ask(name, s.api_addrs) for name, s in others))
    rows: list[dict[str, str]] = []
    errors: list[str] = []
    for (name, _s), (found, failures) in zip(others, answers, strict=True):
        if found is None:
            errors.append(f"region {name}: " + "; ".join(failures))
        else:
            rows.extend(found)
    return rows, errors


async def find_holders(service: NodeService, client: aiohttp.ClientSession, sha256: str) -> list[Holder]:
    """Where to fetch `sha256` from: holders in this region, else in the others (slower links)."""
    rows = [r for r in region_holders(service, sha256) if r["node"] != service.node_id]
    if not rows:
        rows, _errors = await fleet_holders(service, client, sha256)
    return sorted(Holder(r["node"], r["api"]) for r in rows if r["node"] != service.node_id)


async def get_holders(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    sha256 = request.match_info["sha256"]
    try:
        ArtifactStore.check_id(sha256)
    except ArtifactError as exc:
        return error_response(400, str(exc))
    rows = region_holders(service, sha256)
    errors: list[str] = []
    local = bool(request.headers.get(FORWARDED_HEADER) or request.query.get("local"))
    if not rows and not local:
        rows, errors = await fleet_holders(service, request.app[CLIENT], sha256)
    return web.json_response({"sha256": sha256, "holders": rows, "errors": errors})


async def get_transfers(request: web.Request) -> web.Response:
    fetcher = cast(ArtifactService, request.app[SERVICE]).fetcher
    return web.json_response(fetcher.transfers() if fetcher is not None else [])


async def post_debug_serving(request: web.Request) -> web.Response:
    try:
        doc = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    rate = doc.get("rate_bytes_per_s") if isinstance(doc, dict) else None
    if type(rate) is not int or not 0 <= rate <= 1 << 40:
        return error_response(400, 'body must be JSON: {"rate_bytes_per_s": 0 or more (0: no limit)}')
    request.app[SERVE_DEBUG].rate_bytes_per_s = rate
    return web.json_response({"rate_bytes_per_s": rate})


def add_routes(app: web.Application) -> None:
    """Add the artifact-transfer endpoints to the API application (launch.py)."""
    app[SERVE_DEBUG] = ServeDebug()
    app.router.add_get("/v1/artifacts/{sha256}/holders", get_holders)
    app.router.add_get("/v1/transfers", get_transfers)
    if app[SERVICE].debug_hooks:
        app.router.add_post("/v1/debug/artifact-serving", post_debug_serving)
