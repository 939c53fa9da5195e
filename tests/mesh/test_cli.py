"""The `murmur` command line, in process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mesh.cli.murmur import build_parser, main
from mesh.cli.nodes import format_table


def test_cluster_init_then_refuse_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "init", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "join token" in out and "murmur agent" in out
    assert main(["cluster", "init", "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "murmur cluster: error:" in err and "refusing to overwrite" in err


def test_agent_with_bad_token_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "join.token"
    token.write_text("{}")
    token.chmod(0o600)
    argv = [
        "agent",
        "--data-dir",
        str(tmp_path / "n"),
        "--token",
        str(token),
        "--region",
        "r1",
        "--bind",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
    ]
    assert main(argv) == 1
    assert "is not a murmur join token" in capsys.readouterr().err


def test_agent_refuses_unspecified_bind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["cluster", "init", "--out", str(tmp_path / "c")])
    argv = [
        "agent",
        "--data-dir",
        str(tmp_path / "n"),
        "--token",
        str(tmp_path / "c" / "join.token"),
        "--region",
        "r1",
        "--bind",
        "0.0.0.0:7946",
        "--api",
        "127.0.0.1:0",
    ]
    assert main(argv) == 1
    assert "unspecified address" in capsys.readouterr().err


def test_bad_arguments_are_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            [
                "agent",
                "--data-dir",
                "d",
                "--token",
                "t",
                "--region",
                "Bad Region",
                "--bind",
                "127.0.0.1:1",
                "--api",
                "127.0.0.1:2",
            ]
        )
    assert "not a region name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            [
                "agent",
                "--data-dir",
                "d",
                "--token",
                "t",
                "--region",
                "r",
                "--bind",
                "nope",
                "--api",
                "127.0.0.1:2",
            ]
        )
    assert "HOST:PORT" in capsys.readouterr().err


def test_node_url_from_env_and_either_position(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MURMUR_NODE", "http://127.0.0.1:1234")
    assert build_parser().parse_args(["nodes"]).node == "http://127.0.0.1:1234"
    assert build_parser().parse_args(["--node", "http://x:1", "nodes"]).node == "http://x:1"
    assert build_parser().parse_args(["nodes", "--node", "http://y:2"]).node == "http://y:2"


def test_nodes_unreachable_says_how_to_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--node", "http://127.0.0.1:1", "nodes"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach a murmur node" in err and "MURMUR_NODE" in err


ROWS = [
    {
        "id": "bbbb",
        "addr": "127.0.0.1:2",
        "region": "north",
        "state": "dead",
        "incarnation": 1,
        "gateway": False,
        "api": "",
    },
    {
        "id": "aaaa",
        "addr": "127.0.0.1:1",
        "region": "north",
        "state": "alive",
        "incarnation": 2,
        "gateway": True,
        "api": "127.0.0.1:7800",
    },
]


def test_format_table() -> None:
    lines = format_table(ROWS).splitlines()
    assert lines[0].split() == ["ID", "REGION", "ADDR", "STATE", "INCARNATION", "GATEWAY", "API", "INVENTORY"]
    assert lines[1].split() == ["aaaa", "north", "127.0.0.1:1", "alive", "2", "yes", "127.0.0.1:7800", "-"]
    assert lines[2].split()[:6] == ["bbbb", "north", "127.0.0.1:2", "dead", "1", "no"]


async def test_nodes_json_and_region_query(capsys: pytest.CaptureFixture[str]) -> None:
    queries: list[str] = []

    async def nodes(request: web.Request) -> web.Response:
        queries.append(request.query_string)
        if request.query.get("region") == "west":
            return web.json_response({"error": "unknown region 'west'"}, status=404)
        return web.json_response(ROWS)

    app = web.Application()
    app.router.add_get("/v1/nodes", nodes)
    async with TestServer(app, host="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}"
        assert await asyncio.to_thread(main, ["--node", url, "nodes", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == ROWS
        assert await asyncio.to_thread(main, ["--node", url, "nodes", "--region", "south"]) == 0
        assert "aaaa" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["--node", url, "nodes", "--region", "west"]) == 1
        assert "HTTP 404: unknown region 'west'" in capsys.readouterr().err
    assert queries == ["", "region=south", "region=west"]
