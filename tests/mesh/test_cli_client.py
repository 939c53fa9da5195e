"""The CLI's one client and one error: every command reports a node's failures the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mesh.cli.client import CliError, NodeClient
from mesh.cli.murmur import main
from mesh.trust.cluster import init_cluster

UNREACHABLE = "http://127.0.0.1:1"


@pytest.mark.parametrize(
    "argv",
    [
        ["nodes"],
        ["nodes", "--region", "south"],
        ["get", "deployments"],
        ["deploy", "{manifest}"],
        ["deploy", "{manifest_with_file}"],
        ["delete", "a"],
        ["revoke", "0123456789abcdef"],
        ["operator", "list"],
        ["operator", "remove", "0123456789abcdef"],
    ],
)
def test_every_command_reports_an_unreachable_node_the_same_way(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = init_cluster(tmp_path / "c")
    monkeypatch.setenv("MURMUR_CLUSTER", str(cluster.path))
    monkeypatch.delenv("MURMUR_KEY", raising=False)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f'name: a\nmodel: {{name: m, version: v}}\nartifact: {{sha256: "{"0" * 64}", size_bytes: 1}}\n'
        "replicas: 1\n"
    )
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with_file = tmp_path / "m2.yaml"
    with_file.write_text("name: a\nmodel: {name: m, version: v}\nartifact: {file: model.onnx}\nreplicas: 1\n")
    argv = [a.format(manifest=manifest, manifest_with_file=with_file) for a in argv]

    assert main(["--node", UNREACHABLE, *argv]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"murmur {argv[0]}: error: cannot reach a murmur node at {UNREACHABLE}/")
    assert "start an agent, or point --node (or MURMUR_NODE) at a running one" in captured.err
    assert "Traceback" not in captured.err


async def _text(request: web.Request) -> web.Response:
    return web.Response(text="not json")


async def _refused(request: web.Request) -> web.Response:
    return web.json_response({"error": "stale version"}, status=409)


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"fine": True})


async def test_status_and_answers_that_are_not_json_read_the_same_everywhere() -> None:
    app = web.Application()
    app.router.add_get("/text", _text)
    app.router.add_get("/refused", _refused)
    app.router.add_get("/ok", _ok)
    async with TestServer(app, host="127.0.0.1") as server:
        node = NodeClient(f"127.0.0.1:{server.port}/")
        assert node.base == f"http://127.0.0.1:{server.port}"

        def check() -> None:
            assert node.get("/ok") == {"fine": True}
            assert node.exchange("GET", "/refused") == (409, {"error": "stale version"})
            with pytest.raises(CliError, match=r"/refused: HTTP 409: stale version$"):
                node.get("/refused")
            with pytest.raises(CliError, match=r"/missing: HTTP 404: Not Found$"):
                node.get("/missing")
            with pytest.raises(CliError, match=r"/text answered HTTP 200 without JSON"):
                node.get("/text")
            assert node.status("HEAD", "/missing") == 404

        await asyncio.to_thread(check)
