"""Real agents behind a firewall that rejects one agent's gossip port with a TCP reset.

docs/design.md ("Refused connections", why a refusal cannot turn a live process
into a dead one) makes two claims, shown here with 5 `murmur agent` processes
(`lan`) on loopback in a network namespace of the test's own, where the rules go:

- TCP alone rejected: pings still get acks, so the member is never dead;
  push-pull with it fails (a join through it: `region.stream_failures`).
- TCP rejected and UDP cut (dropped, or rejected with ICMP port-unreachable):
  the member is unreachable and its port refuses, so it is declared dead early
  (`region.declared_dead_refused`); once the rules go it refutes with a higher
  incarnation and is alive everywhere, itself never stalled.

Needs `nft` or `iptables` (skipped without either). The bounds are functional
timeouts; the figures observed are printed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from mesh.netaddr import split_hostport
from tests.real.conftest import MeshFactory
from tests.real.netns import netns_id, private_netns
from tests.real.test_agents import STARTUP_TIMEOUT_S, _all_alive, _states, converged_region

pytestmark = pytest.mark.real

WATCH_S = 10.0  # how long a member behind a TCP-only reject is watched
DEAD_WITHIN_S = 15.0  # functional bound: silence alone would take the Lifeguard timeout
HOLD_S = 2.0  # the rules stay this long after the verdict: past the dead notice's retransmissions
ALIVE_WITHIN_S = 35.0  # the member's own push-pull (every 30 s in lan) tells it at the latest
UDP_MODES = ("drop", "icmp")
_TABLE = "murmur_test_fw"


class Firewall:
    """Input rules on one port, in the namespace it was made in (and nowhere else)."""

    def __init__(self, tool: str, netns: int) -> None:
        self.tool = tool
        self.netns = netns
        if tool == "nft":
            self._run("add", "table", "inet", _TABLE)
            self._run("add", "chain", "inet", _TABLE, "inp", "{ type filter hook input priority 0; }")

    def _run(self, *args: str) -> None:
        # The rules must land in the test's namespace: never on the host's tables.
        assert netns_id() == self.netns, "firewall command outside the test's namespace"
        done = subprocess.run([self.tool, *args], capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise OSError(f"{self.tool} {' '.join(args)}: {done.stderr.strip()}")

    def _add(self, proto: str, port: int, nft_action: str, iptables_target: str) -> None:
        if self.tool == "nft":
            self._run("add", "rule", "inet", _TABLE, "inp", *f"{proto} dport {port} {nft_action}".split())
        else:
            self._run(*f"-A INPUT -p {proto} --dport {port} -j {iptables_target}".split())

    def reject_tcp(self, port: int) -> None:
        """TCP to `port` refused with a reset, as `REJECT --reject-with tcp-reset` does."""
        self._add("tcp", port, "reject with tcp reset", "REJECT --reject-with tcp-reset")

    def cut_udp(self, port: int, mode: str) -> None:
        """UDP to `port` dropped ("drop") or rejected with ICMP port-unreachable ("icmp")."""
        if mode == "drop":
            self._add("udp", port, "drop", "DROP")
        else:
            self._add(
                "udp",
                port,
                "reject with icmpx type port-unreachable",
                "REJECT --reject-with icmp-port-unreachable",
            )

    def clear(self) -> None:
        if self.tool == "nft":
            self._run("flush", "chain", "inet", _TABLE, "inp")
        else:
            self._run("-F", "INPUT")


@pytest.fixture
def firewall() -> Iterator[Firewall]:
    """The test runs in a private namespace (only `lo`) with a firewall of its own."""
    tool = next((t for t in ("nft", "iptables") if shutil.which(t)), None)
    if tool is None:
        pytest.skip("needs nft (nftables) or iptables to add the REJECT rules; neither is installed")
    home = netns_id()
    with contextlib.ExitStack() as stack:
        try:
            inside = stack.enter_context(private_netns())
        except OSError as exc:
            pytest.skip(f"cannot make a private network namespace for the firewall rules: {exc}")
        assert inside != home
        try:
            wall = Firewall(tool, inside)
        except OSError as exc:
            pytest.skip(f"{tool} cannot add rules here (kernel without nf_tables/xt_REJECT?): {exc}")
        print(f"\nfirewall: {tool}, in a private network namespace")
        yield wall


def _port(agent: LocalAgent) -> int:
    return split_hostport(agent.gossip)[1]


def _counters(mesh: LocalMesh, agent: LocalAgent) -> dict[str, int]:
    """Runtime and core counters of /v1/health in one map ({} if it does not answer)."""
    health = mesh.get(agent, "/v1/health")
    if not isinstance(health, dict):
        return {}
    counters: dict[str, Any] = health["counters"]
    return {**counters["runtime"], **counters["core"]}


def _tcp_refused(agent: LocalAgent) -> bool:
    host, port = split_hostport(agent.gossip)
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


def test_tcp_reset_alone_keeps_the_member_alive_and_fails_push_pull_with_it(
    local_mesh: MeshFactory, firewall: Firewall
) -> None:
    mesh = local_mesh("lan")
    ids = converged_region(mesh, 5)
    member = mesh.agents[2]
    member_id = ids[member.name]
    others = [a for a in mesh.agents if a is not member]

    refutations_before = _counters(mesh, member).get("region.refutations", 0)
    firewall.reject_tcp(_port(member))
    assert _tcp_refused(member), "the rule is not in force"
    since = time.monotonic()
    # A newcomer seeded with the member and one other: its join is a push-pull with each.
    newcomer = mesh.add("a5", "r1", [mesh.agents[0], member])
    mesh.start(newcomer)
    seen: set[str | None] = set()
    while time.monotonic() < since + WATCH_S:
        states = _states(mesh, others, member_id)
        seen.update(states.values())
        assert "dead" not in states.values(), f"a member that answers pings was declared dead: {states}"
        assert newcomer.running, newcomer.log_tail()
        time.sleep(0.1)

    everyone = [*mesh.agents]
    newcomer_id = mesh.node_id(newcomer)
    assert newcomer_id is not None, "the newcomer's API does not answer"
    assert wait_until(lambda: _all_alive(mesh, everyone, [*ids.values(), newcomer_id]), STARTUP_TIMEOUT_S), {
        a.name: _states(mesh, everyone, i) for a, i in ((a, ids.get(a.name, newcomer_id)) for a in everyone)
    }
    joined = _counters(mesh, newcomer)
    # Its join with the member was refused; the one with agent a0 let it in.
    assert joined.get("region.stream_failures", 0) >= 1, joined
    assert joined.get("drop_stream_failed", 0) >= 1, joined
    totals = [_counters(mesh, a) for a in everyone if a is not member]
    failed = sum(c.get("region.stream_failures", 0) for c in totals)
    # A check is made only when a direct ack is late, and its refusal is dropped once the
    # probe is answered after all: nobody accused the member, so it never had to refute.
    refused = sum(c.get("conn_check_refused", 0) for c in totals)
    refuted = _counters(mesh, member).get("region.refutations", 0) - refutations_before
    assert refuted == 0, f"the member was accused {refuted} times ({refused} refused checks)"
    print(
        f"TCP reset alone, {WATCH_S:.0f} s: states of the member seen {sorted(str(s) for s in seen)}; "
        f"failed push-pulls (region.stream_failures, all): {failed}; refused checks (all): {refused}"
    )


def _quiet(mesh: LocalMesh, ids: list[str]) -> bool:
    """Everyone sees everyone alive, twice 0.5 s apart: no suspicion left from a round before."""
    if not _all_alive(mesh, mesh.agents, ids):
        return False
    time.sleep(0.5)
    return _all_alive(mesh, mesh.agents, ids)


def _cut_until_dead_then_restore(
    mesh: LocalMesh, firewall: Firewall, member: LocalAgent, ids: dict[str, str], mode: str
) -> str:
    """Reject TCP and cut UDP to `member` until all others show it dead (and HOLD_S more), then
    remove the rules until all show it alive again at a higher incarnation; what was seen."""
    member_id = ids[member.name]
    others = [a for a in mesh.agents if a is not member]
    assert wait_until(lambda: _quiet(mesh, list(ids.values())), ALIVE_WITHIN_S), "the mesh did not settle"
    incarnation = int(mesh.view(others[0])[member_id]["incarnation"])
    before = {a.name: _counters(mesh, a) for a in mesh.agents}
    member_view: set[str] = set()

    def dead_everywhere() -> bool:
        # The member itself keeps running and answering; it holds the others suspect at worst.
        assert member.running, member.log_tail()
        member_view.update(str(r["state"]) for i, r in mesh.view(member).items() if i != member_id)
        return all(s == "dead" for s in _states(mesh, others, member_id).values())

    def alive_everywhere() -> bool:
        assert member.running, member.log_tail()
        for observer in others:
            row = mesh.view(observer).get(member_id)
            if row is None or row["state"] != "alive" or int(row["incarnation"]) <= incarnation:
                return False
        return True

    def grew(name: str, agents: list[LocalAgent]) -> int:
        return sum(_counters(mesh, a).get(name, 0) - before[a.name].get(name, 0) for a in agents)

    firewall.reject_tcp(_port(member))
    firewall.cut_udp(_port(member), mode)
    cut = time.monotonic()
    assert wait_until(dead_everywhere, DEAD_WITHIN_S, 0.05), _states(mesh, others, member_id)
    dead_s = time.monotonic() - cut
    # The verdict came from refusals, not from the Lifeguard timeout alone.
    assert grew("region.declared_dead_refused", others) >= 1, f"no declared_dead_refused ({mode})"
    held: set[str | None] = set()  # the others' view while the rules stay
    until = time.monotonic() + HOLD_S
    while time.monotonic() < until:
        dead_everywhere()  # the member keeps running meanwhile
        held.update(_states(mesh, others, member_id).values())
        time.sleep(0.1)

    firewall.clear()
    opened = time.monotonic()
    assert wait_until(alive_everywhere, ALIVE_WITHIN_S, 0.05), _states(mesh, others, member_id)
    alive_s = time.monotonic() - opened
    assert "dead" not in member_view, f"the cut-off member declared others dead: {member_view}"
    assert grew("region.refutations", [member]) >= 1, "the member did not refute"
    return (
        f"TCP reset + UDP {mode}: dead at the 4 others {dead_s:.2f} s after the rules "
        f"(refused checks {grew('conn_check_refused', others)}, udp errors at the others "
        f"{grew('drop_udp_error', others)}); alive again everywhere (higher incarnation) "
        f"{alive_s:.2f} s after they went (reconnects {grew('region.reconnect_attempts', others)}, "
        f"the member's refutations {grew('region.refutations', [member])}); the others' view of it "
        f"in the {HOLD_S:.0f} s hold {sorted(str(x) for x in held)}; it saw them as {sorted(member_view)}"
    )


def test_tcp_reset_with_udp_cut_is_dead_early_and_alive_again_without_the_rules(
    local_mesh: MeshFactory, firewall: Firewall
) -> None:
    mesh = local_mesh("lan")
    ids = converged_region(mesh, 5)
    for mode in UDP_MODES:
        print(_cut_until_dead_then_restore(mesh, firewall, mesh.agents[2], ids, mode))
