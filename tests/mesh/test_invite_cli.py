"""`murmur invite`: tokens with fresh operator-signed invites, and every way it refuses."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from gossip.admission import invite_problem
from gossip.trust import StaticTrust
from mesh.cli.murmur import main
from mesh.trust.cluster import load_token


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    assert main(["cluster", "init", "--out", str(tmp_path / "c"), "--ttl", "2h"]) == 0
    return tmp_path / "c"


def _trust(token_path: Path) -> StaticTrust:
    token = load_token(token_path)
    return StaticTrust(operators=[token.operator_key], cluster_id=token.cluster_id)


def test_init_token_carries_a_valid_invite_for_its_ttl(cluster: Path) -> None:
    token = load_token(cluster / "join.token")
    assert abs(token.invite.expires_at_s - (time.time() + 7200)) < 60
    assert (
        invite_problem(token.invite, _trust(cluster / "join.token"), region="any", at_s=int(time.time()))
        is None
    )


def test_invite_writes_a_private_token_for_one_region(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = cluster.parent / "store-17.token"
    argv = ["invite", "--cluster", str(cluster), "--region", "store-17", "--ttl", "30m", "--uses", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "region store-17, 3 devices" in capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    token = load_token(out)
    first = load_token(cluster / "join.token")
    assert token.network_keys == first.network_keys and token.cluster_id == first.cluster_id
    assert token.invite.nonce != first.invite.nonce
    assert token.invite.uses == 3 and first.invite.uses == 0
    trust = _trust(out)
    now = int(time.time())
    assert invite_problem(token.invite, trust, region="store-17", at_s=now) is None
    assert invite_problem(token.invite, trust, region="store-18", at_s=now) == "invite_wrong_region"
    assert invite_problem(token.invite, trust, region="store-17", at_s=now + 3600) == "invite_expired"
    # Never overwrites a token.
    assert main(["invite", "--cluster", str(cluster), "--out", str(out)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


def test_invite_to_stdout_with_the_cluster_from_the_environment(
    cluster: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MURMUR_CLUSTER", str(cluster))
    assert main(["invite"]) == 0
    captured = capsys.readouterr()
    assert '"kind": "murmur-join-token"' in captured.out and "any region" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["invite"], "--cluster DIR"),
        (["invite", "--cluster", "/nonexistent/dir"], "not a cluster directory"),
    ],
)
def test_invite_refusals_say_what_to_do(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MURMUR_CLUSTER", raising=False)
    assert main(argv) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags",
    [
        ["--ttl", "0"],
        ["--ttl", "-5m"],
        ["--ttl", "soon"],
        ["--ttl", "11000d"],
        ["--uses", "0"],
        ["--uses", "x"],
    ],
)
def test_bad_ttls_and_uses_are_rejected_by_the_parser(cluster: Path, flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(["invite", "--cluster", str(cluster), *flags])
