"""Keep-alive HTTP/1.1 connections to peers' APIs, for relaying inference requests.

A node without a ready replica forwards the request, body unchanged, to a peer that has
one (mesh/service/v2api.py `_send`). The hop is on every such request's path, so it is
kept short: a few idle connections per peer are kept open and reused, and the request
and answer are written and read directly on the connection, without a general HTTP
client's per-request machinery (cookies, redirects, tracing, content decoding): on
loopback that takes a round trip from ~0.20 to ~0.08 ms (docs/benchmarks.md, "The
forwarding hop"). The peer is another murmur agent's aiohttp server.

What may come back is bounded: a head of at most `HEAD_MAX_BYTES`, a body of at most
`body_max_bytes` (by Content-Length or chunked). Anything else (a refused or reset
connection, a malformed or oversized answer, no answer within the timeout) raises
`RelayError` and the connection is dropped, never reused. An idle connection the peer
closed meanwhile is noticed when nothing at all comes back on it, and the request is sent
again once on a new connection: inference requests have no side effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass

HEAD_MAX_BYTES = 16 * 1024  # status line and headers of one answer
IDLE_PER_PEER = 8  # idle connections kept per peer; more are closed after their answer
_CHUNK_LINE_MAX_BYTES = 1024


class RelayError(Exception):
    """No usable answer from the peer; the message says why."""


class _Stale(Exception):
    """A reused connection gave nothing back: the peer had closed it while it was idle."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A peer's answer: status, headers (names lower-case) and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(eq=False, slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


class PeerRelay:
    """Connections to peers by "host:port", reused while they stay healthy."""

    def __init__(self, body_max_bytes: int, idle_per_peer: int = IDLE_PER_PEER) -> None:
        self._body_max_bytes = body_max_bytes
        self._idle_per_peer = idle_per_peer
        self._idle: dict[str, list[_Conn]] = {}
        self._closed = False

    def idle(self, addr: str) -> int:
        """Idle connections kept to `addr` now."""
        return len(self._idle.get(addr, ()))

    async def request(
        self,
        addr: str,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_s: float,
    ) -> Answer:
        """Send one request to the peer at `addr` ("host:port") and read its whole answer."""
        if self._closed:
            raise RelayError("the relay is closed")
        head = _request_head(method, target, addr, headers, len(body))
        try:
            async with asyncio.timeout(timeout_s):
                pooled = self._take(addr)
                if pooled is not None:
                    try:
                        return await self._exchange(addr, pooled, head, body, reused=True)
                    except _Stale:
                        pass
                return await self._exchange(addr, await _connect(addr), head, body, reused=False)
        except TimeoutError:
            raise RelayError(f"no answer within {timeout_s:g} s") from None

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _take(self, addr: str) -> _Conn | None:
        conns = self._idle.get(addr)
        while conns:
            conn = conns.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        return None

    def _keep(self, addr: str, conn: _Conn) -> None:
        conns = self._idle.setdefault(addr, [])
        if self._closed or len(conns) >= self._idle_per_peer:
            conn.close()
        else:
            conns.append(conn)

    async def _exchange(self, addr: str, conn: _Conn, head: bytes, body: bytes, *, reused: bool) -> Answer:
        """One request and answer on `conn`: kept for reuse only if all went well."""
        kept = False
        try:
            conn.writer.writelines((head, body))
            await conn.writer.drain()
            try:
                status_line = await conn.reader.readuntil(b"\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if reused and not getattr(exc, "partial", b""):
                    raise _Stale from None
                raise RelayError(f"the connection closed before an answer: {exc}") from None
            answer, keep_alive = await self._read_answer(conn.reader, status_line)
            if keep_alive:
                self._keep(addr, conn)
                kept = True
            return answer
        except asyncio.IncompleteReadError:
            raise RelayError("a malformed answer: it ended early") from None
        except asyncio.LimitOverrunError:
            raise RelayError(f"a malformed answer: a line over {HEAD_MAX_BYTES} bytes") from None
        except ConnectionError as exc:
            if reused:
                raise _Stale from None
            raise RelayError(f"the connection failed: {exc}") from None
        finally:
            if not kept:
                conn.close()

    async def _read_answer(self, reader: asyncio.StreamReader, status_line: bytes) -> tuple[Answer, bool]:
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
            raise RelayError(f"a malformed status line {status_line[:40]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        size = len(status_line)
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            size += len(line)
            if size > HEAD_MAX_BYTES:
                raise RelayError(f"an answer head over {HEAD_MAX_BYTES} bytes")
            name, sep, value = line[:-2].partition(b":")
            if not sep or not name or name != name.strip():
                raise RelayError(f"a malformed header line {line[:40]!r}")
            headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit() or int(length) > self._body_max_bytes:
                raise RelayError(f"an answer of {length[:20]!r} bytes (at most {self._body_max_bytes})")
            body = await reader.readexactly(int(length))
        else:
            raise RelayError("an answer with neither Content-Length nor chunked encoding")
        keep_alive = parts[0] == b"HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return Answer(status, headers, body), keep_alive

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            if len(line) > _CHUNK_LINE_MAX_BYTES:
                raise RelayError("a chunk size line over 1 KiB")
            try:
                count = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise RelayError(f"a malformed chunk size {line[:20]!r}") from None
            if count == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                    pass
                return b"".join(chunks)
            size += count
            if size > self._body_max_bytes:
                raise RelayError(f"a chunked answer over {self._body_max_bytes} bytes")
            chunks.append(await reader.readexactly(count))
            if await reader.readexactly(2) != b"\r\n":
                raise RelayError("a chunk not followed by CRLF")


def _request_head(method: str, target: str, addr: str, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {addr}", f"Content-Length: {length}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if any("\r" in line or "\n" in line for line in lines):
        raise RelayError("a request line or header with a line break")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _connect(addr: str) -> _Conn:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise RelayError(f"not a host:port address: {addr[:64]!r}")
    try:
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port), limit=HEAD_MAX_BYTES)
    except OSError as exc:
        raise RelayError(f"cannot connect: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):  # small requests go out at once
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _Conn(reader, writer)
