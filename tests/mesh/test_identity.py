"""A node's identity: created once, private, stable."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from mesh.trust.identity import IDENTITY_FILE, IdentityError, load_or_create, node_id_for


def test_identity_is_created_private_and_persists(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    first = load_or_create(data_dir)
    assert stat.S_IMODE((data_dir / IDENTITY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    again = load_or_create(data_dir)
    assert again.node_id == first.node_id
    assert again.public_key == first.public_key


def test_node_id_is_derived_from_the_public_key(tmp_path: Path) -> None:
    identity = load_or_create(tmp_path)
    assert identity.node_id == hashlib.sha256(identity.public_key).hexdigest()[:16]
    assert node_id_for(identity.public_key) == identity.node_id


def test_different_data_dirs_get_different_ids(tmp_path: Path) -> None:
    assert load_or_create(tmp_path / "a").node_id != load_or_create(tmp_path / "b").node_id


def test_damaged_identity_is_refused_with_the_fix(tmp_path: Path) -> None:
    load_or_create(tmp_path)
    (tmp_path / IDENTITY_FILE).write_text("not hex at all")
    with pytest.raises(IdentityError, match=r"damaged.*restore it from a backup"):
        load_or_create(tmp_path)


def test_a_key_others_can_read_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    load_or_create(tmp_path)
    path = tmp_path / IDENTITY_FILE
    path.chmod(0o644)
    with pytest.raises(IdentityError, match=rf"readable by others \(mode 0644\).*Run: chmod 600 {path}"):
        load_or_create(tmp_path)
    path.chmod(0o600)
    load_or_create(tmp_path)


def test_a_data_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    load_or_create(data_dir)
    data_dir.chmod(0o777)
    refused = rf"writable by other users \(mode 0777\).*Run: chmod 700 {data_dir}"
    with pytest.raises(IdentityError, match=refused):
        load_or_create(data_dir)
