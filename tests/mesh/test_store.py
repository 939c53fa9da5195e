"""The node database: durable incarnation and peers; corruption is detected, not trusted."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gossip.records import Record
from mesh.service.store import DB_FILE, PEERS_MAX, PeerRecord, Store, StoreError


def test_incarnation_persists_and_never_goes_down(tmp_path: Path) -> None:
    store = Store.open(tmp_path, "n1")
    assert store.incarnation == 0
    store.set_incarnation(5)
    store.set_incarnation(3)
    store.close()
    store = Store.open(tmp_path, "n1")
    assert store.incarnation == 5
    store.close()


def test_database_uses_wal_and_full_sync(tmp_path: Path) -> None:
    Store.open(tmp_path, "n1").close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_peers_round_trip_and_are_bounded(tmp_path: Path) -> None:
    store = Store.open(tmp_path, "n1")
    store.save_peers([PeerRecord("a", "127.0.0.1:1", "r1", "127.0.0.1:2")])
    store.save_peers([PeerRecord("a", "127.0.0.1:9", "r1", "127.0.0.1:2")])
    assert store.peers() == [PeerRecord("a", "127.0.0.1:9", "r1", "127.0.0.1:2")]
    store.save_peers(PeerRecord(f"p{i:03}", f"127.0.0.1:{i}", "r1", "") for i in range(PEERS_MAX + 10))
    assert len(store.peers()) == PEERS_MAX
    store.close()


def test_garbage_database_is_reported_with_the_fix(tmp_path: Path) -> None:
    Store.open(tmp_path, "n1").close()
    (tmp_path / DB_FILE).write_bytes(b"this is not a database" * 500)
    with pytest.raises(StoreError, match=r"is corrupt.*move .* aside"):
        Store.open(tmp_path, "n1")


def test_damaged_page_is_reported(tmp_path: Path) -> None:
    store = Store.open(tmp_path, "n1")
    store.save_peers(PeerRecord(f"p{i:03}", f"127.0.0.1:{i}", "r1", "x" * 200) for i in range(PEERS_MAX))
    store.close()
    path = tmp_path / DB_FILE
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    page_size = int.from_bytes(data[16:18], "big")
    # Smash the b-tree pages after the schema page.
    data[page_size : 3 * page_size] = b"\xa5" * (2 * page_size)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="is corrupt"):
        Store.open(tmp_path, "n1")


def test_database_of_another_node_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path, "n1").close()
    with pytest.raises(StoreError, match="belongs to node n1"):
        Store.open(tmp_path, "n2")


def test_one_agent_per_data_dir(tmp_path: Path) -> None:
    first = Store.open(tmp_path, "n1")
    with pytest.raises(StoreError, match="in use by another murmur agent"):
        Store.open(tmp_path, "n1")
    first.close()
    Store.open(tmp_path, "n1").close()


def test_database_file_is_private(tmp_path: Path) -> None:
    Store.open(tmp_path, "n1").close()
    assert (tmp_path / DB_FILE).stat().st_mode & 0o077 == 0


_WRITER = """
import sys
from pathlib import Path
from mesh.service.store import PeerRecord, Store
store = Store.open(Path(sys.argv[1]), "n1")
i = store.incarnation
while True:
    i += 1
    store.set_incarnation(i)
    store.save_peers([PeerRecord(f"p{i % 100}", f"127.0.0.1:{i % 65536}", "r1", "")])
    print(i, flush=True)
"""


def test_kill_9_during_writes_leaves_a_sound_database(tmp_path: Path) -> None:
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        committed = [int(child.stdout.readline()) for _ in range(50)]
        child.kill()
        child.wait()
        child.stdout.close()
        store = Store.open(tmp_path, "n1")  # runs integrity_check
        assert store.incarnation >= committed[-1]
        store.close()


# --- records --------------------------------------------------------------------------------


def _records() -> list[Record]:
    import nacl.signing

    from gossip.records import sign_record

    key = nacl.signing.SigningKey(b"\x07" * 32)
    return [
        sign_record(key, "desired", "deployment/a", 10, "fleet", b'{"a":1}'),
        sign_record(key, "desired", "deployment/b", 11, "fleet", b"", deleted=True),
    ]


def test_records_survive_reopen_and_only_newer_versions_replace_a_row(tmp_path: Path) -> None:
    import nacl.signing

    from gossip.records import sign_record

    a, b = _records()
    store = Store.open(tmp_path, "n1")
    store.save_records([a, b])
    store.close()  # what a crash right after the commit leaves is checked by the kill -9 real test
    store = Store.open(tmp_path, "n1")
    assert store.load_records() == [a, b]
    key = nacl.signing.SigningKey(b"\x07" * 32)
    older = sign_record(key, "desired", "deployment/a", 9, "fleet", b'{"a":0}')
    newer = sign_record(key, "desired", "deployment/a", 12, "fleet", b'{"a":2}')
    store.save_records([older])
    assert store.load_records()[0] == a
    store.save_records([newer])
    assert store.load_records() == [newer, b]
    assert store.record_count() == 2
    store.close()


def test_a_record_row_that_does_not_decode_is_reported_as_corruption(tmp_path: Path) -> None:
    store = Store.open(tmp_path, "n1")
    store.save_records(_records())
    store.close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute("UPDATE records SET record = x'01c0' WHERE key = 'deployment/a'")
    conn.commit()
    conn.close()
    store = Store.open(tmp_path, "n1")
    with pytest.raises(StoreError, match=r"corrupt \(record desired/deployment/a does not decode"):
        store.load_records()
    store.close()


def test_a_schema_1_database_gains_the_records_table(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('node_id', 'n1'); PRAGMA user_version = 1;"
    )
    conn.close()
    store = Store.open(tmp_path, "n1")
    assert store.load_records() == []
    store.close()
