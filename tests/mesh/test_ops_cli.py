"""`murmur status`, `node`, `describe deployment`, `scale` and `plan` against a real Agent's API
(an election and a placement core, no leader), including what a user gets wrong."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from inference.manifest import Deployment, Replicas, parse_manifest
from mesh.cli.client import CliError
from mesh.cli.fleet import format_status, replicas_text
from mesh.cli.murmur import main
from mesh.cli.scale import scaled
from mesh.service.agent import Agent
from tests.mesh.test_deploy_api import MANIFEST, OPERATOR, Client, deploy_doc, signed
from tests.mesh.test_ops_api import OTHER, with_nodes
from tests.mesh.test_ops_api import api as api  # the fixture
from tests.mesh.test_regions_api import NODE_ID


def _key(tmp_path: Path) -> str:
    key = tmp_path / "operator.key"
    key.write_text(bytes(OPERATOR).hex() + "\n")
    key.chmod(0o600)
    return str(key)


async def _murmur(client: Client, *argv: str) -> int:
    return await asyncio.to_thread(main, [*argv, "--node", f"127.0.0.1:{client.port}"])


async def _deployed(client: Client) -> None:
    status, body = await signed(client, "POST", "/v1/deployments", deploy_doc())
    assert status == 202, body


async def test_status_prints_regions_totals_and_deployments(
    api: tuple[Agent, Client], capsys: pytest.CaptureFixture[str]
) -> None:
    _, client = api
    await _deployed(client)
    assert await _murmur(client, "status") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["REGION", "LEADER", "TERM", "ALIVE", "SUSPECT", "DEAD", "READY/DESIRED"]
    assert lines[1].split() == ["north", "(none)", "0", "1", "0", "0", "0/2"]
    assert lines[2].split() == ["total", "1", "0", "0", "0/2"]
    assert "1 region(s); asked aaaaaaaaaaaaaaaa in region north" in out
    assert "vibration   0      2" in out
    assert await _murmur(client, "status", "--json") == 0
    assert json.loads(capsys.readouterr().out)["totals"]["desired"] == 2


def test_status_marks_a_region_that_did_not_answer() -> None:
    doc = {
        "node": "n",
        "region": "north",
        "regions": [
            {
                "region": "north",
                "node": "n",
                "leader": "n",
                "term": 3,
                "nodes": {"alive": 2},
                "ready": 1,
                "desired": 2,
            },
            {
                "region": "south",
                "node": None,
                "leader": None,
                "term": None,
                "nodes": {"alive": 3},
                "error": "x",
            },
        ],
        "totals": {"regions": 2, "regions_unanswered": 1, "nodes": {"alive": 5}, "ready": 1, "desired": 2},
    }
    text = format_status(doc)
    assert "south   (unreachable)  -     3      ?" in text
    assert "2 region(s), 1 did not answer" in text


async def test_node_takes_a_unique_prefix_and_refuses_an_unknown_one(
    api: tuple[Agent, Client], capsys: pytest.CaptureFixture[str]
) -> None:
    _, client = api
    assert await _murmur(client, "node", "aaaa") == 0
    out = capsys.readouterr().out
    assert f"node:          {NODE_ID}" in out and "scheduling:    schedulable" in out
    assert "alive (as node aaaaaaaaaaaaaaaa sees it" in out and "no replica is placed on this node" in out
    assert await _murmur(client, "node", "AAAAAAAAAAAAAAAA", "--json") == 0  # ids read case-blind
    assert json.loads(capsys.readouterr().out)["id"] == NODE_ID
    assert await _murmur(client, "node", "ffff") == 1
    err = capsys.readouterr().err
    assert "murmur node: error: no node whose id starts with 'ffff' in the regions" in err
    assert "murmur nodes" in err


async def test_describe_shows_manifest_placement_unplaced_and_events(
    api: tuple[Agent, Client], capsys: pytest.CaptureFixture[str]
) -> None:
    _, client = api
    await _deployed(client)
    assert await _murmur(client, "describe", "deployment", "vibration") == 0
    out = capsys.readouterr().out
    assert "name:          vibration" in out and "replicas:      2 per region" in out
    assert "model:         vib-cnn:2" in out and "artifact:      sha256 " + "cd" * 32 + ", 4KiB" in out
    assert "north   0      2        no placement applied yet" in out
    assert "unplaced:\n  north/replica 0: " in out and "north/replica 1: " in out
    assert "command_accepted" in out and "deploy desired/deployment/vibration" in out
    assert await _murmur(client, "describe", "deployment", "vibration", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["deployment"]["name"] == "vibration" and doc["regions"][0]["desired"] == 2
    assert [e["kind"] for e in doc["events"]] == ["command_accepted"]


async def test_describe_an_unknown_deployment_fails_clearly(
    api: tuple[Agent, Client], capsys: pytest.CaptureFixture[str]
) -> None:
    _, client = api
    assert await _murmur(client, "describe", "deployment", "nope") == 1
    err = capsys.readouterr().err
    assert "no deployment named 'nope'" in err and "murmur get deployments" in err
    with pytest.raises(SystemExit) as exc:
        main(["describe", "pod", "x"])
    assert exc.value.code == 2


async def test_scale_signs_a_new_manifest_with_the_new_count(
    api: tuple[Agent, Client], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, client = api
    await _deployed(client)
    key = _key(tmp_path)
    assert await _murmur(client, "scale", "vibration", "3", "--key", key) == 0
    out = capsys.readouterr().out
    assert "deployment vibration: scaled from 2 per region to 3 per region; accepted and persisted" in out
    doc = await (await client.get("/v1/deployments/vibration")).json()
    assert doc["manifest"]["replicas"] == 3 and doc["version"] > 100
    assert await _murmur(client, "scale", "vibration", "3", "--key", key, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["unchanged"] is True and result["version"] == doc["version"]  # nothing sent


async def test_scale_refuses_what_it_cannot_do(
    api: tuple[Agent, Client], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, client = api
    key = _key(tmp_path)
    assert await _murmur(client, "scale", "nope", "2", "--key", key) == 1
    err = capsys.readouterr().err
    assert "no deployment named 'nope'" in err and "nothing to scale" in err
    await _deployed(client)
    assert await _murmur(client, "scale", "vibration", "2", "--region", "north", "--key", key) == 1
    assert "--region cannot change one region alone" in capsys.readouterr().err
    for bad in ("-1", "two", "10001"):
        with pytest.raises(SystemExit) as exc:
            main(["scale", "vibration", bad])
        assert exc.value.code == 2
        assert "N is a number of replicas, 0 to 10000" in capsys.readouterr().err


def _dep(replicas: Replicas) -> Deployment:
    base = parse_manifest(MANIFEST)
    return Deployment(**{**{f: getattr(base, f) for f in base.__slots__}, "replicas": replicas})  # type: ignore[arg-type]


def test_scaled_changes_the_count_the_manifest_form_says() -> None:
    per = _dep(Replicas(per_region=2))
    assert scaled(per, 5, None).replicas == Replicas(per_region=5)
    selector = _dep(Replicas(per_region=2, regions=("store-*",)))
    assert scaled(selector, 0, None).replicas == Replicas(per_region=0, regions=("store-*",))
    one = _dep(Replicas(by_region=(("north", 2),)))
    assert scaled(one, 4, None).replicas == Replicas(by_region=(("north", 4),))
    two = _dep(Replicas(by_region=(("north", 2), ("south", 1))))
    assert scaled(two, 3, "south").replicas == Replicas(by_region=(("north", 2), ("south", 3)))
    assert scaled(two, 1, "east").replicas.by_region == (("east", 1), ("north", 2), ("south", 1))
    with pytest.raises(CliError, match="say which to change with --region R"):
        scaled(two, 3, None)
    with pytest.raises(CliError, match="--region cannot change one region alone"):
        scaled(selector, 3, "north")
    assert replicas_text(two.replicas.to_doc()) == "north=2, south=1"
    assert replicas_text(selector.replicas.to_doc()) == "2 per region in store-*"


async def test_plan_exits_0_when_it_fits_and_1_when_not(
    api: tuple[Agent, Client],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    agent, client = api
    manifest = tmp_path / "vibration.yaml"
    manifest.write_text(MANIFEST)
    with_nodes(agent, monkeypatch, 2)
    assert await _murmur(client, "plan", str(manifest)) == 0
    out = capsys.readouterr().out
    assert "plan of deployment vibration" in out and "nothing changes" in out
    assert "region north: 2 of 2 replica(s) placed" in out and f"added on {OTHER}" in out
    assert out.rstrip().endswith("every replica would be placed")
    with_nodes(agent, monkeypatch, 1)
    assert await _murmur(client, "plan", str(manifest)) == 1
    out = capsys.readouterr().out
    assert "region north: 1 of 2 replica(s) placed" in out
    assert "cannot place vibration/1: " in out and out.rstrip().endswith("1 replica(s) would be unplaced")
    assert await _murmur(client, "plan", str(manifest), "--json") == 1
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert doc["fits"] is False
    assert (await (await client.get("/v1/deployments")).json()) == []  # a plan deploys nothing


async def test_plan_of_a_bad_manifest_fails_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(MANIFEST.replace("replicas: 2", "replicas: two"))
    assert main(["plan", str(manifest), "--node", "http://127.0.0.1:9"]) == 1
    assert "bad.yaml: replicas: must be an integer" in capsys.readouterr().err
    assert main(["plan", str(tmp_path / "missing.yaml"), "--node", "http://127.0.0.1:9"]) == 1
    assert "missing.yaml" in capsys.readouterr().err


async def test_describe_reads_events_of_any_shape_without_a_traceback() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from mesh.cli.client import NodeClient
    from mesh.cli.fleet import deployment_events

    placed = {"region": "r1", "term": 2, "epoch": 7, "deployments": "a,v"}
    other = {"region": "r1", "term": 2, "epoch": 8, "deployments": "vv,other"}

    async def events(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "events": [
                    {
                        "seq": "x",
                        "unix_ms": "late",
                        "node": "n",
                        "kind": "replica_ready",
                        "details": {"deployment": "v"},
                    },
                    {"seq": 2, "unix_ms": 5, "node": "n", "subject": "desired/deployment/v"},
                    {"seq": 3, "unix_ms": 6, "node": "n", "details": {"deployment": "other"}},
                    # one placement, applied by two nodes: shown once; another that moved only "other"
                    {"seq": 4, "unix_ms": 7, "node": "n", "kind": "placement_changed", "details": placed},
                    {"seq": 9, "unix_ms": 8, "node": "m", "kind": "placement_changed", "details": placed},
                    {"seq": 5, "unix_ms": 9, "node": "n", "kind": "placement_changed", "details": other},
                    {"seq": 6, "unix_ms": 9, "node": "n", "kind": "placement_changed", "details": "v"},
                    "not an event",
                ]
            }
        )

    app = web.Application()
    app.router.add_get("/v1/events", events)
    async with TestServer(app, host="127.0.0.1") as server:
        got, silent = await asyncio.to_thread(
            deployment_events, NodeClient(f"127.0.0.1:{server.port}"), "v", {}
        )
    assert [e["seq"] for e in got] == ["x", 2, 4] and silent == []
