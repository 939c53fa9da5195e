"""mDNS auto-join on a LAN of network namespaces: no seeds, every node finds every other.

The test builds its own LAN (docs: /work/shared/NETLAB.md recipe): a hub
namespace with a bridge and one namespace per host, veth pairs, addresses in
10.213.<n>.0/24. zeroconf binds only to each host's veth address, inside that
host's namespace. Everything (processes, namespaces) is removed in a finalizer,
also on failure. The 5 s bounds are the issue's functional bounds; the figures
observed are printed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from mesh.trust.cluster import JoinToken, init_cluster, issue_token, new_invite
from tests.real.netns import enter_netns

pytestmark = pytest.mark.real

HOSTS = 4
GOSSIP_PORT = 7946
API_PORT = 7800
JOIN_BOUND_S = 5.0
STARTUP_TIMEOUT_S = 20.0
REFUSE_WATCH_S = 5.0
STOP_GRACE_S = 3.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


@dataclass
class Host:
    ns: str
    addr: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _asker: ThreadPoolExecutor | None = None

    def asker(self) -> ThreadPoolExecutor:
        """A worker thread inside this host's namespace."""
        if self._asker is None:
            self._asker = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(self.ns,))
        return self._asker

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Lan:
    """Namespaces on a bridge; `host(i)` adds host i (10.213.<subnet>.i)."""

    prefix: str
    subnet: int
    root: Path
    hub: str
    namespaces: list[str] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)

    def host(self, i: int) -> Host:
        ns = f"{self.prefix}-h{i}"
        veth, peer = f"{self.prefix[-6:]}v{i}", f"{self.prefix[-6:]}p{i}"
        addr = f"10.213.{self.subnet}.{i}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", veth, "netns", ns)
        _ip("link", "set", peer, "netns", self.hub)
        _ip("-n", self.hub, "link", "set", peer, "master", "br0")
        _ip("-n", self.hub, "link", "set", peer, "up")
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", veth)
        _ip("-n", ns, "link", "set", veth, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", veth)  # multicast needs a route
        host = Host(ns, addr, self.root / f"h{i}.log")
        self.hosts.append(host)
        return host

    def start(self, host: Host, token: Path, region: str) -> None:
        cmd = [
            "ip", "netns", "exec", host.ns,  # exec: the pid is the agent itself
            sys.executable, "-m", "mesh.cli", "agent",
            "--data-dir", str(self.root / f"data-{host.ns}"),
            "--token", str(token),
            "--region", region,
            "--bind", f"{host.addr}:{GOSSIP_PORT}",
            "--api", f"{host.addr}:{API_PORT}",
            "--mdns-interface", host.addr,
            "--profile", "lan",
            "--log-level", "debug",
        ]  # fmt: skip
        with open(host.log_path, "ab") as log:
            host.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def close(self) -> None:
        for host in self.hosts:
            if host._asker is not None:
                host._asker.shutdown(wait=True, cancel_futures=True)
        for host in self.hosts:
            if host.process is not None and host.process.poll() is None:
                host.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for host in self.hosts:
            if host.process is not None:
                try:
                    host.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    host.process.kill()
                    host.process.wait()
        for ns in [*self.namespaces, self.hub]:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    """A bridge namespace; hosts are added by the test. Removed afterwards, even on failure."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns add)")
    prefix = f"mm{secrets.token_hex(3)}"
    hub = f"{prefix}-hub"
    created = _ip("netns", "add", hub, check=False)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace (ip netns add: {created.stderr.strip()})")
    net = Lan(prefix, secrets.randbelow(250) + 1, tmp_path, hub)
    try:
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        yield net
    finally:
        net.close()
        leftover = [ns for ns in _ip("netns", "list", check=False).stdout.split() if ns.startswith(prefix)]
        assert not leftover, f"namespaces left behind: {leftover}"


def _get_nodes(url: str) -> list[dict[str, Any]] | None:
    """GET /v1/nodes, what `murmur nodes --json` prints; None if it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/v1/nodes", timeout=2) as resp:
            rows = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, list) else None


def _nodes(hosts: list[Host]) -> list[list[dict[str, Any]] | None]:
    """Each host's member list, asked from inside its own namespace, all at once.

    Each host has a worker thread that entered its namespace (setns is per thread):
    polling without a process per query keeps the times measured close to the mesh's
    own, even on a loaded 2-CPU machine.
    """
    futures = [h.asker().submit(_get_nodes, f"http://{h.addr}:{API_PORT}") for h in hosts]
    return [f.result(timeout=10) for f in futures]


def _alive(rows: list[dict[str, Any]] | None) -> set[str]:
    return {str(r["id"]) for r in rows or [] if r.get("state") == "alive"}


def _listed(rows: list[dict[str, Any]] | None) -> set[str]:
    return {str(r["id"]) for r in rows or []}


def _self_id(host: Host) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        assert host.process is not None and host.process.poll() is None, (
            f"{host.ns} exited:\n{host.log_tail()}"
        )
        rows = _nodes([host])[0]
        if rows:
            return next(str(r["id"]) for r in rows if r.get("addr") == f"{host.addr}:{GOSSIP_PORT}")
        time.sleep(0.1)
    raise AssertionError(f"{host.ns} API did not answer:\n{host.log_tail()}")


def test_four_hosts_auto_join_by_mdns_and_another_cluster_is_never_admitted(lan: Lan) -> None:
    ours = init_cluster(lan.root / "ours")
    theirs = init_cluster(lan.root / "theirs")
    hosts = [lan.host(i) for i in range(1, HOSTS + 1)]
    outsider = lan.host(HOSTS + 1)

    for host in hosts:
        lan.start(host, ours.token_path, "lan1")
    last_start = time.monotonic()

    converged_s: float | None = None
    views: list[list[dict[str, Any]] | None] = []
    first_answer_s: float | None = None
    while time.monotonic() - last_start < STARTUP_TIMEOUT_S:
        for host in hosts:
            assert host.process is not None and host.process.poll() is None, (
                f"{host.ns} exited:\n{host.log_tail()}"
            )
        views = _nodes(hosts)
        done_s = time.monotonic() - last_start
        if first_answer_s is None and all(v is not None for v in views):
            first_answer_s = done_s
        if all(len(_alive(v)) == HOSTS for v in views):
            converged_s = done_s
            break
        time.sleep(0.05)
    seen = {h.ns: sorted(_alive(v)) for h, v in zip(hosts, views, strict=True)}
    assert converged_s is not None, f"no convergence; alive per host: {seen}\n{hosts[-1].log_tail()}"
    print(
        f"\n{HOSTS} hosts, no seeds: every `murmur nodes --json` lists all {HOSTS} alive "
        f"{converged_s:.2f} s after the last start (all APIs answering at {first_answer_s or 0:.2f} s)"
    )
    assert converged_s <= JOIN_BOUND_S, f"auto-join took {converged_s:.2f} s, over {JOIN_BOUND_S} s"
    ids = _alive(views[0])
    # No seeds were given, so every join went through an mDNS find (a node may be found by the
    # others before it finds them, so not every log has one).
    assert any("mDNS found" in h.log_path.read_text(errors="replace") for h in hosts)

    lan.start(outsider, theirs.token_path, "lan1")
    outsider_id = _self_id(outsider)
    watch_start = time.monotonic()
    while time.monotonic() - watch_start < REFUSE_WATCH_S:
        *inside, outside = _nodes([*hosts, outsider])
        for host, rows in zip(hosts, inside, strict=True):
            assert outsider_id not in _listed(rows), f"{host.ns} admitted the other cluster's node"
        assert not (_listed(outside) & ids), f"the other cluster's node lists ours: {outside}"
        time.sleep(0.2)
    outsider_log = outsider.log_path.read_text(errors="replace")
    assert "another cluster" in outsider_log, "the outsider never saw (and ignored) our advertisements"
    assert "mDNS found" not in outsider_log
    print(f"another cluster's node ignored and never admitted for {REFUSE_WATCH_S:.0f} s")


def _write_token(path: Path, token: JoinToken) -> Path:
    path.write_text(token.to_json())
    path.chmod(0o600)
    return path


def _forged_token(cluster_dir: Path) -> JoinToken:
    """Our network key and operator id, but the invite is signed by somebody else's key."""
    real = issue_token(cluster_dir, ttl_s=3600)
    mallory = nacl.signing.SigningKey.generate()
    fake = new_invite(mallory, real.cluster_id, ttl_s=3600)
    forged = dataclasses.replace(real.invite, signature=fake.signature)
    return dataclasses.replace(real, invite=forged)


def _wait_alive(hosts: list[Host], count: int, since: float) -> float:
    """Seconds after `since` until every host lists `count` alive members (AssertionError after 20 s)."""
    views: list[list[dict[str, Any]] | None] = []
    while time.monotonic() - since < STARTUP_TIMEOUT_S:
        views = _nodes(hosts)
        if all(len(_alive(v)) == count for v in views):
            return time.monotonic() - since
        time.sleep(0.05)
    seen = {h.ns: sorted(_alive(v)) for h, v in zip(hosts, views, strict=True)}
    raise AssertionError(f"no convergence to {count}; alive per host: {seen}\n{hosts[-1].log_tail()}")


def test_invited_device_auto_joins_and_expired_or_forged_invites_are_refused_on_both_sides(lan: Lan) -> None:
    ours = init_cluster(lan.root / "ours")
    hosts = [lan.host(i) for i in range(1, HOSTS + 1)]
    for host in hosts[:-1]:
        lan.start(host, ours.token_path, "lan1")
    _wait_alive(hosts[:-1], HOSTS - 1, time.monotonic())

    # A new device with a token from `murmur invite` (for its region): found by mDNS, admitted.
    invited = _write_token(lan.root / "invited.token", issue_token(ours.path, ttl_s=3600, region="lan1"))
    lan.start(hosts[-1], invited, "lan1")
    joined_s = _wait_alive(hosts, HOSTS, time.monotonic())
    print(
        f"\na device with a fresh invite is listed alive by all {HOSTS} hosts "
        f"{joined_s:.2f} s after its start"
    )
    assert joined_s <= JOIN_BOUND_S

    # Two devices with our network key but no valid invite: one expired an hour ago, one forged.
    expired = _write_token(
        lan.root / "expired.token", issue_token(ours.path, ttl_s=3600, now_unix=time.time() - 7200)
    )
    forged = _write_token(lan.root / "forged.token", _forged_token(ours.path))
    bad = [(lan.host(HOSTS + 1), expired, "invite_expired"), (lan.host(HOSTS + 2), forged, "invite_forged")]
    for host, token, _reason in bad:
        lan.start(host, token, "lan1")
    bad_ids = {_self_id(host): reason for host, _token, reason in bad}
    watch_start = time.monotonic()
    while time.monotonic() - watch_start < REFUSE_WATCH_S:
        for host, rows in zip(hosts, _nodes(hosts), strict=True):
            assert not (_listed(rows) & bad_ids.keys()), f"{host.ns} admitted a device without a valid invite"
        time.sleep(0.2)
    logs = "".join(h.log_path.read_text(errors="replace") for h in hosts)
    for (host, _token, reason), node_id in zip(bad, bad_ids, strict=True):
        assert f"refused to admit node {node_id}: {reason}" in logs, f"no member logged refusing {node_id}"
        own_log = host.log_path.read_text(errors="replace")
        assert f"this node's invite is not valid ({reason}" in own_log, host.log_tail()
    print(
        f"expired and forged invites: never listed for {REFUSE_WATCH_S:.0f} s; refusals logged on both sides"
    )
