"""The node's durable state: one SQLite database in its data dir.

It holds what must survive a restart: the node's incarnation (a restarted node
must start above every incarnation it ever announced, or peers would keep
believing an old "dead" notice), the last known peer addresses (extra seeds
on restart), the signed records of the state store (one row per slot, the
encoded record; the store re-verifies them when they are restored) and the
election's hard state (one row: term, vote, voter configuration; saved before
any message that depends on it is sent, docs/core-api.md "The election core"). WAL with
synchronous=FULL: a committed write survives kill -9 and power loss, and an
interrupted one is rolled back on the next open.

Damage is reported, never silent (docs/api.md, "What a crash can lose"): an
existing but empty (0-byte) node.db, and committed transactions SQLite would
skip because a write-ahead log frame before them no longer checksums, are
warned about at open and counted in `damage`; record rows that no longer verify
are removed by `remove_records` (the caller re-verifies them) and counted too.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import sqlite3
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gossip.codec import DecodeError
from gossip.records import Record, decode_record, encode_record

DB_FILE = "node.db"
LOCK_FILE = "agent.lock"
SCHEMA_VERSION = 2
PEERS_MAX = 64
WAL_CHECK_MAX_BYTES = 64 * 1024 * 1024  # a larger log is not checked (SQLite checkpoints at ~4 MiB)
_WAL_MAGICS = (0x377F0682, 0x377F0683)  # the low bit: checksums in big-endian words
_WAL_HEADER_BYTES = 32
_WAL_FRAME_HEADER_BYTES = 24

log = logging.getLogger("murmur.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS peers (
    node_id TEXT PRIMARY KEY,
    addr TEXT NOT NULL,
    region TEXT NOT NULL,
    api_addr TEXT NOT NULL,
    seen_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    author TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS election (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state BLOB NOT NULL
);
"""


class StoreError(Exception):
    """The data dir's database is unusable; the message names the fix."""


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer this node saw alive: where to find it again after a restart."""

    node_id: str
    addr: str
    region: str
    api_addr: str


def _corrupt(path: Path, detail: str) -> StoreError:
    return StoreError(
        f"database {path} is corrupt ({detail}). Stop the agent, move {path} (and any "
        f"{path.name}-wal, {path.name}-shm) aside, and start again: the node keeps its identity "
        "and rejoins with a fresh incarnation."
    )


class Store:
    """The node database. Open with `Store.open`; every write is one committed transaction."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: IO[bytes]) -> None:
        self.path = path
        self._conn = conn
        self._lock = lock
        # What was found damaged or dropped since this open (GET /v1/state: storage).
        self.empty_at_start = False
        self.wal_lost_transactions = 0
        self.removed_records: collections.Counter[str] = collections.Counter()

    @classmethod
    def open(cls, data_dir: Path, node_id: str, cluster_id: str | None = None) -> Store:
        """Open (or create) the database of the node `node_id` in `data_dir`, checking its integrity.

        cluster_id (the join token's): refuse a database of another cluster; a new
        database is stamped with it.
        """
        lock = lock_data_dir(data_dir)
        path = data_dir / DB_FILE
        try:
            empty_at_start = path.exists() and path.stat().st_size == 0
            wal_lost = _wal_lost_transactions(path.with_name(path.name + "-wal"))
            conn = _connect(path)
        except BaseException:
            lock.close()
            raise
        store = cls(path, conn, lock)
        try:
            store._check_owner(node_id, cluster_id)
        except BaseException:
            store.close()
            raise
        store.empty_at_start = empty_at_start
        store.wal_lost_transactions = wal_lost
        if empty_at_start:
            log.warning(
                "database %s was empty (0 bytes) although it existed: whatever it held is lost "
                "(a truncated file, or a first start interrupted at once). The node starts over as if "
                "new: same identity, incarnation from 0 (it outbids its old one when peers tell it), "
                "records re-learned from peers; operator commands accepted only by this node are lost",
                path,
            )
        if wal_lost:
            log.warning(
                "database %s: its write-ahead log is damaged; %d committed transaction(s) after the "
                "damage were skipped (lost). Records are re-learned from peers; restore %s from a "
                "backup if this node alone held an operator command",
                path,
                wal_lost,
                path,
            )
        return store

    def _check_owner(self, node_id: str, cluster_id: str | None) -> None:
        owner = self._get("node_id")
        if owner is None:
            self._set("node_id", node_id)
        elif owner != node_id:
            raise StoreError(
                f"database {self.path} belongs to node {owner}, but this data dir's identity is "
                f"node {node_id}; use the data dir the database came from, or move {self.path} aside"
            )
        if cluster_id is None:
            return
        stored = self._get("cluster_id")
        if stored is None:
            self._set("cluster_id", cluster_id)
        elif stored != cluster_id:
            data_dir = self.path.parent
            raise StoreError(
                f"data dir {data_dir} belongs to cluster {stored}, but the join token is for cluster "
                f"{cluster_id}. To run this node in cluster {stored}, pass a join token of that cluster. "
                f"To make this device a new node of cluster {cluster_id}, give it another --data-dir "
                f"(or move {data_dir} aside): it gets a new node id, and an operator of cluster {stored} "
                f"can revoke the old one"
            )

    @property
    def damage(self) -> dict[str, object]:
        """What this open found damaged or dropped (GET /v1/state reports it as `storage`)."""
        return {
            "empty_at_start": self.empty_at_start,
            "wal_lost_transactions": self.wal_lost_transactions,
            "records_removed": sum(self.removed_records.values()),
            "records_removed_by_reason": dict(sorted(self.removed_records.items())),
        }

    def _get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set(self, key: str, value: str) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    @property
    def incarnation(self) -> int:
        """The highest incarnation this node has persisted (0 on first start)."""
        value = self._get("incarnation")
        return 0 if value is None else int(value)

    def set_incarnation(self, incarnation: int) -> None:
        """Persist `incarnation` (never lowers the stored value)."""
        if incarnation > self.incarnation:
            self._set("incarnation", str(incarnation))

    def peers(self) -> list[PeerRecord]:
        """Known peers, most recently seen first."""
        rows = self._conn.execute(
            "SELECT node_id, addr, region, api_addr FROM peers ORDER BY seen_unix DESC, node_id LIMIT ?",
            (PEERS_MAX,),
        ).fetchall()
        return [PeerRecord(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    def save_peers(self, peers: Iterable[PeerRecord]) -> None:
        """Record `peers` as seen now; keep only the PEERS_MAX most recent."""
        now_unix = time.time()
        with self._conn:
            self._conn.executemany(
                "INSERT INTO peers (node_id, addr, region, api_addr, seen_unix) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (node_id) DO UPDATE SET addr = excluded.addr, region = excluded.region, "
                "api_addr = excluded.api_addr, seen_unix = excluded.seen_unix",
                [(p.node_id, p.addr, p.region, p.api_addr, now_unix) for p in peers],
            )
            self._conn.execute(
                "DELETE FROM peers WHERE node_id NOT IN "
                "(SELECT node_id FROM peers ORDER BY seen_unix DESC, node_id LIMIT ?)",
                (PEERS_MAX,),
            )

    def save_records(self, records: Iterable[Record]) -> None:
        """Upsert `records` by slot in one transaction, committed (synced) before returning.

        A row is replaced only by a higher version: the state store's order is the
        authority, and `restore` drops whatever a row holds that it would not keep.
        """
        rows = [(r.kind, r.key, r.version, r.author, encode_record(r)) for r in records]
        if not rows:
            return
        with self._conn:
            self._conn.executemany(
                "INSERT INTO records (kind, key, version, author, record) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version, "
                "author = excluded.author, record = excluded.record "
                "WHERE excluded.version > records.version",
                rows,
            )

    def load_records(self) -> list[Record]:
        """Every persisted record, by slot; StoreError if a row does not decode (corruption)."""
        rows = self._conn.execute("SELECT kind, key, record FROM records ORDER BY kind, key").fetchall()
        records: list[Record] = []
        for kind, key, blob in rows:
            try:
                record = decode_record(bytes(blob))
            except DecodeError as exc:
                raise _corrupt(self.path, f"record {kind}/{key} does not decode: {exc.reason}") from None
            if record.slot != (kind, key):
                raise _corrupt(self.path, f"row {kind}/{key} holds a record of {record.kind}/{record.key}")
            records.append(record)
        return records

    def remove_records(self, reasons: Mapping[tuple[str, str], str]) -> None:
        """Delete the rows of these slots (kind, key) in one transaction, counting each by reason."""
        if not reasons:
            return
        with self._conn:
            self._conn.executemany("DELETE FROM records WHERE kind = ? AND key = ?", list(reasons))
        self.removed_records.update(reasons.values())

    def election_state(self) -> bytes | None:
        """The election's hard state as last saved (encoded by consensus.hardstate), or None."""
        row = self._conn.execute("SELECT state FROM election WHERE id = 1").fetchone()
        return None if row is None else bytes(row[0])

    def save_election_state(self, state: bytes) -> None:
        """Replace the election's hard state in one transaction, committed (synced) before returning.

        Raises on failure (sqlite3.Error, OSError): the caller must not send what depends on it."""
        with self._conn:
            self._conn.execute(
                "INSERT INTO election (id, state) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                (state,),
            )

    def record_count(self) -> int:
        """Rows in the records table."""
        return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        """Close the database (checkpointing the WAL) and release the data dir lock."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._lock.close()


def lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on the data dir for the agent's lifetime (released even by kill -9)."""
    lock = open(data_dir / LOCK_FILE, "a+b")  # noqa: SIM115 - held open until Store.close
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StoreError(
            f"data dir {data_dir} is in use by another murmur agent; stop it first, "
            "or give this agent its own --data-dir"
        ) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n".encode())
    lock.flush()
    return lock


def _connect(path: Path) -> sqlite3.Connection:
    try:
        # Create it private (an empty file is an empty database); -wal and -shm inherit the mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open database {path}: {exc}; check the data dir's permissions") from None
    try:
        # integrity_check reads every page: the database is a few pages, and a
        # node must not run on state it cannot trust.
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        if rows != [("ok",)]:
            raise _corrupt(path, "; ".join(str(r[0]) for r in rows[:3]))
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreError(f"database {path}: cannot enable WAL journaling (got {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {path} has schema version {version}, newer than this murmur's "
                f"{SCHEMA_VERSION}; upgrade murmur"
            )
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.OperationalError as exc:
        conn.close()
        raise StoreError(f"cannot use database {path}: {exc}; check the disk and the data dir") from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _corrupt(path, str(exc)) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _wal_checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum (fibonacci-weighted sums of 32-bit words), continued from (s0, s1)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _wal_lost_transactions(wal: Path) -> int:
    """Committed transactions in `wal` that SQLite's recovery will skip because a frame before
    them does not checksum (damage: with synchronous=FULL a commit is on disk before it returns).

    Recovery replays frames up to the first one whose checksum or salt does not
    match, so everything committed after that frame is silently lost. A bad frame
    with no commit after it is an interrupted write (rolled back, as it should be),
    and frames with other salts are an older log's leftovers: neither is damage.
    A damaged header makes SQLite ignore the whole log: every commit in it is lost.
    """
    try:
        size = wal.stat().st_size
        if size <= _WAL_HEADER_BYTES or size > WAL_CHECK_MAX_BYTES:
            return 0
        data = wal.read_bytes()
    except OSError:
        return 0
    magic, _version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:_WAL_HEADER_BYTES])
    big_endian = bool(magic & 1)
    header_ok = magic in _WAL_MAGICS and _wal_checksum(data[:24], 0, 0, big_endian) == (c1, c2)
    if not header_ok or not 512 <= page_size <= 65536:
        # The salts cannot be trusted either: count every frame that says it commits.
        page_size = page_size if 512 <= page_size <= 65536 else 4096
        frame_bytes = _WAL_FRAME_HEADER_BYTES + page_size
        return sum(
            1
            for at in range(_WAL_HEADER_BYTES, len(data) - frame_bytes + 1, frame_bytes)
            if struct.unpack(">I", data[at + 4 : at + 8])[0] != 0
        )
    frame_bytes = _WAL_FRAME_HEADER_BYTES + page_size
    s0, s1 = c1, c2
    damaged = False
    lost = 0
    for at in range(_WAL_HEADER_BYTES, len(data) - frame_bytes + 1, frame_bytes):
        _page, commit, f_salt1, f_salt2, f_c1, f_c2 = struct.unpack(">6I", data[at : at + 24])
        if (f_salt1, f_salt2) != (salt1, salt2):
            if damaged:
                continue  # an older log's frame among this one's: not this log's commit
            break  # this log ends here; the rest is an older log's leftovers
        if damaged:
            lost += commit != 0
            continue
        s0, s1 = _wal_checksum(data[at : at + 8] + data[at + 24 : at + frame_bytes], s0, s1, big_endian)
        if (s0, s1) != (f_c1, f_c2):
            damaged = True
    return lost
