"""The plan of one artifact transfer from peers: which chunk to ask of which holder, what came
back from whom, and what to do when the assembled bytes do not hash to the artifact's id.

Pure (no clock, no sockets, no files): mesh/service/fetcher.py asks for `next_requests()`,
fetches each chunk with an HTTP range request, writes it at its offset and reports
`chunk_done` (with the chunk's own sha256) or `chunk_failed` (timeout, stall, error). When
every chunk is held the driver hashes the whole file and reports `verified(ok)`.

Why the whole sha256 and not per-chunk hashes: a manifest names only the artifact's sha256,
so a chunk hash list would come from a holder, unsigned; a lying or corrupt holder could
then make honest peers look bad. The whole hash is the only proof a node has, so every
chunk remembers which peer sent it and its digest. On a mismatch the plan starts a
*recheck round*: every chunk is fetched again, from another holder than the one that sent
it when there is one (this finds one bad holder among good ones). If that fails too, the
next rounds take every chunk from one holder at a time, so a good copy anywhere is found.
When a round verifies, every earlier sender of a chunk whose digest differs from the
verified one sent wrong bytes: counted, and never asked again for this artifact. Cost: a
corrupt chunk is found only at the end, and then costs one more full download (more if
the first recheck fails too; docs/artifacts.md); a transfer without corruption costs nothing.

Determinism: holders are kept in the order given (the driver sorts them), chunks are taken
in index order, and round-robin over holders has a cursor: no set is iterated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

CHUNK_BYTES = 1024 * 1024
SNAPSHOT_VERSION = 1
_DIGEST = re.compile(r"[0-9a-f]{64}")
_PEER_ID_MAX_CHARS = 128


@dataclass(frozen=True, slots=True)
class TransferLimits:
    """How much one transfer asks at once, and when it gives up on a holder or on itself."""

    chunk_bytes: int = CHUNK_BYTES
    in_flight_max: int = 4  # chunks asked at once (bytes in flight <= in_flight_max * chunk_bytes)
    per_peer_in_flight_max: int = 2  # chunks asked of one holder at once
    peer_failures_max: int = 3  # failures in a row before a holder rests until the holders refresh
    # The first round, a recheck from other holders, then one holder at a time (a whole copy each).
    rounds_max: int = 6

    def __post_init__(self) -> None:
        if min(self.chunk_bytes, self.in_flight_max, self.per_peer_in_flight_max) < 1:
            raise ValueError("chunk_bytes, in_flight_max and per_peer_in_flight_max must be 1 or more")
        if self.peer_failures_max < 1 or self.rounds_max < 1:
            raise ValueError("peer_failures_max and rounds_max must be 1 or more")


@dataclass(frozen=True, slots=True, order=True)
class Holder:
    """A node that holds the artifact, and its API address (HOST:PORT)."""

    node_id: str
    api_addr: str


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    """Fetch bytes [offset, offset + length) of the artifact from `holder`."""

    index: int
    offset: int
    length: int
    holder: Holder


@dataclass(frozen=True, slots=True)
class Received:
    """A chunk written to the partial file: who sent it, and the sha256 of its bytes."""

    node_id: str
    digest: str


class Outcome(StrEnum):
    """What a whole-file check leads to."""

    DONE = "done"  # verified: commit it
    RECHECK = "recheck"  # mismatch: every chunk is fetched again, from other holders if any
    FAILED = "failed"  # mismatch after rounds_max rounds: no holder's copy hashes right


@dataclass(slots=True)
class PeerTally:
    """One holder's record in this transfer (GET /v1/transfers shows it)."""

    bytes: int = 0
    chunks: int = 0
    failures: int = 0  # every failed chunk
    failures_in_row: int = 0
    bad: int = 0  # chunks it sent that a recheck proved wrong
    in_flight: int = 0
    resting: bool = False  # too many failures in a row: not asked until the holders refresh
    last_failure: str = ""


class TransferPlan:
    """One artifact's chunks, its holders, and who sent what."""

    def __init__(self, sha256: str, size_bytes: int, limits: TransferLimits | None = None) -> None:
        if size_bytes < 1:
            raise ValueError("size_bytes must be 1 or more")
        self.sha256 = sha256
        self.size_bytes = size_bytes
        self.limits = limits or TransferLimits()
        self.chunk_count = -(-size_bytes // self.limits.chunk_bytes)
        self.received: dict[int, Received] = {}
        self.in_flight: dict[int, str] = {}  # chunk -> node id asked
        self.peers: dict[str, PeerTally] = {}  # every holder ever used, in first-seen order
        self.bad_peers: list[str] = []  # never asked again for this artifact
        self.resumed_bytes = 0  # held from before (a restart, a dropped connection)
        self._holders: list[Holder] = []
        self._cursor = 0
        self._avoid: dict[int, str] = {}  # chunk -> the holder that last failed or sent it
        self._round = 1
        self._earlier: dict[int, list[Received]] = {}  # chunk -> what the rounds before got
        self._single: str | None = None  # from round 3: every chunk from this one holder
        self._tried_single: list[str] = []

    # --- inputs ------------------------------------------------------------------------------

    def set_holders(self, holders: Sequence[Holder]) -> None:
        """The holders known now (in the driver's order); bad ones are left out, resting ones
        may be asked again (a refresh is their second chance)."""
        self._holders = [h for h in holders if h.node_id not in self.bad_peers]
        if self._single is not None and all(h.node_id != self._single for h in self._holders):
            self._single = None  # that holder is gone: mix the others again
        for h in self._holders:
            tally = self.peers.setdefault(h.node_id, PeerTally())
            tally.resting = False
            tally.failures_in_row = 0
        self._cursor = 0

    def chunk_done(self, index: int, node_id: str, digest: str) -> None:
        """Chunk `index` from `node_id` is written at its offset; `digest` is its bytes' sha256."""
        if self.in_flight.get(index) != node_id:
            return  # a late answer to a request given up on: the chunk went elsewhere
        del self.in_flight[index]
        tally = self.peers.setdefault(node_id, PeerTally())
        tally.in_flight -= 1
        tally.bytes += self.chunk_length(index)
        tally.chunks += 1
        tally.failures_in_row = 0
        self.received[index] = Received(node_id, digest)
        self._avoid.pop(index, None)

    def chunk_failed(self, index: int, node_id: str, reason: str) -> None:
        """Chunk `index` did not come from `node_id` (error, short read, timeout, stall):
        it goes to another holder next when there is one."""
        if self.in_flight.get(index) != node_id:
            return
        del self.in_flight[index]
        tally = self.peers.setdefault(node_id, PeerTally())
        tally.in_flight -= 1
        tally.failures += 1
        tally.failures_in_row += 1
        tally.last_failure = reason
        if tally.failures_in_row >= self.limits.peer_failures_max:
            tally.resting = True
        self._avoid[index] = node_id

    def forget(self, index: int) -> None:
        """A chunk believed held is not (the partial file lost it): fetch it again."""
        self.received.pop(index, None)

    def restore(self, received: Mapping[int, Received]) -> None:
        """Chunks already in the partial file from an earlier run (checked by the driver)."""
        for index, got in received.items():
            if 0 <= index < self.chunk_count:
                self.received[index] = got
        self.resumed_bytes = sum(self.chunk_length(i) for i in self.received)

    def verified(self, ok: bool) -> Outcome:
        """The whole file was hashed: ok, or not the artifact. On a mismatch, the chunks that
        differ from the round before name their earlier senders as bad."""
        if ok:
            self._blame()
            return Outcome.DONE
        if self._round >= self.limits.rounds_max:
            return Outcome.FAILED
        if self._round >= 2:
            # Mixing holders did not help: one holder at a time, each a whole copy.
            untried = [h.node_id for h in self._holders if h.node_id not in self._tried_single]
            if not untried:
                return Outcome.FAILED
            self._single = untried[0]
            self._tried_single.append(untried[0])
        self._round += 1
        for index, got in self.received.items():
            self._earlier.setdefault(index, []).append(got)
            self._avoid[index] = got.node_id
        self.received = {}
        return Outcome.RECHECK

    # --- outputs -----------------------------------------------------------------------------

    def next_requests(self) -> list[ChunkRequest]:
        """Chunks to ask for now, round-robin over the usable holders, within the limits."""
        out: list[ChunkRequest] = []
        for index in range(self.chunk_count):
            if len(self.in_flight) >= self.limits.in_flight_max:
                break
            if index in self.received or index in self.in_flight:
                continue
            holder = self._pick(self._avoid.get(index))
            if holder is None:
                break
            self.in_flight[index] = holder.node_id
            self.peers[holder.node_id].in_flight += 1
            out.append(ChunkRequest(index, index * self.limits.chunk_bytes, self.chunk_length(index), holder))
        return out

    def chunk_length(self, index: int) -> int:
        start = index * self.limits.chunk_bytes
        return min(self.limits.chunk_bytes, self.size_bytes - start)

    @property
    def complete(self) -> bool:
        """Every chunk is in the partial file: hash the whole and call verified()."""
        return len(self.received) == self.chunk_count

    @property
    def round(self) -> int:
        return self._round

    @property
    def bytes_done(self) -> int:
        return sum(self.chunk_length(i) for i in self.received)

    def usable(self) -> bool:
        """Whether any holder may be asked now (else: refresh the holders, or wait)."""
        return any(
            not self.peers[h.node_id].resting and self._single in (None, h.node_id) for h in self._holders
        )

    # --- internals ---------------------------------------------------------------------------

    def _pick(self, avoid: str | None) -> Holder | None:
        """The next holder with room, round-robin; one other than `avoid` when there is one."""
        if self._single is not None:
            for holder in self._holders:
                tally = self.peers[holder.node_id]
                if holder.node_id == self._single and tally.in_flight < self.limits.per_peer_in_flight_max:
                    return holder
            return None
        fallback: Holder | None = None
        count = len(self._holders)
        for step in range(count):
            holder = self._holders[(self._cursor + step) % count]
            tally = self.peers[holder.node_id]
            if tally.resting or tally.in_flight >= self.limits.per_peer_in_flight_max:
                continue
            if holder.node_id == avoid and count > 1:
                if fallback is None:
                    fallback = holder
                continue
            self._cursor = (self._cursor + step + 1) % count
            return holder
        if fallback is not None and not any(
            h.node_id != avoid and not self.peers[h.node_id].resting for h in self._holders
        ):
            return fallback  # the only holder left that may be asked
        return None

    def _blame(self) -> None:
        """The whole file verified, so its chunks are the artifact's: every earlier round's
        sender of a chunk with another digest sent wrong bytes. Counted, and never asked again."""
        for index in sorted(self._earlier):
            final = self.received.get(index)
            if final is None:
                continue
            for before in self._earlier[index]:
                if before.digest == final.digest:
                    continue
                self.peers.setdefault(before.node_id, PeerTally()).bad += 1
                if before.node_id not in self.bad_peers:
                    self.bad_peers.append(before.node_id)
        self._holders = [h for h in self._holders if h.node_id not in self.bad_peers]
        self._cursor = 0


def snapshot(plan: TransferPlan) -> dict[str, Any]:
    """What survives a restart: the chunks written to the partial file and who sent them."""
    return {
        "v": SNAPSHOT_VERSION,
        "sha256": plan.sha256,
        "size_bytes": plan.size_bytes,
        "chunk_bytes": plan.limits.chunk_bytes,
        "received": {str(i): [r.node_id, r.digest] for i, r in sorted(plan.received.items())},
    }


def restored(doc: Any, sha256: str, size_bytes: int, chunk_bytes: int) -> dict[int, Received] | None:
    """The chunks a snapshot says are written, or None if it is not a snapshot of this very
    transfer (another artifact, size or chunk size, or malformed: start over)."""
    if not isinstance(doc, dict) or doc.get("v") != SNAPSHOT_VERSION:
        return None
    if doc.get("sha256") != sha256 or doc.get("size_bytes") != size_bytes:
        return None
    if doc.get("chunk_bytes") != chunk_bytes:
        return None
    received = doc.get("received")
    if not isinstance(received, dict):
        return None
    count = -(-size_bytes // chunk_bytes)
    out: dict[int, Received] = {}
    for key, value in received.items():
        if not isinstance(key, str) or not key.isdigit() or len(key) > 12:
            return None
        index = int(key)
        if index >= count or not isinstance(value, list) or len(value) != 2:
            return None
        node_id, digest = value
        if not isinstance(node_id, str) or not 0 < len(node_id) <= _PEER_ID_MAX_CHARS:
            return None
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            return None
        out[index] = Received(node_id, digest)
    return out
