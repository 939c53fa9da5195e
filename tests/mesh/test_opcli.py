"""The operator commands' local parts: key lookup, manifest files, tables, --wait's bound."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest

from mesh.cli import deploy as opcli
from mesh.cli.client import CliError
from mesh.cli.manifest import read_manifest
from mesh.cli.murmur import build_parser, main
from mesh.cli.signing import resolve_key
from mesh.trust.cluster import init_cluster


def _args(**kwargs: object) -> argparse.Namespace:
    return argparse.Namespace(**{"key": None, "cluster": None, **kwargs})


def test_the_key_comes_from_flags_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = init_cluster(tmp_path / "c")
    monkeypatch.delenv("MURMUR_KEY", raising=False)
    monkeypatch.delenv("MURMUR_CLUSTER", raising=False)
    with pytest.raises(CliError, match="no operator key: pass --key FILE"):
        resolve_key(_args())
    from_cluster = resolve_key(_args(cluster=str(cluster.path)))
    from_key = resolve_key(_args(key=str(cluster.operator_key_path)))
    assert bytes(from_cluster) == bytes(from_key)
    monkeypatch.setenv("MURMUR_CLUSTER", str(cluster.path))
    assert bytes(resolve_key(_args())) == bytes(from_key)
    with pytest.raises(CliError, match="not found"):
        resolve_key(_args(key=str(tmp_path / "nope")))


def test_artifact_file_is_hashed_by_the_cli(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx" * 1000)
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: a\nmodel: {name: m, version: v}\nartifact: {file: model.onnx}\nreplicas: 1\n")
    deployment = read_manifest(manifest)
    assert deployment.artifact_sha256 == hashlib.sha256(b"onnx" * 1000).hexdigest()
    assert deployment.artifact_size_bytes == 4000
    manifest.write_text("name: a\nmodel: {name: m, version: v}\nartifact: {file: gone.onnx}\nreplicas: 1\n")
    with pytest.raises(CliError, match=r"m.yaml: artifact.file: cannot read"):
        read_manifest(manifest)
    manifest.write_text(
        "name: a\nmodel: {name: m, version: v}\nartifact: {file: model.onnx, md5: y}\nreplicas: 1\n"
    )
    with pytest.raises(
        CliError,
        match=r"artifact\.md5: give either artifact\.file or sha256 and size_bytes \(sha256 and",
    ):
        read_manifest(manifest)


def test_a_file_pinned_by_sha256_and_size_must_match_them(tmp_path: Path) -> None:
    data = b"onnx" * 1000
    (tmp_path / "model.onnx").write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    manifest = tmp_path / "m.yaml"
    head = "name: a\nmodel: {name: m, version: v}\nreplicas: 1\nartifact:\n  file: model.onnx\n"
    manifest.write_text(head + f"  sha256: {sha256}\n  size_bytes: 4000\n")
    assert read_manifest(manifest).artifact_sha256 == sha256
    manifest.write_text(head + f'  sha256: "{"0" * 64}"\n')
    with pytest.raises(CliError, match=r"artifact\.sha256: the manifest pins 0{64}, but .*model.onnx has"):
        read_manifest(manifest)
    manifest.write_text(head + "  size_bytes: 4001\n")
    with pytest.raises(CliError, match=r"artifact\.size_bytes: the manifest pins 4001, but .* has 4000"):
        read_manifest(manifest)


def test_an_invalid_manifest_fails_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "name: a\nmodel: {name: m, version: v}\nartifact: {sha256: x, size_bytes: 1}\nreplicas: 1\n"
    )
    assert main(["--node", "http://127.0.0.1:9", "deploy", str(manifest)]) == 1
    assert "artifact.sha256: 'x' is not valid" in capsys.readouterr().err


def test_tables_and_parser() -> None:
    assert opcli.format_deployments([]).startswith("NAME")
    row = {
        "name": "a",
        "version": 5,
        "author": "x",
        "manifest": {"model": {"name": "m", "version": "1"}, "replicas": {"r1": 2}, "priority": 3},
    }
    assert "m:1" in opcli.format_deployments([row]) and '{"r1":2}' in opcli.format_deployments([row])
    unreadable = {"name": "b", "version": 6, "author": "x", "manifest": None, "error": "stored payload..."}
    assert opcli.format_deployments([unreadable]).endswith("\nb: stored payload...")
    args = build_parser().parse_args(["get", "deployments", "--json", "--node", "http://x:1"])
    assert args.node == "http://x:1" and args.json and args.key is None


def test_a_manifest_file_is_read_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (64 * 1024 + 1))
    assert main(["--node", "http://127.0.0.1:9", "deploy", str(big)]) == 1
    assert "is too large (over 65536 bytes)" in capsys.readouterr().err
    odd = tmp_path / "odd.yaml"
    odd.write_text("name: a\nmodel: {name: m, version: v}\nartifact: {file: m, 1: 2, b: 3}\nreplicas: 1\n")
    assert main(["--node", "http://127.0.0.1:9", "deploy", str(odd)]) == 1
    assert "artifact.1: give either artifact.file or sha256" in capsys.readouterr().err
