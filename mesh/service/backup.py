"""Backing up a node's data dir while its agent runs, and restoring it into an empty one.

What a data dir holds (docs/configuration.md, "The data dir"): `identity.key`
(the node's Ed25519 key: its node id), `network.keys` (the keyring after the
rotations it saw), `node.db` (SQLite: incarnation, last known peers, the signed
records, the election's hard state), `agent.lock` (held by the running agent),
and `artifacts/` (model files by sha256, plus the partial files of transfers
in progress).

A backup is a directory: `identity.key`, `network.keys` and `node.db` (copied
with SQLite's online backup API: one consistent snapshot even while the agent
writes), `artifacts/<sha256>` with `include_artifacts` (each re-hashed while it
is copied; peers can send them again, so they are optional), and `backup.json`
naming each file with its sha256. `network.keys` is read before and after the
database is copied; if a rotation replaced it meanwhile the copy starts over, so
keys and records belong to one moment. Partial transfers are never copied.

`restore` checks every file against `backup.json` and the database's integrity
and owner before it writes anything, and writes only into a missing or empty
data dir, holding the data dir's lock so no agent starts in it meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
import nacl.signing

from inference.manifest import SHA256_PATTERN
from mesh.files import (
    PRIVATE_DIR_MODE,
    SECRET_MODE,
    FileRefused,
    fsync_dir,
    make_private_dir,
    read_bounded,
    write_new_file,
)
from mesh.service.artifacts import HASH_READ_BYTES
from mesh.service.netkeys import KEYS_FILE, KEYS_FILE_MAX_BYTES
from mesh.service.store import DB_FILE, lock_data_dir
from mesh.trust.identity import IDENTITY_FILE, IDENTITY_MAX_BYTES, node_id_for

MANIFEST_FILE = "backup.json"
MANIFEST_FORMAT = 1
MANIFEST_MAX_BYTES = 16 * 1024 * 1024
ARTIFACTS_DIR = "artifacts"
KEYS_RETRIES_MAX = 5  # network.keys changed during the copy this many times: give up
SQLITE_BUSY_TIMEOUT_S = 10.0


class BackupError(Exception):
    """A backup or restore refused or failed; the message says what to do."""


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What one backup or restore copied."""

    node_id: str
    cluster_id: str | None
    incarnation: int
    records: int
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    artifacts_skipped: tuple[str, ...] = ()  # artifacts that vanished or no longer hash right


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_database(source: Path, dest: Path) -> None:
    """One consistent snapshot of `source` (a live WAL database) into the new file `dest`."""
    try:
        # mode=rw: never create a missing database; a read-write handle also reads a WAL
        # left by a killed agent (a read-only one cannot rebuild the -shm index).
        src = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open database {source}: {exc}") from None
    try:
        os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE))
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # all pages in one step, inside one read transaction
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file (the agent sets WAL again)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy database {source}: {exc}") from None
    finally:
        src.close()


def _database_facts(path: Path) -> tuple[str, str | None, int, int]:
    """(node_id, cluster_id, incarnation, record rows) of a database copy; BackupError if unsound."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if conn.execute("PRAGMA integrity_check").fetchall() != [("ok",)]:
                raise BackupError(f"database {path} fails SQLite's integrity check")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            records = int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"database {path} is not a node database: {exc}") from None
    if "node_id" not in meta:
        raise BackupError(f"database {path} names no node (no node_id): not a node database")
    cluster = meta.get("cluster_id")
    return (
        str(meta["node_id"]),
        None if cluster is None else str(cluster),
        int(meta.get("incarnation", 0)),
        records,
    )


def _read_keys(data_dir: Path) -> bytes | None:
    try:
        return read_bounded(data_dir / KEYS_FILE, KEYS_FILE_MAX_BYTES, "network keys", secret=True)
    except FileNotFoundError:
        return None
    except (FileRefused, OSError) as exc:
        raise BackupError(str(exc)) from None


def _copy_artifact(source: Path, dest: Path, sha256: str) -> bool:
    """Copy one artifact, hashing it on the way; False (nothing left) if it vanished or hashes wrong."""
    digest = hashlib.sha256()
    try:
        with source.open("rb") as src, open(dest, "xb") as dst:
            os.fchmod(dst.fileno(), SECRET_MODE)
            while chunk := src.read(HASH_READ_BYTES):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except FileNotFoundError:  # collected by the agent meanwhile
        dest.unlink(missing_ok=True)
        return False
    if digest.hexdigest() != sha256:
        dest.unlink()
        return False
    return True


def backup(
    data_dir: Path,
    out: Path,
    *,
    include_artifacts: bool = False,
    version: str = "",
    progress: Callable[[str], None] = lambda _line: None,
) -> BackupSummary:
    """Back up `data_dir` (its agent may be running) into the new directory `out`."""
    identity_path = data_dir / IDENTITY_FILE
    if not identity_path.is_file() or not (data_dir / DB_FILE).is_file():
        raise BackupError(
            f"{data_dir} is not a node's data dir (it needs {IDENTITY_FILE} and {DB_FILE}); "
            "give the --data-dir the agent runs with"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackupError(f"{out} exists and is not an empty directory; name a new directory")
    try:
        identity = read_bounded(identity_path, IDENTITY_MAX_BYTES, "identity key", secret=True)
    except (FileRefused, OSError) as exc:
        raise BackupError(str(exc)) from None
    make_private_dir(out)
    os.chmod(out, PRIVATE_DIR_MODE)
    write_new_file(out / IDENTITY_FILE, identity)
    for _attempt in range(KEYS_RETRIES_MAX):
        keys = _read_keys(data_dir)
        (out / DB_FILE).unlink(missing_ok=True)
        _copy_database(data_dir / DB_FILE, out / DB_FILE)
        if _read_keys(data_dir) == keys:
            break
        progress("network.keys changed during the copy (a key rotation); copying again")
    else:
        raise BackupError(f"{data_dir / KEYS_FILE} kept changing during the copy; try again later")
    if keys is not None:
        write_new_file(out / KEYS_FILE, keys)
    node_id, cluster_id, incarnation, records = _database_facts(out / DB_FILE)
    skipped: list[str] = []
    if include_artifacts:
        store_dir = data_dir / ARTIFACTS_DIR
        names = (
            sorted(p.name for p in store_dir.iterdir() if SHA256_PATTERN.fullmatch(p.name))
            if store_dir.is_dir()
            else []
        )
        (out / ARTIFACTS_DIR).mkdir(mode=PRIVATE_DIR_MODE)
        for name in names:
            if not _copy_artifact(store_dir / name, out / ARTIFACTS_DIR / name, name):
                skipped.append(name)
                progress(f"artifact {name} skipped: it was deleted or no longer hashes right (peers have it)")
        fsync_dir(out / ARTIFACTS_DIR)
    files = {
        str(p.relative_to(out)): _sha256_file(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "node_id": node_id,
        "cluster_id": cluster_id,
        "incarnation": incarnation,
        "records": records,
        "created_unix": round(time.time(), 3),
        "murmur_version": version,
        "files": files,
    }
    write_new_file(out / MANIFEST_FILE, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    fsync_dir(out)
    return BackupSummary(node_id, cluster_id, incarnation, records, files, tuple(skipped))


def _identity_node_id(path: Path) -> str:
    """The node id of an identity key file (mesh/trust/identity.py's format)."""
    try:
        seed = bytes.fromhex(
            read_bounded(path, IDENTITY_MAX_BYTES, "identity key", secret=True).decode("ascii")
        )
        key = nacl.signing.SigningKey(seed)
    except (FileRefused, OSError) as exc:
        raise BackupError(str(exc)) from None
    except (ValueError, UnicodeDecodeError, nacl.exceptions.ValueError, TypeError):
        raise BackupError(f"{path} is not an identity key (64 hex characters)") from None
    return node_id_for(bytes(key.verify_key))


def _load_manifest(backup_dir: Path) -> dict[str, object]:
    try:
        doc = json.loads(read_bounded(backup_dir / MANIFEST_FILE, MANIFEST_MAX_BYTES, "backup manifest"))
    except FileNotFoundError:
        raise BackupError(
            f"{backup_dir} has no {MANIFEST_FILE}: not a backup made by murmur backup"
        ) from None
    except (FileRefused, OSError, ValueError) as exc:
        raise BackupError(f"{backup_dir / MANIFEST_FILE} is unreadable: {exc}") from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != MANIFEST_FORMAT
        or not isinstance(doc.get("files"), dict)
    ):
        raise BackupError(f"{backup_dir / MANIFEST_FILE} is not a format-{MANIFEST_FORMAT} backup manifest")
    return doc


def verify(backup_dir: Path) -> BackupSummary:
    """Check a backup: every file hashes as backup.json says, the database is sound and the
    identity key is the database's node. BackupError says what is wrong."""
    doc = _load_manifest(backup_dir)
    files = {str(k): str(v) for k, v in dict(doc["files"]).items()}  # type: ignore[call-overload]
    for required in (IDENTITY_FILE, DB_FILE):
        if required not in files:
            raise BackupError(f"backup {backup_dir} lacks {required}")
    for name, sha256 in files.items():
        path = backup_dir / name
        if ".." in Path(name).parts or Path(name).is_absolute() or not path.is_file():
            raise BackupError(f"backup {backup_dir}: {name} is missing (or not a file inside the backup)")
        if _sha256_file(path) != sha256:
            raise BackupError(f"backup {backup_dir}: {name} does not hash as {MANIFEST_FILE} says: damaged")
    node_id, cluster_id, incarnation, records = _database_facts(backup_dir / DB_FILE)
    own = _identity_node_id(backup_dir / IDENTITY_FILE)
    if own != node_id or doc.get("node_id") != node_id:
        raise BackupError(f"backup {backup_dir}: its identity key is node {own}, its database node {node_id}")
    return BackupSummary(node_id, cluster_id, incarnation, records, files)


def restore(backup_dir: Path, data_dir: Path) -> BackupSummary:
    """Restore the verified backup `backup_dir` into `data_dir`, which must be missing or empty."""
    summary = verify(backup_dir)
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(
            f"data dir {data_dir} is not empty. Stop its agent and move the directory aside "
            f"(mv {data_dir} {data_dir}.old), then restore into the empty path"
        )
    make_private_dir(data_dir)
    os.chmod(data_dir, PRIVATE_DIR_MODE)
    lock = lock_data_dir(data_dir)  # no agent may start here until every file is in place
    try:
        for name in sorted(summary.files):
            target = data_dir / name
            if target.parent != data_dir and not target.parent.exists():
                target.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
            tmp = target.with_name(f".{target.name}.restoring")
            with (backup_dir / name).open("rb") as src, open(tmp, "xb") as dst:
                os.fchmod(dst.fileno(), SECRET_MODE)
                shutil.copyfileobj(src, dst, HASH_READ_BYTES)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)
        for directory in sorted({(data_dir / n).parent for n in summary.files}, reverse=True):
            fsync_dir(directory)
    finally:
        lock.close()  # agent.lock stays: every data dir has one
    return summary
