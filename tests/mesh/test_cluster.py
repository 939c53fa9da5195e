"""Cluster directories and join tokens."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import nacl.signing
import pytest

from mesh.trust.cluster import (
    TOKEN_MAX_BYTES,
    ClusterError,
    JoinToken,
    init_cluster,
    load_token,
    new_invite,
    parse_token,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_cluster_files_with_private_modes(tmp_path: Path) -> None:
    cluster = init_cluster(tmp_path / "c")
    assert len(cluster.cluster_id) == 16
    int(cluster.cluster_id, 16)
    assert _mode(cluster.operator_key_path) == 0o600
    assert _mode(cluster.token_path) == 0o600
    assert _mode(tmp_path / "c") == 0o700
    doc = json.loads((tmp_path / "c" / "cluster.json").read_text())
    assert doc["cluster_id"] == cluster.cluster_id
    assert len(bytes.fromhex(cluster.operator_key_path.read_text().strip())) == 32
    # No temporary files are left behind.
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "cluster.json",
        "join.token",
        "operator.key",
    ]


def test_token_round_trip(tmp_path: Path) -> None:
    cluster = init_cluster(tmp_path / "c")
    token = load_token(cluster.token_path)
    assert token.cluster_id == cluster.cluster_id
    assert len(token.network_keys) == 1 and len(token.network_keys[0]) == 32
    assert (
        base64.b64encode(token.operator_key).decode()
        == json.loads((tmp_path / "c" / "cluster.json").read_text())["operator_key"]
    )
    assert parse_token(token.to_json()) == token


def test_two_clusters_get_different_ids_and_keys(tmp_path: Path) -> None:
    a = load_token(init_cluster(tmp_path / "a").token_path)
    b = load_token(init_cluster(tmp_path / "b").token_path)
    assert a.cluster_id != b.cluster_id
    assert a.network_keys != b.network_keys


def test_init_refuses_to_overwrite_existing_cluster(tmp_path: Path) -> None:
    cluster = init_cluster(tmp_path / "c")
    before = cluster.operator_key_path.read_bytes()
    with pytest.raises(ClusterError, match="refusing to overwrite"):
        init_cluster(tmp_path / "c")
    assert cluster.operator_key_path.read_bytes() == before


def test_init_accepts_an_existing_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    init_cluster(tmp_path / "empty")
    assert (tmp_path / "empty" / "join.token").exists()


OPERATOR = nacl.signing.SigningKey(bytes(range(32)))


def _good_doc() -> dict[str, object]:
    invite = new_invite(OPERATOR, "0123456789abcdef", ttl_s=3600)
    token = JoinToken("0123456789abcdef", (bytes(32),), bytes(OPERATOR.verify_key), invite)
    doc: dict[str, object] = json.loads(token.to_json())
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "something-else"}, "kind"),
        ({"version": 1}, "format version 1"),
        ({"cluster_id": "xyz"}, "cluster_id"),
        ({"network_keys": []}, "network_keys"),
        ({"network_keys": ["not base64!"]}, "not valid base64"),
        ({"network_keys": [base64.b64encode(b"short").decode()]}, "5 bytes, expected 32"),
        ({"operator_key": 7}, "operator_key"),
        ({"invite": "!!"}, "not an invite (not base64)"),
        ({"invite": base64.b64encode(b"\x01junk").decode()}, "not an invite"),
        ({"cluster_id": "fedcba9876543210"}, "the invite is for cluster 0123456789abcdef"),
    ],
)
def test_bad_tokens_are_refused_with_the_reason(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    doc = _good_doc() | change
    path = tmp_path / "join.token"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    with pytest.raises(ClusterError, match="is not a murmur join token") as info:
        load_token(path)
    assert message in str(info.value)
    assert "murmur cluster init" in str(info.value)


def test_token_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "join.token"
    path.write_bytes(b"\x00\x01garbage")
    path.chmod(0o600)
    with pytest.raises(ClusterError, match=r"token .* is not a murmur join token: not JSON"):
        load_token(path)


def test_token_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="not found"):
        load_token(tmp_path / "nope.token")


def test_token_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "join.token"
    path.write_bytes(b" " * (TOKEN_MAX_BYTES + 1))
    path.chmod(0o600)
    with pytest.raises(ClusterError, match="too large"):
        load_token(path)
