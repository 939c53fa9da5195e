"""Serving an artifact's bytes to peers and clients: GET /v1/artifacts/{sha256}, with Range.

aiohttp's FileResponse streams from disk (sendfile where the OS has it, never the whole
file in memory) and answers HTTP range requests: `Range: bytes=a-b` gets 206 with
`Content-Range: bytes a-b/size`, a range past the end 416 with `Content-Range: bytes */size`,
no Range the whole file (200). That is what a peer's fetcher asks (mesh/service/fetcher.py).

A test hook (agent with --debug-hooks, POST /v1/debug/artifact-serving) slows serving
down to a rate, so a real-process test can kill a holder in the middle of a transfer;
the slowed path reads the file block by block with the same range rules.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiohttp import web

BLOCK_BYTES = 64 * 1024
OCTETS = "application/octet-stream"


@dataclass(slots=True)
class ServeDebug:
    """Test hook: serve artifacts at most this fast (0: as fast as the disk and network go)."""

    rate_bytes_per_s: int = 0


SERVE_DEBUG = web.AppKey("artifact_serve_debug", ServeDebug)


async def serve_artifact(request: web.Request, path: Path) -> web.StreamResponse:
    """The artifact at `path` (held, verified), whole or the range asked."""
    debug = request.app.get(SERVE_DEBUG)
    if debug is None or debug.rate_bytes_per_s <= 0:
        return web.FileResponse(path, headers={"Content-Type": OCTETS})
    return await _slowly(request, path, debug.rate_bytes_per_s)


async def _slowly(request: web.Request, path: Path, rate_bytes_per_s: int) -> web.StreamResponse:
    size = path.stat().st_size
    try:
        wanted = request.http_range
    except ValueError:
        wanted = slice(None, None)
    start, stop = wanted.start, wanted.stop
    if start is None and stop is None:
        start, stop, status = 0, size, 200
    elif start is not None and start < 0:  # a suffix: the last -start bytes
        start, stop, status = max(0, size + start), size, 206
    else:
        start, stop, status = start or 0, min(size, stop if stop is not None else size), 206
    if start >= size or start >= stop:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    headers = {"Content-Type": OCTETS, "Content-Length": str(stop - start), "Accept-Ranges": "bytes"}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    resp = web.StreamResponse(status=status, headers=headers)
    await resp.prepare(request)
    with path.open("rb") as f:
        offset = start
        while offset < stop:
            block = await asyncio.to_thread(_read, f, offset, min(BLOCK_BYTES, stop - offset))
            if not block:
                break
            await resp.write(block)
            offset += len(block)
            await asyncio.sleep(len(block) / rate_bytes_per_s)
    await resp.write_eof()
    return resp


def _read(f: BinaryIO, offset: int, length: int) -> bytes:
    return os.pread(f.fileno(), length, offset)
