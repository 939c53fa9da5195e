"""A real `murmur agent` serves the /v2 inference API on its API port, behind the optional
inference token (`--inference-token-file`). No model runtime is wired in yet, so the model
calls answer the protocol's JSON errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from tests.real.conftest import MeshFactory

pytestmark = pytest.mark.real


def _call(
    agent: LocalAgent, path: str, body: bytes | None = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{agent.url}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_an_agent_answers_v2_behind_its_inference_token(
    local_mesh: MeshFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = local_mesh("local")
    token_file = tmp_path / "inference.token"
    token_file.write_text("t0ken\n")
    plain = mesh.command
    monkeypatch.setattr(mesh, "command", lambda a: [*plain(a), "--inference-token-file", str(token_file)])
    agent = mesh.add("a0", "r1")
    mesh.start(agent)
    assert wait_until(lambda: LocalMesh.get(agent, "/v2/health/live") == {"live": True}, 15.0), (
        agent.log_tail()
    )
    assert _call(agent, "/v2")[0] == 401
    status, doc = _call(agent, "/v2", token="t0ken")
    assert status == 200 and doc["name"] == "murmuration"
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).encode()
    status, doc = _call(agent, "/v2/models/vibration/infer", body, token="t0ken")
    assert status == 404 and "model 'vibration' is not deployed" in doc["error"]
