"""Key and token files: secrets others can read are refused with the chmod to run; every read is bounded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mesh.cli.manifest import read_manifest
from mesh.cli.murmur import main
from mesh.files import FileRefused, read_bounded
from mesh.trust.cluster import ClusterError, init_cluster, issue_token, load_token
from mesh.trust.opsign import load_signing_key


def test_a_join_token_others_can_read_is_refused_with_the_chmod(tmp_path: Path) -> None:
    cluster = init_cluster(tmp_path / "c")
    cluster.token_path.chmod(0o644)
    with pytest.raises(ClusterError) as info:
        load_token(cluster.token_path)
    assert str(info.value).endswith(f"Run: chmod 600 {cluster.token_path}")
    assert "readable by others (mode 0644)" in str(info.value)
    cluster.token_path.chmod(0o640)  # group-readable is refused too, as ssh does
    with pytest.raises(ClusterError, match="mode 0640"):
        load_token(cluster.token_path)
    cluster.token_path.chmod(0o600)
    assert load_token(cluster.token_path).cluster_id == cluster.cluster_id


def test_an_operator_key_others_can_read_is_refused_by_the_cli_and_invite(tmp_path: Path) -> None:
    cluster = init_cluster(tmp_path / "c")
    cluster.operator_key_path.chmod(0o644)
    with pytest.raises(ValueError, match=rf"Run: chmod 600 {cluster.operator_key_path}$"):
        load_signing_key(cluster.operator_key_path)
    with pytest.raises(ClusterError, match=rf"Run: chmod 600 {cluster.operator_key_path}$"):
        issue_token(cluster.path)


def test_agent_with_a_world_readable_token_prints_the_chmod(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = init_cluster(tmp_path / "c")
    cluster.token_path.chmod(0o644)
    argv = ["agent", "--data-dir", str(tmp_path / "n"), "--token", str(cluster.token_path)]
    argv += ["--region", "r1", "--bind", "127.0.0.1:0", "--api", "127.0.0.1:0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"join token {cluster.token_path} is readable by others (mode 0644)" in err
    assert f"chmod 600 {cluster.token_path}" in err
    assert not (tmp_path / "n").exists()  # refused before the data dir is touched


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_token_from_dev_zero_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"/dev/zero is too large \(over 16384 bytes\)"):
        load_token(Path("/dev/zero"))
    argv = ["agent", "--data-dir", str(tmp_path / "n"), "--token", "/dev/zero"]
    argv += ["--region", "r1", "--bind", "127.0.0.1:0", "--api", "127.0.0.1:0"]
    assert main(argv) == 1
    assert "too large" in capsys.readouterr().err
    print(f"\n--token /dev/zero refused after {time.monotonic() - started:.3f} s")


def test_every_key_read_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(FileRefused, match="too large"):
        read_bounded(Path("/dev/zero"), 1024, "operator key", secret=True)
    with pytest.raises(ValueError, match="too large"):
        load_signing_key(Path("/dev/zero"))
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: a\n" + "#" * 70_000 + "\n")
    from mesh.cli.client import CliError

    with pytest.raises(CliError, match="too large"):
        read_manifest(manifest)
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * 10)
    assert read_bounded(exact, 10, "file") == b"x" * 10


def test_agent_refuses_a_data_dir_of_another_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mesh.service.store import Store
    from mesh.trust.identity import load_or_create

    first = init_cluster(tmp_path / "a")
    other = init_cluster(tmp_path / "b")
    data_dir = tmp_path / "n"
    Store.open(data_dir, load_or_create(data_dir).node_id, first.cluster_id).close()  # its first life
    argv = ["agent", "--data-dir", str(data_dir), "--token", str(other.token_path)]
    argv += ["--region", "r1", "--bind", "127.0.0.1:0", "--api", "127.0.0.1:0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"data dir {data_dir} belongs to cluster {first.cluster_id}" in err
    assert f"the join token is for cluster {other.cluster_id}" in err
