"""The dashboard in headless Chromium against a fake node API of 1,000 nodes in two regions, with
node ids, labels, region and deployment names that are markup: the page shows all of them as text
(no element made from them, no script run), starts the large regions collapsed, updates a node's
death in place (no row remade, no element added on a poll), shows the event stream, and sends
nothing but GETs. Skips without Chromium (tests/chromium.py). tests/real/test_dashboard_real.py
runs the page against a real mesh."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mesh.service.dashboard import add_routes
from tests.chromium import Chromium, chromium_or_skip

NODES_PER_REGION = 500
HOSTILE_NODE = '<img src=x onerror="window.__pwned=1">'
HOSTILE_LABEL = "<b>bold</b>"
HOSTILE_REGION = "<svg onload=window.__pwned=2>"
HOSTILE_DEPLOYMENT = "<i>evil</i>"
HOSTILE_REASON = "<script>window.__pwned=3</script>"
VICTIM = "r1-node-0042"
RENDER_S = 30.0  # Chromium's start and the first poll on a loaded 2-core machine


@dataclass
class FakeFleet:
    """What the fake node answers; the test changes `dead` between polls."""

    dead: set[str] = field(default_factory=set)
    methods: list[str] = field(default_factory=list)
    closing: bool = False

    def members(self, region: str) -> list[dict[str, Any]]:
        count = NODES_PER_REGION if region != HOSTILE_REGION else 1
        rows = []
        for i in range(count):
            node_id = f"{region}-node-{i:04d}" if region != HOSTILE_REGION else f"{HOSTILE_REGION}-n"
            if region == "r0" and i == 7:
                node_id = HOSTILE_NODE
            rows.append(
                {
                    "id": node_id,
                    "addr": f"10.0.{i // 250}.{i % 250}:7946",
                    "region": region,
                    "state": "dead" if node_id in self.dead else "alive",
                    "incarnation": 1,
                    "gateway": i < 3,
                    "api": f"10.0.{i // 250}.{i % 250}:7800",
                    "inventory": {
                        "cpu_count": 4,
                        "load_1m": (i % 9) / 2,
                        "memory_available_bytes": 2 * 2**30,
                        "accelerators": ["CPUExecutionProvider"],
                        "labels": {"zone": HOSTILE_LABEL} if i == 7 else {"zone": f"z{i % 3}"},
                    },
                }
            )
        return rows


FLEET = web.AppKey("fleet", FakeFleet)


def _fleet(request: web.Request) -> FakeFleet:
    fleet = request.app[FLEET]
    fleet.methods.append(request.method)
    return fleet


async def health(request: web.Request) -> web.Response:
    _fleet(request)
    regions = {"r0": NODES_PER_REGION, "r1": NODES_PER_REGION, HOSTILE_REGION: 1}
    return web.json_response(
        {"node_id": "r0-node-0000", "region": "r0", "is_gateway": True, "regions": regions}
    )


async def regions(request: web.Request) -> web.Response:
    _fleet(request)
    rows = [
        {"region": "r0", "leader": "r0-node-0001", "term": 3, "voters": ["r0-node-0001", "r0-node-0002"]},
        {"region": "r1", "leader": VICTIM, "term": 5, "voters": [VICTIM]},
        {"region": HOSTILE_REGION, "leader": None, "term": None, "voters": [], "error": HOSTILE_REASON},
    ]
    return web.json_response(rows)


async def nodes(request: web.Request) -> web.Response:
    return web.json_response(_fleet(request).members(request.query.get("region", "r0")))


async def placements(request: web.Request) -> web.Response:
    _fleet(request)
    region = request.query.get("region", "r0")
    first, second = f"{region}-node-0010", f"{region}-node-0011"
    return web.json_response(
        {
            "region": region,
            "replicas": [
                {"deployment": HOSTILE_DEPLOYMENT, "slot": 0, "node": first, "state": "ready"},
                {"deployment": HOSTILE_DEPLOYMENT, "slot": 1, "node": second, "state": "loading"},
            ],
            "deployments": [{"deployment": HOSTILE_DEPLOYMENT, "ready": 1, "desired": 2}],
            "unplaced": [{"deployment": HOSTILE_DEPLOYMENT, "slot": 2, "reason": HOSTILE_REASON}],
        }
    )


async def deployments(request: web.Request) -> web.Response:
    _fleet(request)
    manifest = {"name": HOSTILE_DEPLOYMENT, "model": {"name": HOSTILE_LABEL, "version": "1"}}
    return web.json_response(
        [{"name": HOSTILE_DEPLOYMENT, "version": 1777629600123, "author": "op", "manifest": manifest}]
    )


def _event(seq: int, kind: str, subject: str, reason: str) -> dict[str, Any]:
    return {
        "seq": seq,
        "time": "2026-05-01T10:00:00.000Z",
        "unix_ms": 0,
        "node": "r0-node-0000",
        "kind": kind,
        "subject": subject,
        "reason": reason,
        "details": {},
    }


async def events(request: web.Request) -> web.Response:
    _fleet(request)
    return web.json_response({"last_seq": 1, "events": [_event(1, "member_joined", HOSTILE_NODE, "joined")]})


async def event_stream(request: web.Request) -> web.StreamResponse:
    fleet = _fleet(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    data = json.dumps(_event(2, "member_dead", HOSTILE_NODE, HOSTILE_REASON))
    await response.write(f"retry: 3000\n\nid: 2\ndata: {data}\n\n".encode())
    try:
        while not fleet.closing:
            await asyncio.sleep(0.2)
            await response.write(b": heartbeat\n\n")
    except (ConnectionError, RuntimeError):
        pass  # the browser went away
    return response


@pytest.fixture
async def fake_node() -> AsyncIterator[tuple[str, FakeFleet]]:
    fleet = FakeFleet()
    app = web.Application()
    app[FLEET] = fleet
    add_routes(app)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/regions", regions)
    app.router.add_get("/v1/nodes", nodes)
    app.router.add_get("/v1/placements", placements)
    app.router.add_get("/v1/deployments", deployments)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/v1/events/stream", event_stream)

    async def stop_streams(_app: web.Application) -> None:
        fleet.closing = True

    app.on_shutdown.append(stop_streams)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/")), fleet
    fleet.closing = True
    await server.close()


async def test_a_thousand_nodes_are_text_collapsed_and_updated_in_place(
    fake_node: tuple[str, FakeFleet], tmp_path: Path
) -> None:
    binary = chromium_or_skip()
    url, fleet = fake_node
    async with Chromium(binary, tmp_path / "chromium") as browser:
        await browser.goto(url)
        total = 2 * NODES_PER_REGION + 1
        assert await browser.wait_for(f"document.querySelectorAll('tr.node').length === {total}", RENDER_S), (
            f"rows: {await browser.evaluate('document.querySelectorAll(`tr.node`).length')}; "
            f"console: {browser.console}"
        )

        # Markup from the mesh is text: no element was made from it and no script ran.
        assert await browser.evaluate("window.__pwned") is None
        assert (
            await browser.evaluate("document.querySelectorAll('img, svg, script:not([src]), b, i').length")
            == 0
        )
        row_text = await browser.evaluate(
            "[...document.querySelectorAll('tr.node')].find(tr => tr.dataset.node.startsWith('<img'))"
            ".textContent"
        )
        assert "<img src=x" in row_text and HOSTILE_LABEL in row_text
        page_text = await browser.evaluate("document.body.textContent")
        assert HOSTILE_REGION in page_text and HOSTILE_DEPLOYMENT in page_text and HOSTILE_REASON in page_text

        # Grouped by region, counts in the headers, the large regions collapsed.
        heads = await browser.evaluate(
            "[...document.querySelectorAll('details.region')]"
            ".map(d => [d.dataset.region, d.open, d.querySelector('summary').textContent])"
        )
        assert [h[0] for h in heads] == ["r0", HOSTILE_REGION, "r1"]
        assert [h[1] for h in heads] == [False, True, False]
        assert f"{NODES_PER_REGION} alive" in heads[0][2] and "0 dead" in heads[0][2]
        assert "leader r1-node-0042 · term 5" in heads[2][2]
        assert "unreachable" in heads[1][2]
        assert await browser.wait_for("document.getElementById('sum-alive').textContent === '1001'", 5)
        assert "3 / 6" in await browser.evaluate("document.getElementById('deployments').textContent")

        # The event stream: the past event, then the streamed one, as text.
        assert await browser.wait_for(
            "document.querySelectorAll('#events li').length === 2 && "
            "document.getElementById('events-mode').textContent === 'live'",
            10,
        ), await browser.evaluate("document.getElementById('events').textContent")

        # A node dies: its row changes in place, no row is remade, no element is added.
        await browser.evaluate(
            "window.__added = 0;"
            "document.querySelectorAll('tr.node').forEach(tr => { tr.__mark = true; });"
            "new MutationObserver(ms => ms.forEach(m => m.addedNodes.forEach(n => {"
            " if (n.nodeType === 1) window.__added += 1; }))).observe(document.getElementById('regions'),"
            " {childList: true, subtree: true}); true"
        )
        polls = int(await browser.evaluate("document.body.dataset.polls"))
        fleet.dead.add(VICTIM)
        assert await browser.wait_for(
            f"document.querySelector('tr[data-node=\"{VICTIM}\"] .state').textContent === 'dead'", 10
        )
        assert await browser.wait_for(f"Number(document.body.dataset.polls) >= {polls + 3}", 15)
        assert await browser.evaluate("[...document.querySelectorAll('tr.node')].every(tr => tr.__mark)")
        assert await browser.evaluate("window.__added") == 0
        r1_head = await browser.evaluate(
            "document.querySelector('details[data-region=\"r1\"] summary').textContent"
        )
        assert f"{NODES_PER_REGION - 1} alive" in r1_head and "1 dead" in r1_head
        assert await browser.evaluate("document.getElementById('sum-dead').textContent") == "1"

        # The filter hides rows locally (no request).
        await browser.evaluate(
            "const f = document.getElementById('filter'); f.value = 'dead';"
            "f.dispatchEvent(new Event('input')); true"
        )
        shown = await browser.evaluate("document.querySelectorAll('tr.node:not([hidden])').length")
        assert shown == 1
        assert browser.console == [], browser.console
    assert set(fleet.methods) == {"GET"}, f"the page sent {set(fleet.methods) - {'GET'}}"
