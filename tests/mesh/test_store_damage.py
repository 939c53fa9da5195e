"""Storage damage is reported, never silent: an emptied node.db, a damaged write-ahead log,
a database of another cluster, and record rows removed with a count."""

from __future__ import annotations

import logging
import random
import shutil
import sqlite3
from pathlib import Path

import nacl.signing
import pytest

from gossip.config import LOCAL
from gossip.node import GossipNode
from gossip.records import Record, sign_record
from gossip.state import StateStore, StoreLimits
from gossip.trust import StaticTrust
from mesh.service.restore import restore_records
from mesh.service.store import DB_FILE, Store, StoreError

KEY = nacl.signing.SigningKey(b"\x07" * 32)


def _record(i: int) -> Record:
    return sign_record(KEY, "desired", f"deployment/d{i}", 10 + i, "fleet", b'{"a":1}' + b" " * 2000)


def test_a_zero_byte_database_warns_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Store.open(tmp_path, "n1").close()
    store = Store.open(tmp_path, "n1")
    assert not store.empty_at_start
    store.close()
    (tmp_path / DB_FILE).write_bytes(b"")  # what a truncating crash or a bad copy leaves
    with caplog.at_level(logging.WARNING, logger="murmur.store"):
        store = Store.open(tmp_path, "n1")
    assert store.empty_at_start and store.damage["empty_at_start"] is True
    store.close()
    assert "was empty (0 bytes) although it existed" in caplog.text
    assert "starts over as if new" in caplog.text


def test_a_fresh_data_dir_is_not_reported_as_damaged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="murmur.store"):
        store = Store.open(tmp_path, "n1")
    assert store.damage == {
        "empty_at_start": False,
        "wal_lost_transactions": 0,
        "records_removed": 0,
        "records_removed_by_reason": {},
    }
    store.close()
    assert caplog.text == ""


def _crashed_copy(tmp_path: Path, transactions: int) -> Path:
    """A data dir as kill -9 leaves it: node.db and its write-ahead log, never checkpointed."""
    live = tmp_path / "live"
    live.mkdir()
    store = Store.open(live, "n1")
    for i in range(transactions):
        store.save_records([_record(i)])  # one committed transaction each
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in (DB_FILE, DB_FILE + "-wal"):
        shutil.copyfile(live / name, crashed / name)
    store.close()
    return crashed


def test_an_intact_write_ahead_log_loses_nothing(tmp_path: Path) -> None:
    crashed = _crashed_copy(tmp_path, 5)
    store = Store.open(crashed, "n1")
    assert store.wal_lost_transactions == 0
    assert len(store.load_records()) == 5
    store.close()


def test_commits_lost_to_a_damaged_write_ahead_log_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crashed = _crashed_copy(tmp_path, 5)
    wal = crashed / (DB_FILE + "-wal")
    data = bytearray(wal.read_bytes())
    page_size = int.from_bytes(data[8:12], "big")
    frame_bytes = 24 + page_size
    # Flip a byte in the page of the last frame of the 3rd transaction's group: SQLite's
    # recovery stops there and skips every commit after it.
    commits = [
        at
        for at in range(32, len(data) - frame_bytes + 1, frame_bytes)
        if int.from_bytes(data[at + 4 : at + 8], "big") != 0
    ]
    assert len(commits) >= 5
    damaged_at = commits[-3]
    data[damaged_at + 24 + 100] ^= 0xFF
    wal.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="murmur.store"):
        store = Store.open(crashed, "n1")
    held = len(store.load_records())
    assert store.wal_lost_transactions == 2
    assert store.damage["wal_lost_transactions"] == 2
    store.close()
    assert held < 5  # SQLite did skip them: the report is about a real loss
    assert "write-ahead log is damaged; 2 committed transaction(s)" in caplog.text


def test_a_torn_last_frame_is_an_interrupted_write_not_damage(tmp_path: Path) -> None:
    crashed = _crashed_copy(tmp_path, 3)
    wal = crashed / (DB_FILE + "-wal")
    data = bytearray(wal.read_bytes())
    data[-10] ^= 0xFF  # the end of the last frame: a write cut short before its commit returned
    wal.write_bytes(bytes(data))
    store = Store.open(crashed, "n1")
    assert store.wal_lost_transactions == 0
    store.close()


def test_a_data_dir_of_another_cluster_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path, "n1", cluster_id="0123456789abcdef").close()
    Store.open(tmp_path, "n1", cluster_id="0123456789abcdef").close()
    with pytest.raises(StoreError) as info:
        Store.open(tmp_path, "n1", cluster_id="fedcba9876543210")
    message = str(info.value)
    assert (
        "belongs to cluster 0123456789abcdef, but the join token is for cluster fedcba9876543210" in message
    )
    assert "pass a join token of that cluster" in message and "another --data-dir" in message
    Store.open(tmp_path, "n1", cluster_id="0123456789abcdef").close()  # the lock was released


def test_removed_rows_are_deleted_and_counted(tmp_path: Path) -> None:
    store = Store.open(tmp_path, "n1")
    store.save_records([_record(0), _record(1), _record(2)])
    store.remove_records({("desired", "deployment/d0"): "bad_signature", ("desired", "deployment/d2"): "x"})
    assert [r.key for r in store.load_records()] == ["deployment/d1"]
    assert store.damage["records_removed"] == 2
    assert store.damage["records_removed_by_reason"] == {"bad_signature": 1, "x": 1}
    store.close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 1
    conn.close()


# --- record rows re-verified at start ---------------------------------------------------------


def _state() -> StateStore:
    return StateStore(StaticTrust(operators=[bytes(KEY.verify_key)]), random.Random(1), region="north")


def test_a_tampered_record_row_is_removed_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(tmp_path, "n1")
    store.save_records([_record(0), _record(1)])
    store.close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    blob = conn.execute("SELECT record FROM records WHERE key = 'deployment/d0'").fetchone()[0]
    tampered = bytes(blob).replace(b'{"a":1}', b'{"a":9}')  # still decodes; the signature no longer holds
    assert tampered != bytes(blob)
    conn.execute("UPDATE records SET record = ? WHERE key = 'deployment/d0'", (tampered,))
    conn.commit()
    conn.close()

    store = Store.open(tmp_path, "n1")
    state = _state()
    with caplog.at_level(logging.INFO, logger="murmur.agent"):
        held = restore_records(state, store, store.load_records())
    assert held == 1
    assert state.get("desired", "deployment/d0") is None
    assert [r.key for r in store.load_records()] == ["deployment/d1"]  # removed from disk
    assert store.damage["records_removed_by_reason"] == {"bad_signature": 1}
    store.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "removed 1 rows" in warnings[0].getMessage() and "bad_signature 1" in warnings[0].getMessage()
    assert "failed verification" in warnings[0].getMessage()

    caplog.clear()
    store = Store.open(tmp_path, "n1")  # the next start finds nothing to remove
    with caplog.at_level(logging.WARNING, logger="murmur.agent"):
        assert restore_records(_state(), store, store.load_records()) == 1
    assert caplog.text == ""
    store.close()


def test_rows_of_a_full_store_are_kept(tmp_path: Path) -> None:
    store = Store.open(tmp_path, "n1")
    store.save_records([_record(0), _record(1)])
    node_state = GossipNode(
        "aaaaaaaaaaaaaaaa",
        "127.0.0.1:1",
        "north",
        random.Random(1),
        region_config=LOCAL,
        fleet_config=LOCAL,
        trust=StaticTrust(operators=[bytes(KEY.verify_key)]),
        store_limits=StoreLimits(records_max=1),
    ).state
    assert restore_records(node_state, store, store.load_records()) == 1
    assert store.record_count() == 2
    store.close()
