"""PUT/GET /v1/artifacts/{sha256} against a real Agent: signed over the hash, streamed, verified."""

from __future__ import annotations

import hashlib
import time

from mesh.trust.opsign import sign_request
from tests.mesh.test_deploy_api import OPERATOR, STRANGER, Client
from tests.mesh.test_deploy_api import api as api  # the fixture

DATA = b"\x08onnx" * 50_000
SHA = hashlib.sha256(DATA).hexdigest()
PATH = f"/v1/artifacts/{SHA}"


def headers(sha: str = SHA, key: object = OPERATOR, path: str = PATH) -> dict[str, str]:
    return sign_request(key, "PUT", path, b"", time.time(), body_sha256=bytes.fromhex(sha))  # type: ignore[arg-type]


async def test_upload_then_download_then_upload_again(api: tuple[object, Client]) -> None:
    _agent, client = api
    assert (await client.head(PATH)).status == 404
    resp = await client.put(PATH, data=DATA, headers=headers())
    assert resp.status == 201, await resp.text()
    assert await resp.json() == {"sha256": SHA, "size_bytes": len(DATA), "new": True}
    got = await client.get(PATH)
    assert got.status == 200 and await got.read() == DATA
    again = await client.put(PATH, data=DATA, headers=headers())
    assert again.status == 200 and (await again.json())["new"] is False


async def test_bytes_that_do_not_hash_to_the_path_are_not_kept(api: tuple[object, Client]) -> None:
    _agent, client = api
    resp = await client.put(PATH, data=DATA[:-1] + b"!", headers=headers())
    assert resp.status == 400 and "hash to" in (await resp.json())["error"]
    assert (await client.head(PATH)).status == 404


async def test_unsigned_foreign_or_mismatched_signatures_are_refused_before_reading(
    api: tuple[object, Client],
) -> None:
    _agent, client = api
    assert (await client.put(PATH, data=DATA)).status == 401
    assert (await client.put(PATH, data=DATA, headers=headers(key=STRANGER))).status == 401
    other = hashlib.sha256(b"something else").hexdigest()
    assert (await client.put(PATH, data=DATA, headers=headers(sha=other))).status == 401
    bad = "/v1/artifacts/not-a-hash"
    resp = await client.put(bad, data=DATA, headers=headers(path=bad))
    assert resp.status == 400 and "not a sha256" in (await resp.json())["error"]
    assert (await client.get(bad)).status == 400
