"""`murmur backup` / `murmur restore` on a data dir whose database is open (as under a running agent)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from gossip.kinds import FLEET_SCOPE
from gossip.records import sign_record
from mesh.cli.murmur import main
from mesh.service.artifacts import ArtifactStore
from mesh.service.backup import MANIFEST_FILE, BackupError, backup, restore, verify
from mesh.service.netkeys import KEYS_FILE, KeyFile, load_key_file, save_key_file
from mesh.service.store import DB_FILE, Store, StoreError
from mesh.trust.identity import IDENTITY_FILE, Identity, load_or_create

CLUSTER = "c0ffee"


def _live_data_dir(root: Path, records: int = 3) -> tuple[Identity, Store]:
    """A data dir with an identity, network keys and an OPEN store holding `records` records."""
    identity = load_or_create(root)
    save_key_file(root, KeyFile((b"k" * 32, b"j" * 32), ("retired1",)))
    store = Store.open(root, identity.node_id, CLUSTER)
    store.set_incarnation(7)
    store.save_records(
        sign_record(identity.signing_key, "desired", f"app{i}", i + 1, FLEET_SCOPE, b"payload")
        for i in range(records)
    )
    return identity, store


def test_backup_of_an_open_store_restores_the_same_node_records_and_keys(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    identity, store = _live_data_dir(data_dir)
    try:
        # The agent's lock is held and the commits may still be in the -wal only: a plain
        # copy of node.db would miss them; the online backup API does not.
        with pytest.raises(StoreError, match="in use"):
            Store.open(data_dir, identity.node_id)
        assert (data_dir / f"{DB_FILE}-wal").stat().st_size > 0
        summary = backup(data_dir, tmp_path / "bk")
        records = store.load_records()
    finally:
        store.close()
    assert (summary.node_id, summary.cluster_id, summary.incarnation, summary.records) == (
        identity.node_id,
        CLUSTER,
        7,
        3,
    )
    assert sorted(summary.files) == sorted([DB_FILE, IDENTITY_FILE, KEYS_FILE])
    assert stat.S_IMODE((tmp_path / "bk").stat().st_mode) == 0o700
    assert all(stat.S_IMODE((tmp_path / "bk" / n).stat().st_mode) == 0o600 for n in summary.files)

    restored_dir = tmp_path / "restored"
    restore(tmp_path / "bk", restored_dir)
    assert load_or_create(restored_dir).node_id == identity.node_id
    assert load_key_file(restored_dir) == KeyFile((b"k" * 32, b"j" * 32), ("retired1",))
    again = Store.open(restored_dir, identity.node_id, CLUSTER)
    try:
        assert again.load_records() == records
        assert again.incarnation == 7
    finally:
        again.close()


def test_restore_refuses_a_data_dir_that_is_not_empty(tmp_path: Path) -> None:
    _identity, store = _live_data_dir(tmp_path / "node")
    backup(tmp_path / "node", tmp_path / "bk")
    with pytest.raises(BackupError, match=r"not empty\. Stop its agent and move the directory aside"):
        restore(tmp_path / "bk", tmp_path / "node")
    store.close()


def test_a_damaged_backup_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    _identity, store = _live_data_dir(tmp_path / "node")
    store.close()
    backup(tmp_path / "node", tmp_path / "bk")
    db = tmp_path / "bk" / DB_FILE
    data = bytearray(db.read_bytes())
    data[-100] ^= 0xFF
    db.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=f"{DB_FILE} does not hash as backup.json says"):
        restore(tmp_path / "bk", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_a_backup_whose_key_is_another_node_is_refused(tmp_path: Path) -> None:
    _identity, store = _live_data_dir(tmp_path / "node")
    store.close()
    backup(tmp_path / "node", tmp_path / "bk")
    other = load_or_create(tmp_path / "other")
    key_path = tmp_path / "bk" / IDENTITY_FILE
    key_path.write_bytes(bytes(other.signing_key).hex().encode() + b"\n")
    manifest = json.loads((tmp_path / "bk" / MANIFEST_FILE).read_text())
    manifest["files"][IDENTITY_FILE] = hashlib.sha256(key_path.read_bytes()).hexdigest()
    (tmp_path / "bk" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match=f"identity key is node {other.node_id}"):
        verify(tmp_path / "bk")


def test_backup_needs_a_data_dir_and_a_new_out(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="is not a node's data dir"):
        backup(tmp_path, tmp_path / "bk")
    _identity, store = _live_data_dir(tmp_path / "node")
    store.close()
    (tmp_path / "bk").mkdir()
    (tmp_path / "bk" / "x").write_text("x")
    with pytest.raises(BackupError, match="is not an empty directory"):
        backup(tmp_path / "node", tmp_path / "bk")


def test_artifacts_only_with_the_flag_whole_and_verified(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    _identity, store = _live_data_dir(data_dir)
    store.close()
    artifacts = ArtifactStore(data_dir / "artifacts", size_max_bytes=1 << 20)
    good = b"model bytes" * 1000
    good_id = hashlib.sha256(good).hexdigest()
    writer = artifacts.begin(good_id, len(good))
    writer.write(good)
    writer.commit()
    rotten_id = hashlib.sha256(b"the original").hexdigest()
    (data_dir / "artifacts" / rotten_id).write_bytes(b"bit rot")  # no longer what its name says
    (data_dir / "artifacts" / f".partial-{'ab' * 32}").write_bytes(b"half")

    plain = backup(data_dir, tmp_path / "plain")
    assert not any(name.startswith("artifacts/") for name in plain.files)

    full = backup(data_dir, tmp_path / "full", include_artifacts=True)
    assert [n for n in full.files if n.startswith("artifacts/")] == [f"artifacts/{good_id}"]
    assert full.artifacts_skipped == (rotten_id,)
    restore(tmp_path / "full", tmp_path / "restored")
    assert ArtifactStore(tmp_path / "restored" / "artifacts", size_max_bytes=1 << 20).size(good_id) == len(
        good
    )
    assert (tmp_path / "restored" / "artifacts" / good_id).read_bytes() == good


def test_cli_backup_and_restore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    identity, store = _live_data_dir(tmp_path / "node")
    try:
        assert main(["backup", "--data-dir", str(tmp_path / "node"), str(tmp_path / "bk"), "--json"]) == 0
    finally:
        store.close()
    doc = json.loads(capsys.readouterr().out)
    assert (doc["node_id"], doc["records"], doc["files"]) == (identity.node_id, 3, 3)
    assert json.loads((tmp_path / "bk" / MANIFEST_FILE).read_text())["murmur_version"]
    assert main(["restore", "--data-dir", str(tmp_path / "new"), str(tmp_path / "bk")]) == 0
    out = capsys.readouterr().out
    assert f"restored node {identity.node_id} (3 records, incarnation 7)" in out
    assert main(["restore", "--data-dir", str(tmp_path / "new"), str(tmp_path / "bk")]) == 1
    assert "murmur restore: error: data dir" in capsys.readouterr().err
    assert os.listdir(tmp_path / "new")
