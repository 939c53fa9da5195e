"""The regions API: who leads each region (GET /v1/regions) and the operator's reset of its voters.

This node answers for its own region from its election core. Another region's
leader is known only there: the read is forwarded to one of the API addresses
that region publishes in its summary (as `GET /v1/nodes?region=` is), all
regions at once, within the forward budget. A region that does not answer is
listed with what its summary says (members alive) and the reason. A forwarded
request (FORWARDED_HEADER) is answered with this node's region alone.

`POST /v1/regions/{region}/reset-voters` takes an operator-signed `voters-reset`
record (gossip/votersreset.py): checked, persisted, published; every node of
that region then re-seeds its voters from the members the record names.
docs/api.md describes both.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web

from gossip.kinds import FLEET_SCOPE, VOTERS_RESET_KIND
from gossip.records import Record
from gossip.votersreset import decode_reset
from gossip.wire import DecodeError
from mesh.service.api import (
    CLIENT,
    FORWARD_BUDGET_S,
    FORWARD_TIMEOUT_S,
    FORWARDED_HEADER,
    SERVICE,
    _accepted,
    _json_object,
    _read_signed,
    _record_of,
    _refusals,
)


def reset_problem(record: Record, *, region: str, signer: str) -> str | None:
    """Why a reset-voters request's record is not acceptable for `region`, or None."""
    if record.kind != VOTERS_RESET_KIND:
        return f"expected a {VOTERS_RESET_KIND} record, got {record.kind!r}"
    if record.scope != FLEET_SCOPE:
        return f"a {VOTERS_RESET_KIND} record has scope {FLEET_SCOPE}, not {record.scope!r}"
    if record.author != signer:
        return f"the record's author {record.author} is not the request's signer {signer}"
    if record.key != region:
        return f"the record resets region {record.key!r}, but the request is for {region!r}"
    if record.deleted:
        return "a reset cannot be deleted; sign a new one with a higher generation"
    try:
        reset = decode_reset(record.payload)
    except DecodeError as exc:
        return f"the record's payload is not a voters reset ({exc.reason})"
    if reset.region != region:
        return f"the payload resets region {reset.region!r}, not {region!r}"
    return None


def _unanswered(region: str, alive: int, why: str) -> dict[str, Any]:
    return {
        "region": region,
        "leader": None,
        "era": None,
        "term": None,
        "voters": [],
        "alive": alive,
        "error": why,
    }


async def _ask_region(
    client: aiohttp.ClientSession, region: str, api_addrs: Sequence[str], deadline_s: float
) -> dict[str, Any] | str:
    """The row one of `api_addrs` answers for its region, or why none did."""
    if not api_addrs:
        return "the region publishes no API address yet"
    order = list(api_addrs)
    random.shuffle(order)  # spread reads over the region's published nodes
    loop = asyncio.get_running_loop()
    failures: list[str] = []
    for api in order:
        left_s = deadline_s - loop.time()
        if left_s <= 0:
            failures.append(f"{api}: not tried (out of time)")
            continue
        try:
            async with client.get(
                f"http://{api}/v1/regions",
                headers={FORWARDED_HEADER: "1"},
                timeout=aiohttp.ClientTimeout(total=min(FORWARD_TIMEOUT_S, left_s)),
            ) as resp:
                if resp.status != 200:
                    failures.append(f"{api}: HTTP {resp.status}")
                    continue
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, ValueError) as exc:
            failures.append(f"{api}: {type(exc).__name__}")
            continue
        row = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else None
        if row is not None and row.get("region") == region:
            return row
        failures.append(f"{api}: not a row of region {region!r} (a stale summary)")
    return "no API address answered (" + "; ".join(failures) + ")"


async def get_regions(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    own = service.own_region()
    if request.headers.get(FORWARDED_HEADER) or request.query.get("local"):
        return web.json_response([own])
    others = [(name, s) for name, s in sorted(service.summaries().items()) if name != service.region]
    deadline_s = asyncio.get_running_loop().time() + FORWARD_BUDGET_S
    answers = await asyncio.gather(
        *(_ask_region(request.app[CLIENT], name, s.api_addrs, deadline_s) for name, s in others)
    )
    rows = [own]
    for (name, summary), answer in zip(others, answers, strict=True):
        rows.append(answer if isinstance(answer, dict) else _unanswered(name, summary.alive, answer))
    return web.json_response(rows)


@_refusals
async def post_reset_voters(request: web.Request) -> web.Response:
    body, signer = await _read_signed(request)
    service = request.app[SERVICE]
    record = _record_of(_json_object(body, '{"record": "<base64 signed voters-reset record>"}'))
    problem = reset_problem(record, region=request.match_info["region"], signer=signer)
    return _accepted(service, record, problem)


def add_routes(app: web.Application) -> None:
    """Add the regions endpoints to the API application."""
    app.router.add_get("/v1/regions", _refusals(get_regions))
    app.router.add_post("/v1/regions/{region}/reset-voters", post_reset_voters)
