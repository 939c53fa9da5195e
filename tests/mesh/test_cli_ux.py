"""What a new user runs into with `murmur`: --json on every command that changes something,
--version, `get deployments NAME`, `get revocations`, "unchanged" re-deploys, readable versions,
warnings about what no live node offers, the exit status of a --wait that timed out, and
`operator keygen`. Each runs the real CLI (`main`) against a real agent's API."""

from __future__ import annotations

import argparse
import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gossip.records import key_id
from gossip.trust import StaticTrust
from mesh.cli import deploywait
from mesh.cli.client import EXIT_TIMED_OUT, EXIT_UNREACHABLE, CliError, NodeClient, version_text, version_time
from mesh.cli.deploy import held_deployment
from mesh.cli.deploywait import RegionView
from mesh.cli.murmur import build_parser, main, package_version
from mesh.service.agent import Agent, AgentOptions
from mesh.service.store import Store
from mesh.trust.cluster import init_cluster
from mesh.trust.identity import Identity
from mesh.trust.opsign import load_signing_key
from tests.inference.test_inventory import BASE
from tests.mesh.localnode import local_node
from tests.mesh.test_deploy_api import MANIFEST, OPERATOR, Client, SyncRuntime, served
from tests.mesh.test_inventory import NODE_ID, NODE_KEY


def make_agent(data_dir: Path) -> Agent:
    """An agent that trusts the test operator and its own node key, so it can hold its inventory."""
    data_dir.mkdir(exist_ok=True)
    identity = Identity(NODE_ID, NODE_KEY)
    trust = StaticTrust(operators=[bytes(OPERATOR.verify_key)], nodes=[identity.public_key])
    node = local_node(NODE_ID, trust)
    store = Store.open(data_dir, NODE_ID)
    runtime = SyncRuntime()
    runtime.node = node
    options = AgentOptions(data_dir=data_dir, token=data_dir / "t", region="north", bind="x", api="y")
    return Agent(options, identity, store, node, runtime, trust)  # type: ignore[arg-type]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Agent, Client]]:
    async for served_api in served(make_agent(tmp_path / "node")):
        yield served_api


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "operator.key"
    path.write_text(bytes(OPERATOR).hex() + "\n")
    path.chmod(0o600)
    return path


async def murmur(client: Client, tmp_path: Path, *argv: str) -> int:
    """Run `murmur ARGV --node <the test agent> --key <the operator key>` off the event loop."""
    flags = ["--node", f"127.0.0.1:{client.port}", "--key", str(key_file(tmp_path))]
    return await asyncio.to_thread(main, [*argv, *flags])


def write_manifest(tmp_path: Path, text: str = MANIFEST, name: str = "m.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- version, help ----------------------------------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"murmur {package_version()}"
    assert package_version()[0].isdigit()


def _subparsers(parser: argparse.ArgumentParser, path: str = "murmur") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{path} {name}", sub))
                found += _subparsers(sub, f"{path} {name}")
    return found


def test_every_command_has_a_description_and_an_example() -> None:
    commands = _subparsers(build_parser())
    assert {name for name, _ in commands} >= {
        "murmur agent",
        "murmur deploy",
        "murmur get",
        "murmur delete",
        "murmur revoke",
        "murmur invite",
        "murmur operator",
        "murmur keys",
        "murmur nodes",
        "murmur demo",
        "murmur sim",
        "murmur cluster",
        "murmur cluster init",
    }
    for name, parser in commands:
        text = parser.format_help()
        assert parser.description, f"{name} has no description"
        assert "examples:\n  murmur " in text, f"{name} --help shows no example"
        for action in parser._actions:
            if action.option_strings and action.help is None:
                pytest.fail(f"{name} {action.option_strings[0]} has no help")


def test_the_test_only_debug_hooks_flag_is_hidden_but_works() -> None:
    parser = build_parser()
    agent = dict(_subparsers(parser))["murmur agent"]
    text = agent.format_help()
    assert "--debug-hooks" not in text
    assert "--log-level" in text and "how much the agent logs" in text
    argv = ["agent", "--data-dir", "d", "--token", "t", "--region", "r", "--bind", "127.0.0.1:1"]
    args = parser.parse_args([*argv, "--api", "127.0.0.1:2", "--debug-hooks"])
    assert args.debug_hooks is True


def test_the_main_help_documents_every_exit_status() -> None:
    text = build_parser().format_help()
    lines = [line.split(maxsplit=1) for line in text.split("exit status:\n")[1].split("\n\n")[0].splitlines()]
    meanings = {int(code): meaning for code, meaning in lines}
    assert meanings[0] == "done" and meanings[1].startswith("refused or failed")
    assert meanings[2].startswith("usage") and meanings[EXIT_UNREACHABLE].startswith("deploy --wait: every")
    assert meanings[EXIT_TIMED_OUT].startswith("deploy --wait: timed out") and 130 in meanings
    assert len({0, 1, 2, EXIT_UNREACHABLE, EXIT_TIMED_OUT}) == 5


def test_versions_read_as_utc_times() -> None:
    assert version_time(1777629600123) == "2026-05-01T10:00:00.123Z"
    assert version_text(1777629600123) == "1777629600123 (2026-05-01T10:00:00.123Z)"
    assert version_time(100) == version_text(100) == "100"  # not a time: the number


# --- deploy: --json, unchanged, warnings, timeout ------------------------------------------------


async def test_deploy_json_then_an_unchanged_manifest_sends_nothing(
    api: tuple[Agent, Client], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, client = api
    path = write_manifest(tmp_path)
    assert await murmur(client, tmp_path, "deploy", path, "--json") == 0
    out, err = capsys.readouterr()
    first = json.loads(out)  # stdout is one JSON object; the human line went to stderr
    assert first["name"] == "vibration" and first["unchanged"] is False and first["new"] is True
    assert isinstance(first["version"], int) and first["warnings"] == []
    assert f"version {version_text(first['version'])}" in err
    held = agent.node.state.get("desired", "deployment/vibration")
    assert held is not None and held.version == first["version"]

    assert await murmur(client, tmp_path, "deploy", path) == 0
    out = capsys.readouterr().out
    assert out.startswith("deployment vibration: unchanged")
    assert f"version {version_text(first['version'])}" in out and "nothing sent" in out
    assert await murmur(client, tmp_path, "deploy", path, "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["unchanged"] is True and again["version"] == first["version"]
    held = agent.node.state.get("desired", "deployment/vibration")
    assert held is not None and held.version == first["version"]  # no new version anywhere

    changed = write_manifest(tmp_path, MANIFEST.replace("replicas: 2", "replicas: 3"), "m2.yaml")
    assert await murmur(client, tmp_path, "deploy", changed, "--json") == 0
    third = json.loads(capsys.readouterr().out)
    assert third["unchanged"] is False and third["version"] > first["version"]


async def test_deploy_warns_about_a_region_and_an_accelerator_no_live_node_has(
    api: tuple[Agent, Client], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, client = api
    assert agent.publish_inventory(BASE)  # this node (region north) offers the CPU provider only
    text = MANIFEST.replace(
        "replicas: 2", "replicas: {north: 1, store-17: 2}\nrequirements: {accelerator: cuda}"
    )
    assert await murmur(client, tmp_path, "deploy", write_manifest(tmp_path, text), "--json") == 0
    out, err = capsys.readouterr()
    warnings = json.loads(out)["warnings"]
    assert len(warnings) == 2
    assert warnings[0].startswith("replicas.store-17: no live node is in region 'store-17'")
    assert warnings[1].startswith("requirements.accelerator: no live node of region 'north' offers 'cuda'")
    assert err.count("murmur deploy: warning: ") == 2  # on stderr, named
    held = agent.node.state.get("desired", "deployment/vibration")
    assert held is not None  # accepted all the same


async def test_delete_json(
    api: tuple[Agent, Client], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _agent, client = api
    assert await murmur(client, tmp_path, "deploy", write_manifest(tmp_path)) == 0
    capsys.readouterr()
    assert await murmur(client, tmp_path, "delete", "vibration", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "vibration" and doc["new"] is True and isinstance(doc["version"], int)


async def test_a_wait_that_times_out_has_its_own_exit_status(
    api: tuple[Agent, Client],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _agent, client = api
    never = RegionView("north", reachable=True, apis={"n1": "127.0.0.1:9"})
    monkeypatch.setattr(deploywait, "region_views", lambda base: [never])
    monkeypatch.setattr(deploywait, "_holds", lambda api, name, version: False)
    code = await murmur(client, tmp_path, "deploy", write_manifest(tmp_path), "--wait", "--timeout", "0")
    assert code == EXIT_TIMED_OUT == 4
    assert "murmur deploy: error: timed out: deployment vibration" in capsys.readouterr().err
    # A refusal is still 1: a manifest the parser refuses never reaches the node.
    bad = write_manifest(tmp_path, MANIFEST.replace("replicas: 2", "replicas: two"), "bad.yaml")
    assert await murmur(client, tmp_path, "deploy", bad, "--wait") == 1


# --- get deployments NAME, get revocations, revoke --json ----------------------------------------


async def test_get_one_deployment_by_name(
    api: tuple[Agent, Client], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _agent, client = api
    assert await murmur(client, tmp_path, "deploy", write_manifest(tmp_path), "--json") == 0
    version = json.loads(capsys.readouterr().out)["version"]
    assert await murmur(client, tmp_path, "get", "deployments", "vibration") == 0
    out = capsys.readouterr().out
    assert "name:          vibration" in out and "model:         vib-cnn:2" in out
    assert f"version:       {version_text(version)}" in out
    assert await murmur(client, tmp_path, "get", "deployments", "vibration", "--json") == 0
    assert json.loads(capsys.readouterr().out)["version"] == version
    assert await murmur(client, tmp_path, "get", "deployments") == 0
    assert version_time(version) in capsys.readouterr().out  # the table shows the time too
    assert await murmur(client, tmp_path, "get", "deployments", "nothing") == 1
    err = capsys.readouterr().err
    assert "no deployment named 'nothing'" in err and "murmur get deployments" in err


async def test_revoke_json_and_get_revocations(
    api: tuple[Agent, Client], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _agent, client = api
    assert await murmur(client, tmp_path, "get", "revocations") == 0
    assert capsys.readouterr().out.strip() == "no node is revoked"
    gone = "3333333333333333"
    argv = ("revoke", gone, "--force", "--no-rotate", "--reason", "stolen", "--json")
    assert await murmur(client, tmp_path, *argv) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["node_id"] == gone and doc["new"] is True and doc["rotated"] is None
    assert "revocation accepted and persisted" in err
    assert await murmur(client, tmp_path, "get", "revocations") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["NODE", "REVOKED", "(UTC)", "AUTHOR", "REASON"]
    assert gone in out and "stolen" in out and version_time(doc["version"]) in out
    assert await murmur(client, tmp_path, "get", "revocations", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {
            "node_id": gone,
            "version": doc["version"],
            "author": key_id(bytes(OPERATOR.verify_key)),
            "reason": "stolen",
        }
    ]


# --- invite --json, operator keygen --------------------------------------------------------------


def test_invite_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = init_cluster(tmp_path / "c")
    out = tmp_path / "store-17.token"
    argv = ["invite", "--cluster", str(cluster.path), "--region", "store-17", "--uses", "2"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cluster_id"] == cluster.cluster_id and doc["region"] == "store-17" and doc["uses"] == 2
    assert doc["out"] == str(out) and "token" not in doc and out.exists()
    assert doc["expires_at"].endswith("Z") and isinstance(doc["expires_at_unix"], int)
    assert main([*argv, "--json"]) == 0  # no --out: the token is in the object
    assert json.loads(capsys.readouterr().out)["token"]["cluster_id"] == cluster.cluster_id


def test_operator_keygen_makes_a_private_key_file_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alice.key"
    assert main(["operator", "keygen", str(path)]) == 0
    out = capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    public_id = key_id(bytes(load_signing_key(path).verify_key))
    assert f"key id {public_id}" in out and "operator add" in out
    assert main(["operator", "key", "--key", str(path)]) == 0  # the docs' next step works
    assert f"(key id {public_id})" in capsys.readouterr().out
    before = path.read_bytes()
    assert main(["operator", "keygen", str(path)]) == 1
    assert "exists; refusing to overwrite" in capsys.readouterr().err
    assert path.read_bytes() == before


async def test_a_held_deployment_the_cli_cannot_read_is_not_unchanged() -> None:
    """Whatever a node answers for the held deployment, the CLI never crashes: it deploys anew."""
    answers: list[Any] = [
        {"version": 5, "manifest": None, "error": "the stored payload is not a valid manifest"},
        {"version": 5, "manifest": {"name": ["x"] * 3}},
        {"version": "5", "manifest": {}},
        [1, 2, 3],
        {"version": 5, "manifest": _nested(50)},
    ]
    for answer in answers:
        app = web.Application()
        app.router.add_get("/v1/deployments/{name}", _answering(answer))
        async with TestServer(app, host="127.0.0.1") as server:
            node = NodeClient(f"127.0.0.1:{server.port}")
            assert await asyncio.to_thread(held_deployment, node, "vibration") is None
    # Nesting deeper than the JSON decoder goes is an answer "without JSON", not a traceback.
    deep = web.Application()
    text = '{"version": 5, "manifest": ' + '{"a": ' * 100_000 + "{}" + "}" * 100_000 + "}"
    deep.router.add_get("/v1/deployments/{name}", _raw(text))
    async with TestServer(deep, host="127.0.0.1") as server:
        node = NodeClient(f"127.0.0.1:{server.port}")
        with pytest.raises(CliError, match="without JSON"):
            await asyncio.to_thread(held_deployment, node, "vibration")


def _raw(text: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/json")

    return handler


def _nested(depth: int) -> Any:
    doc: Any = {}
    for _ in range(depth):
        doc = {"a": doc}
    return doc


def _answering(doc: Any) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(doc)

    return handler
