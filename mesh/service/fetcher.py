"""Fetching artifacts from peers: HTTP range requests to several holders at once, resumable,
verified, bounded. The plan (which chunk from whom, what to do on a hash mismatch) is
inference/transfer_plan.py's; this module does the I/O.

A transfer writes each chunk at its offset into the store's partial file and records which
peer sent it and the chunk's sha256 in a small map beside it (`<sha256>.json`, replaced
atomically). After a dropped connection or an agent restart the map is read back, every
chunk it names is re-hashed from the partial file (a chunk the disk lost is fetched again),
and only the missing chunks are asked for. When every chunk is there, the store hashes the
whole file and commits it atomically (`ArtifactStore.commit_partial`): visible only whole
and verified.

Bounds (`FetchLimits`): transfers at once per node (the rest wait, `queued`), chunks in
flight per node (bytes in flight = chunks x chunk size), per transfer and per peer (the
plan's limits); a chunk must start within `stall_timeout_s` and keep coming (no pause
longer than that) and finish within `chunk_timeout_s`, else the peer is dropped for that
chunk and the chunk goes to another holder. docs/artifacts.md describes it for users.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from inference.transfer_plan import (
    ChunkRequest,
    Holder,
    Outcome,
    TransferLimits,
    TransferPlan,
    restored,
    snapshot,
)
from mesh.service.artifacts import ArtifactError, ArtifactStore

log = logging.getLogger("murmur.artifacts")

HoldersFn = Callable[[str], Awaitable[list[Holder]]]
FINISHED_KEPT = 16  # finished transfers GET /v1/transfers still shows
PROGRESS_MAP_MAX_BYTES = 4 * 1024 * 1024  # a map of 1 TiB in 1 MiB chunks is ~100 bytes a chunk
READ_BLOCK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """A node's bounds on fetching (docs/artifacts.md)."""

    transfers_max: int = 2  # transfers running at once; more wait as `queued`
    chunks_in_flight_max: int = 8  # over every transfer: bytes in flight <= this x chunk size
    stall_timeout_s: float = 5.0  # no byte from a peer for this long: it stalled
    chunk_timeout_s: float = 60.0  # one chunk in all
    holders_retry_s: float = 2.0  # no usable holder: ask who holds it again this often
    failed_retry_s: float = 30.0  # a failed transfer is tried again after this (if still wanted)


class Transfer:
    """One artifact being fetched, as GET /v1/transfers shows it."""

    def __init__(self, sha256: str, size_bytes: int, plan_limits: TransferLimits) -> None:
        self.sha256 = sha256
        self.size_bytes = size_bytes
        self.plan = TransferPlan(sha256, size_bytes, plan_limits)
        self.state = "queued"  # queued, fetching, waiting (no holder), verifying, done, failed, cancelled
        self.error = ""
        self.started_unix = time.time()
        self.finished_unix: float | None = None
        self.task: asyncio.Task[None] | None = None

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "sha256": self.sha256,
            "state": self.state,
            "size_bytes": self.size_bytes,
            "bytes_done": plan.bytes_done,
            "resumed_bytes": plan.resumed_bytes,
            "round": plan.round,
            "started_unix": round(self.started_unix, 3),
            "finished_unix": None if self.finished_unix is None else round(self.finished_unix, 3),
            "error": self.error or None,
            "peers": [
                {
                    "node": node_id,
                    "bytes": tally.bytes,
                    "chunks": tally.chunks,
                    "failures": tally.failures,
                    "bad_chunks": tally.bad,
                    "excluded": node_id in plan.bad_peers,
                    "last_failure": tally.last_failure or None,
                }
                for node_id, tally in plan.peers.items()
            ],
        }


class Fetcher:
    """Every transfer of this node: start with want(), read with transfers()."""

    def __init__(
        self,
        store: ArtifactStore,
        node_id: str,
        holders: HoldersFn,
        *,
        limits: FetchLimits | None = None,
        plan_limits: TransferLimits | None = None,
        on_commit: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self._holders = holders
        self.limits = limits or FetchLimits()
        self.plan_limits = plan_limits or TransferLimits()
        self._on_commit = on_commit
        self._active: dict[str, Transfer] = {}
        self._finished: collections.deque[Transfer] = collections.deque(maxlen=FINISHED_KEPT)
        self._retry_after: dict[str, float] = {}  # failed: not before this (monotonic)
        self._slots = asyncio.Semaphore(self.limits.transfers_max)
        self._chunk_slots = asyncio.Semaphore(self.limits.chunks_in_flight_max)
        self._client: aiohttp.ClientSession | None = None
        # Node-wide, for GET /metrics: bytes received and chunks proven wrong, by source peer.
        self.bytes_by_peer: collections.Counter[str] = collections.Counter()
        self.bad_chunks_by_peer: collections.Counter[str] = collections.Counter()
        self.counters: collections.Counter[str] = collections.Counter()

    # --- commands ------------------------------------------------------------------------------

    def want(self, sha256: str, size_bytes: int) -> Transfer | None:
        """Make sure `sha256` is held or on its way; the transfer, or None if already held."""
        if self.store.size(sha256) is not None:
            return None
        transfer = self._active.get(sha256)
        if transfer is not None:
            return transfer
        if time.monotonic() < self._retry_after.get(sha256, 0.0):
            return None
        transfer = Transfer(sha256, size_bytes, self.plan_limits)
        self._active[sha256] = transfer
        transfer.task = asyncio.get_running_loop().create_task(self._run(transfer))
        transfer.task.add_done_callback(lambda _task: self._ended(transfer))
        return transfer

    def _ended(self, transfer: Transfer) -> None:
        """A transfer's task is over, even one cancelled before it ran."""
        if self._active.get(transfer.sha256) is not transfer:
            return
        del self._active[transfer.sha256]
        if transfer.state not in ("done", "failed"):
            transfer.state = "cancelled"
        transfer.finished_unix = time.time()
        self._finished.append(transfer)
        self.counters[f"transfers_{transfer.state}"] += 1

    def cancel(self, sha256: str) -> None:
        """Stop fetching `sha256` (no longer needed); its partial file stays for a resume."""
        transfer = self._active.get(sha256)
        if transfer is not None and transfer.task is not None:
            transfer.task.cancel()

    def is_fetching(self, sha256: str) -> bool:
        """A transfer of `sha256` is queued or under way."""
        return sha256 in self._active

    def writing(self) -> list[str]:
        """Artifacts a transfer is writing now (garbage collection leaves them alone)."""
        return sorted(self._active)

    def transfers(self) -> list[dict[str, Any]]:
        """Running transfers, then the last finished ones, newest first."""
        running = [t.to_json() for _sha, t in sorted(self._active.items())]
        return running + [t.to_json() for t in reversed(self._finished)]

    async def close(self) -> None:
        tasks = [t.task for t in self._active.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None

    # --- one transfer --------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None:
            # Per-request timeouts are set on each chunk; the connector bounds connections per peer.
            connector = aiohttp.TCPConnector(limit_per_host=self.plan_limits.per_peer_in_flight_max + 1)
            self._client = aiohttp.ClientSession(connector=connector)
        return self._client

    async def _run(self, transfer: Transfer) -> None:
        try:
            async with self._slots:
                await self._fetch(transfer)
        except asyncio.CancelledError:
            transfer.state = "cancelled"
            raise
        except (OSError, ArtifactError) as exc:
            transfer.state, transfer.error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("artifact %s: transfer failed: %s", transfer.sha256, transfer.error)
        finally:
            if transfer.state == "failed":
                self._retry_after[transfer.sha256] = time.monotonic() + self.limits.failed_retry_s
            self._ended(transfer)

    async def _fetch(self, transfer: Transfer) -> None:
        sha256, size = transfer.sha256, transfer.size_bytes
        plan = transfer.plan
        self.store.check_room(sha256, size)
        fd = await asyncio.to_thread(self._open_partial, sha256, size)
        try:
            plan.restore(await asyncio.to_thread(self._resume, fd, plan))
            if plan.resumed_bytes:
                log.info("artifact %s: resuming with %d of %d bytes held", sha256, plan.resumed_bytes, size)
            transfer.state = "fetching"
            in_flight: dict[asyncio.Task[tuple[ChunkRequest, str | None, str]], ChunkRequest] = {}
            try:
                while True:
                    if plan.complete and not in_flight:
                        if await self._verify(transfer):
                            return
                        continue
                    if not in_flight and not plan.usable():
                        await self._refresh_holders(transfer)
                        if not plan.usable():
                            transfer.state = "waiting"
                            await asyncio.sleep(self.limits.holders_retry_s)
                            continue
                        transfer.state = "fetching"
                    for request in plan.next_requests():
                        task = asyncio.create_task(self._fetch_chunk(sha256, size, request, fd))
                        in_flight[task] = request
                    if not in_flight:
                        # Holders known but none may be asked (all resting): ask again soon.
                        await asyncio.sleep(self.limits.holders_retry_s)
                        await self._refresh_holders(transfer)
                        continue
                    done, _pending = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        in_flight.pop(task)
                        request, digest, reason = task.result()
                        node_id = request.holder.node_id
                        if digest is None:
                            plan.chunk_failed(request.index, node_id, reason)
                            self.counters["chunk_failures"] += 1
                            log.debug("artifact %s chunk %d: %s: %s", sha256, request.index, node_id, reason)
                        else:
                            plan.chunk_done(request.index, node_id, digest)
                            self.bytes_by_peer[node_id] += request.length
                    await asyncio.to_thread(self._save_progress, plan)
            finally:
                for task in in_flight:
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)
        finally:
            os.close(fd)

    async def _refresh_holders(self, transfer: Transfer) -> None:
        try:
            holders = await self._holders(transfer.sha256)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.debug("artifact %s: finding holders failed: %s", transfer.sha256, exc)
            holders = []
        transfer.plan.set_holders(sorted(h for h in holders if h.node_id != self.node_id))

    async def _verify(self, transfer: Transfer) -> bool:
        """Hash the whole file: commit it (True), or start a recheck round / fail (a failed
        transfer returns True too: it is over)."""
        plan = transfer.plan
        transfer.state = "verifying"
        ok = await asyncio.to_thread(self.store.commit_partial, transfer.sha256, transfer.size_bytes)
        outcome = plan.verified(ok)
        if outcome is Outcome.DONE:
            transfer.state = "done"
            for node_id, tally in plan.peers.items():
                if tally.bad:  # proven only now: the verified file is the reference
                    self.bad_chunks_by_peer[node_id] += tally.bad
            sources = ", ".join(f"{n} {t.bytes} bytes" for n, t in plan.peers.items() if t.bytes)
            log.info(
                "artifact %s fetched and verified (%d bytes, %d resumed) from %s%s",
                transfer.sha256,
                transfer.size_bytes,
                plan.resumed_bytes,
                sources or "no peer (all resumed)",
                f"; bad chunks from {', '.join(plan.bad_peers)} refused" if plan.bad_peers else "",
            )
            if self._on_commit is not None:
                self._on_commit(transfer.sha256)
            return True
        if outcome is Outcome.FAILED:
            transfer.state = "failed"
            transfer.error = (
                f"no holder's copy hashes to {transfer.sha256} after {plan.round} rounds: the copies "
                "held by its holders are corrupt; upload the artifact again (murmur deploy)"
            )
            log.error("artifact %s: %s", transfer.sha256, transfer.error)
            self.store.remove_partial(transfer.sha256)
            return True
        log.warning(
            "artifact %s: the assembled bytes do not hash to its id; fetching every chunk again "
            "from other holders (round %d) to find the holder that sent a wrong chunk",
            transfer.sha256,
            plan.round,
        )
        transfer.state = "fetching"
        await asyncio.to_thread(self._save_progress, plan)
        return False

    async def _fetch_chunk(
        self, sha256: str, size: int, request: ChunkRequest, fd: int
    ) -> tuple[ChunkRequest, str | None, str]:
        """(request, the chunk's sha256 once written, "") or (request, None, why not)."""
        async with self._chunk_slots:
            end = request.offset + request.length - 1
            timeout = aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.limits.stall_timeout_s,
                sock_read=self.limits.stall_timeout_s,
            )
            try:
                async with asyncio.timeout(self.limits.chunk_timeout_s):
                    async with self._session().get(
                        f"http://{request.holder.api_addr}/v1/artifacts/{sha256}",
                        headers={"Range": f"bytes={request.offset}-{end}"},
                        timeout=timeout,
                    ) as resp:
                        problem = _range_problem(resp, request, size)
                        if problem:
                            return request, None, problem
                        data = bytearray()
                        async for block in resp.content.iter_chunked(READ_BLOCK_BYTES):
                            data += block
                            if len(data) > request.length:
                                return request, None, "more bytes than asked"
            except TimeoutError:
                return request, None, "stalled or too slow"
            except (aiohttp.ClientError, OSError) as exc:
                return request, None, type(exc).__name__
            if len(data) != request.length:
                return request, None, f"short: {len(data)} of {request.length} bytes"
            digest = await asyncio.to_thread(_write_at, fd, request.offset, bytes(data))
            return request, digest, ""

    # --- the partial file and its map (blocking: called in a thread) -------------------------

    def _open_partial(self, sha256: str, size: int) -> int:
        path = self.store.partial_path(sha256)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
        return fd

    def _resume(self, fd: int, plan: TransferPlan) -> dict[int, Any]:
        """The chunks the map names whose bytes in the partial file still hash as recorded."""
        path = self.store.progress_path(plan.sha256)
        try:
            with path.open("rb") as f:
                raw = f.read(PROGRESS_MAP_MAX_BYTES + 1)
            doc = json.loads(raw) if len(raw) <= PROGRESS_MAP_MAX_BYTES else None
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            doc = None
        received = restored(doc, plan.sha256, plan.size_bytes, plan.limits.chunk_bytes)
        if received is None:
            self.counters["progress_map_refused"] += 1
            log.warning("artifact %s: its transfer map is not readable; starting over", plan.sha256)
            return {}
        good = {}
        for index, got in sorted(received.items()):
            offset = index * plan.limits.chunk_bytes
            data = os.pread(fd, plan.chunk_length(index), offset)
            if hashlib.sha256(data).hexdigest() == got.digest:
                good[index] = got
            else:
                self.counters["resume_chunks_lost"] += 1
        return good

    def _save_progress(self, plan: TransferPlan) -> None:
        path = self.store.progress_path(plan.sha256)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(json.dumps(snapshot(plan), separators=(",", ":")).encode())
        os.replace(tmp, path)


def _range_problem(resp: aiohttp.ClientResponse, request: ChunkRequest, size: int) -> str:
    """Why a response is not the chunk asked for ("" if it is)."""
    end = request.offset + request.length - 1
    if resp.status == 206:
        expected = f"bytes {request.offset}-{end}/{size}"
        got = resp.headers.get("Content-Range", "")
        return "" if got == expected else f"Content-Range {got[:80]!r}, not {expected!r}"
    if resp.status == 200 and request.offset == 0 and request.length == size:
        return ""  # a server may answer a range covering everything with the whole file
    return f"HTTP {resp.status}"


def _write_at(fd: int, offset: int, data: bytes) -> str:
    view = memoryview(data)
    written = 0
    while written < len(data):
        written += os.pwrite(fd, view[written:], offset + written)
    return hashlib.sha256(data).hexdigest()
