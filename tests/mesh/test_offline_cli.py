"""Offline sites are the normal case: `deploy --wait` reports each region and exits 3 when only
unreachable ones are left; `nodes --region` shows last-known members; `revoke` of an id no
reachable node has seen needs --force."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mesh.cli import deploywait
from mesh.cli.client import EXIT_UNREACHABLE, CliError, NodeClient
from mesh.cli.deploywait import RegionView
from mesh.cli.murmur import main
from mesh.cli.readiness import RegionRollout
from mesh.cli.trust import ever_seen
from tests.mesh.test_deploy_api import OPERATOR, Client
from tests.mesh.test_deploy_api import api as api  # the fixture

SEEN = "5555555555555555"
NORTH = RegionView("north", reachable=True, apis={"n1": "127.0.0.1:9", "n2": "127.0.0.1:9"})


def _fake_node(rows_south: list[dict[str, Any]]) -> web.Application:
    async def node(request: web.Request) -> web.Response:
        if request.match_info["node_id"] == "1111111111111111":
            return web.json_response({"id": "1111111111111111"})
        return web.json_response({"error": "not in this node's view"}, status=404)

    async def state(request: web.Request) -> web.Response:
        return web.json_response({"digest": {"2222222222222222": {"version": 1}}})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"region": "north", "regions": {"north": 1, "south": 0}})

    async def nodes(request: web.Request) -> web.Response:
        return web.json_response(rows_south if request.query.get("region") == "south" else [])

    app = web.Application()
    app.router.add_get("/v1/nodes/{node_id}", node)
    app.router.add_get("/v1/state", state)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/nodes", nodes)
    return app


def _last_known_south() -> list[dict[str, Any]]:
    heard_unix = time.time() - 60
    return [
        {"id": SEEN, "region": "south", "state": "alive", "last_known": True, "last_heard_unix": heard_unix}
    ]


async def test_ever_seen_looks_at_members_records_and_last_known_regions() -> None:
    async with TestServer(_fake_node(_last_known_south()), host="127.0.0.1") as server:
        node = NodeClient(f"127.0.0.1:{server.port}")

        def check() -> None:
            assert ever_seen(node, "1111111111111111")  # a member of the asked node's views
            assert ever_seen(node, "2222222222222222")  # the author of a record it holds
            assert ever_seen(node, SEEN)  # in an offline region's last-known list
            assert not ever_seen(node, "3333333333333333")

        await asyncio.to_thread(check)


async def test_nodes_of_an_offline_region_shows_last_known_members(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with TestServer(_fake_node(_last_known_south()), host="127.0.0.1") as server:
        code = await asyncio.to_thread(
            main, ["nodes", "--region", "south", "--node", f"127.0.0.1:{server.port}"]
        )
    assert code == 0
    out = capsys.readouterr().out
    assert "region south did not answer: its last-known members" in out and "(60 s ago)" in out
    assert "alive (last known)" in out and SEEN in out


async def test_revoking_an_id_no_node_has_seen_needs_force(
    api: tuple[Any, Client], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, client = api
    key = tmp_path / "operator.key"
    key.write_text(bytes(OPERATOR).hex() + "\n")
    key.chmod(0o600)
    url = f"127.0.0.1:{client.port}"
    unseen = "3333333333333333"
    argv = ["revoke", unseen, "--node", url, "--key", str(key)]

    assert await asyncio.to_thread(main, argv) == 1
    err = capsys.readouterr().err
    assert f"no node reachable from http://{url} has ever seen node {unseen}" in err
    assert "A revocation is permanent" in err and "run again with --force" in err
    assert not agent.node.state.is_revoked(unseen)  # nothing was sent

    assert await asyncio.to_thread(main, [*argv, "--force"]) == 0
    assert "revocation accepted and persisted" in capsys.readouterr().out
    assert agent.node.state.is_revoked(unseen)


def _wait(
    monkeypatch: pytest.MonkeyPatch, views: list[RegionView], holds: bool, timeout_s: float
) -> tuple[int | None, str]:
    monkeypatch.setattr(deploywait, "region_views", lambda base: views)
    monkeypatch.setattr(deploywait, "_holds", lambda api, name, version: holds)
    # The held phase is what these tests are about: every reachable region's replicas are ready.
    monkeypatch.setattr(deploywait, "wanted_sha256", lambda base, name: None)
    monkeypatch.setattr(deploywait, "region_rollout", lambda node, region, *_: RegionRollout(region))
    ticks = iter(range(1000))
    try:
        clock = lambda: float(next(ticks))  # noqa: E731
        return deploywait.wait_for("http://x", "a", 1, timeout_s, clock, sleep=lambda s: None), ""
    except CliError as exc:
        return None, str(exc)


def test_wait_with_one_region_offline_reports_each_region_and_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    south = RegionView("south", reachable=False, apis={}, heard_unix=time.time() - 30, members_then=2)
    code, _ = _wait(monkeypatch, [NORTH, south], holds=True, timeout_s=60.0)
    assert code == EXIT_UNREACHABLE == 3
    out = capsys.readouterr().out
    assert "held by all 2 alive nodes of every reachable region" in out
    assert "region north: held by all 2 alive nodes" in out
    assert "region south: unreachable (last heard" in out and "(30 s ago) with 2 members" in out


def test_wait_with_every_region_done_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _wait(monkeypatch, [NORTH], holds=True, timeout_s=60.0)
    assert code == 0
    assert "held by all 2 alive nodes after" in capsys.readouterr().out


def test_wait_gives_up_at_its_timeout_naming_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    south = RegionView("south", reachable=False, apis={})
    code, message = _wait(monkeypatch, [NORTH, south], holds=False, timeout_s=3.0)
    assert code is None
    assert "after 3 s" in message and "region north: held by 0 of 2 alive nodes; missing: n1, n2" in message
    assert "region south: unreachable (not heard since the asked node started)" in message
