"""The node's durable state: one SQLite database in its data dir.

It holds what must survive a restart: the node's incarnation (a restarted node
must start above every incarnation it ever announced, or peers would keep
believing an old "dead" notice), the last known peer addresses (extra seeds
on restart) and the signed records of the state store (one row per slot, the
encoded record; the store re-verifies them when they are restored). WAL with
synchronous=FULL: a committed write survives kill -9 and power loss, and an
interrupted one is rolled back on the next open.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gossip.codec import DecodeError
from gossip.records import Record, decode_record, encode_record

DB_FILE = "node.db"
LOCK_FILE = "agent.lock"
SCHEMA_VERSION = 2
PEERS_MAX = 64

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

    @classmethod
    def open(cls, data_dir: Path, node_id: str) -> Store:
        """Open (or create) the database of the node `node_id` in `data_dir`, checking its integrity."""
        lock = _lock_data_dir(data_dir)
        path = data_dir / DB_FILE
        try:
            conn = _connect(path)
        except BaseException:
            lock.close()
            raise
        store = cls(path, conn, lock)
        try:
            store._check_owner(node_id)
        except BaseException:
            store.close()
            raise
        return store

    def _check_owner(self, node_id: str) -> None:
        owner = self._get("node_id")
        if owner is None:
            self._set("node_id", node_id)
        elif owner != node_id:
            raise StoreError(
                f"database {self.path} belongs to node {owner}, but this data dir's identity is "
                f"node {node_id}; use the data dir the database came from, or move {self.path} aside"
            )

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

    def record_count(self) -> int:
        """Rows in the records table."""
        return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        """Close the database (checkpointing the WAL) and release the data dir lock."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._lock.close()


def _lock_data_dir(data_dir: Path) -> IO[bytes]:
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
