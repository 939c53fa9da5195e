"""`murmur deploy` shows the bytes of an artifact upload on a terminal, against a real Agent's
PUT /v1/artifacts: the line is redrawn as urllib reads the file, and the node keeps the bytes."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from mesh.cli.client import NodeClient
from mesh.cli.deploy import upload_artifact
from mesh.cli.progress import ERASE_LINE, Progress
from tests.mesh.test_deploy_api import OPERATOR, Client
from tests.mesh.test_deploy_api import api as api  # the fixture
from tests.mesh.test_progress import Stream


async def test_an_upload_shows_the_bytes_sent_on_a_terminal(
    api: tuple[object, Client], tmp_path: Path
) -> None:
    _agent, client = api
    data = bytes(range(256)) * 1024 * 3  # 768 KiB: urllib sends it in many blocks
    model = tmp_path / "vib.onnx"
    model.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    ticks = iter(range(10**6))
    stream = Stream(tty=True)
    progress = Progress(
        stream, lambda: float(next(ticks)), columns=200
    )  # each read a second later: every one drawn
    node = NodeClient(f"127.0.0.1:{client.port}")

    assert await asyncio.to_thread(upload_artifact, OPERATOR, node, model, sha, len(data), progress)
    shown = stream.getvalue().split(ERASE_LINE)
    assert len(shown) > 4, shown  # redrawn as it went
    assert any("upload vib.onnx [" in s and "KiB/768KiB sent" in s for s in shown[1:-2])
    assert shown[-2].startswith("upload vib.onnx [####################] 768KiB/768KiB sent")
    assert shown[-1] == ""  # taken off the terminal once sent
    resp = await client.get(f"/v1/artifacts/{sha}")
    assert resp.status == 200 and await resp.read() == data
