"""The API's fleet keyring read: `GET /v1/keyring`, what `murmur keys list` shows.

Every key the fleet holds, by id (never a key): for each, how many alive members
hold it and at how many it seals, per region and in total, and the asked node's
own keyring (GET /v1/netkey's answer). This node counts its own region from the
members' `keyring` records it holds (mesh/service/keyringview.py); another
region's count is asked at one of the API addresses its summary publishes (as
GET /v1/regions is), all regions at once within the forward budget, never
forwarded twice. `?local=1` (or a forwarded request) answers this node's region
row alone. docs/api.md describes it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from gossip.kinds import KEYRING_KIND, NETKEY_KIND
from gossip.netkey import NETKEY_SLOT, NetKeyNotice, decode_notice
from gossip.wire import DecodeError
from mesh.service.api import (
    CLIENT,
    FORWARD_BUDGET_S,
    FORWARD_TIMEOUT_S,
    FORWARDED_HEADER,
    SERVICE,
    NodeService,
)
from mesh.service.forward import ask_each
from mesh.service.keyringview import fleet_keyring, holding_of, region_keyring, region_row_of
from mesh.service.signedbody import refusals


def own_region_row(service: NodeService) -> dict[str, Any]:
    """This node's region: its alive members and the keys their `keyring` records say they hold."""
    alive = [m.node_id for m in service.members("region") if str(m.state) == "alive"]
    return region_keyring(
        service.region, alive, lambda node_id: holding_of(service.record(KEYRING_KIND, node_id))
    )


def _notice(service: NodeService) -> NetKeyNotice | None:
    record = service.record(NETKEY_KIND, NETKEY_SLOT)
    if record is None or record.deleted:
        return None
    try:
        return decode_notice(record.payload)
    except DecodeError:
        return None


async def _ask(
    client: aiohttp.ClientSession, region: str, api_addrs: tuple[str, ...], alive: int, deadline_s: float
) -> dict[str, Any]:
    """The row one of `api_addrs` answers for `region`, or a row that says why none did."""
    if not api_addrs:
        return {"region": region, "alive": alive, "error": "the region publishes no API address yet"}
    row, failures = await ask_each(
        client,
        api_addrs,
        "/v1/keyring",
        lambda body: region_row_of(body, region),
        header=FORWARDED_HEADER,
        deadline_s=deadline_s,
        timeout_s=FORWARD_TIMEOUT_S,
        params={"local": "1"},
        refused=f"not a keyring row of region {region!r} (a stale summary)",
    )
    if row is not None:
        return row
    return {
        "region": region,
        "alive": alive,
        "error": "no API address answered (" + "; ".join(failures) + ")",
    }


@refusals
async def get_keyring(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    own = own_region_row(service)
    if request.headers.get(FORWARDED_HEADER) or request.query.get("local"):
        return web.json_response(own)
    others = [(name, s) for name, s in sorted(service.summaries().items()) if name != service.region]
    deadline_s = asyncio.get_running_loop().time() + FORWARD_BUDGET_S
    client = request.app[CLIENT]
    rows = await asyncio.gather(*(_ask(client, name, s.api_addrs, s.alive, deadline_s) for name, s in others))
    return web.json_response(fleet_keyring(service.netkey_status(), _notice(service), [own, *rows]))


def add_routes(app: web.Application) -> None:
    """Add the fleet keyring read to the API application (launch.py)."""
    app.router.add_get("/v1/keyring", get_keyring)
