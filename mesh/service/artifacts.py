"""The content-addressed artifact store: model files by sha256, written whole or not at all.

A node keeps each artifact once, under `<root>/<sha256>`. A write streams into
a temporary file while hashing; it becomes visible (an atomic rename after
fsync) only if its size and sha256 are exactly those announced. A half-written
upload (a crash, a dropped connection) leaves only a temporary file, which the
next start removes. Peers fetch artifacts from here (range requests, mesh/service/fetcher.py);
`murmur deploy` uploads a manifest's `artifact.file`. A transfer from peers writes chunks
at their offsets into `<root>/.partial-<sha256>` (kept across restarts, so it resumes) and
`commit_partial` makes it visible with the same guarantees as a write: only whole and verified.
`held()` and `delete()` are what garbage collection (inference/artifact_gc.py) works with.
It writes files, so it is a driver (mesh/); an artifact id is what a manifest's
`artifact.sha256` must be (inference/manifest.py's SHA256_PATTERN).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from inference.artifact_gc import HeldArtifact
from inference.manifest import SHA256_PATTERN

TMP_PREFIX = ".incoming-"
PARTIAL_PREFIX = ".partial-"  # a transfer from peers: kept across restarts (it resumes)
HASH_READ_BYTES = 1024 * 1024
# Room left free on the disk after an artifact is written.
DISK_MARGIN_BYTES = 64 * 1024 * 1024


class ArtifactError(Exception):
    """An artifact write refused or failed; `reason` is a short key, the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ArtifactWriter:
    """One artifact being written: write() the bytes in order, then commit() or abort()."""

    def __init__(self, store: ArtifactStore, sha256: str, size_bytes: int) -> None:
        self._store = store
        self.sha256 = sha256
        self.size_bytes = size_bytes
        self.received_bytes = 0
        self._hash = hashlib.sha256()
        self._tmp = store.root / f"{TMP_PREFIX}{sha256[:16]}-{secrets.token_hex(4)}"
        self._file = self._tmp.open("xb")

    def write(self, chunk: bytes) -> None:
        """Append chunk; ArtifactError("too_long") past the announced size."""
        self.received_bytes += len(chunk)
        if self.received_bytes > self.size_bytes:
            self.abort()
            raise ArtifactError(
                "too_long", f"more than the announced {self.size_bytes} bytes; nothing was kept"
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def commit(self) -> Path:
        """Check size and sha256, sync, and make the artifact visible; ArtifactError if they differ."""
        if self.received_bytes != self.size_bytes:
            self.abort()
            raise ArtifactError(
                "too_short",
                f"got {self.received_bytes} of {self.size_bytes} bytes (connection cut?); nothing was kept",
            )
        if self._hash.hexdigest() != self.sha256:
            self.abort()
            raise ArtifactError(
                "hash_mismatch",
                f"the bytes hash to {self._hash.hexdigest()}, not {self.sha256}; nothing was kept",
            )
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._store.path(self.sha256)
        os.replace(self._tmp, final)
        fd = os.open(self._store.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._store.changed()
        return final

    def abort(self) -> None:
        """Drop what was written."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


class ArtifactStore:
    """Artifacts by sha256 under `root`."""

    def __init__(self, root: Path, *, size_max_bytes: int) -> None:
        """Open (create) the store; leftovers of interrupted writes are removed."""
        self.root = root
        self.size_max_bytes = size_max_bytes
        # Called (from any thread) when an artifact appears or goes: the agent republishes
        # its inventory, which lists the artifacts held here.
        self.on_change: Callable[[], None] | None = None
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in root.glob(TMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    @staticmethod
    def check_id(sha256: str) -> None:
        """ArtifactError("bad_id") unless sha256 is 64 lowercase hex characters."""
        if not SHA256_PATTERN.fullmatch(sha256):
            raise ArtifactError("bad_id", f"{sha256!r} is not a sha256 (64 lowercase hex characters)")

    def path(self, sha256: str) -> Path:
        """Where the artifact lives (whether or not it is there)."""
        self.check_id(sha256)
        return self.root / sha256

    def size(self, sha256: str) -> int | None:
        """The size of a held artifact, or None."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def begin(self, sha256: str, size_bytes: int) -> ArtifactWriter:
        """Start writing an artifact; ArtifactError if too large for the limit or the disk."""
        self.check_room(sha256, size_bytes)
        return ArtifactWriter(self, sha256, size_bytes)

    def check_room(self, sha256: str, size_bytes: int) -> None:
        """ArtifactError unless an artifact of `size_bytes` fits the limit and the disk."""
        self.check_id(sha256)
        if not 0 < size_bytes <= self.size_max_bytes:
            raise ArtifactError(
                "too_large",
                f"{size_bytes} bytes; this node takes artifacts of 1 to {self.size_max_bytes} bytes",
            )
        free = os.statvfs(self.root)
        free_bytes = free.f_bavail * free.f_frsize
        if size_bytes + DISK_MARGIN_BYTES > free_bytes:
            raise ArtifactError(
                "no_space", f"{size_bytes} bytes do not fit: {free_bytes} bytes free on this node's disk"
            )

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def held(self) -> list[HeldArtifact]:
        """Every artifact in the store with its size and last use (its file's mtime), by id."""
        out: list[HeldArtifact] = []
        for path in sorted(self.root.iterdir()):
            if not SHA256_PATTERN.fullmatch(path.name):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # deleted meanwhile
            out.append(HeldArtifact(path.name, st.st_size, st.st_mtime))
        return out

    def touch(self, sha256: str) -> None:
        """Mark a held artifact as used now (least recently used ones are collected first)."""
        with contextlib.suppress(FileNotFoundError, ArtifactError):
            os.utime(self.path(sha256))

    def delete(self, sha256: str) -> bool:
        """Remove a held artifact; True if it was there."""
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        self.changed()
        return True

    def partial_path(self, sha256: str) -> Path:
        """The partial file of a transfer from peers."""
        self.check_id(sha256)
        return self.root / f"{PARTIAL_PREFIX}{sha256}"

    def progress_path(self, sha256: str) -> Path:
        """The received-chunks map of a transfer (inference/transfer_plan.py's snapshot)."""
        return self.root / f"{PARTIAL_PREFIX}{sha256}.json"

    def partials(self) -> list[str]:
        """The ids of transfers with a partial file here."""
        return sorted(
            p.name.removeprefix(PARTIAL_PREFIX)
            for p in self.root.glob(PARTIAL_PREFIX + "*")
            if SHA256_PATTERN.fullmatch(p.name.removeprefix(PARTIAL_PREFIX))
        )

    def remove_partial(self, sha256: str) -> None:
        """Forget a transfer: its partial file and its map."""
        for path in (self.partial_path(sha256), self.progress_path(sha256)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def commit_partial(self, sha256: str, size_bytes: int) -> bool:
        """Hash the partial file; if it is the artifact (size and sha256), sync it and make it
        visible atomically, and drop its map: True. False (the partial stays) if it is not.
        Blocking (reads the whole file): run it off the event loop."""
        partial = self.partial_path(sha256)
        digest = hashlib.sha256()
        with partial.open("rb") as f:
            if os.fstat(f.fileno()).st_size != size_bytes:
                return False
            while block := f.read(HASH_READ_BYTES):
                digest.update(block)
            if digest.hexdigest() != sha256:
                return False
            os.fsync(f.fileno())
        os.replace(partial, self.path(sha256))
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self.progress_path(sha256).unlink()
        self.changed()
        return True
