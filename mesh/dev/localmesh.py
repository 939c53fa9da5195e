"""A mesh of `murmur agent` processes on 127.0.0.1, for `murmur demo` and the real-process tests.

Every agent is a child process in its own session (Ctrl-C in a terminal reaches
only the parent, which stops the agents gracefully) and, on Linux, asks the
kernel to SIGTERM it if the parent dies, so even a kill -9 of the parent leaves
no agent behind. `LocalMesh.close()` stops whatever is still running: SIGTERM,
then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.trust.cluster import init_cluster

HOST = "127.0.0.1"
STOP_GRACE_S = 5.0
HTTP_TIMEOUT_S = 1.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def _reserved_ports(count: int) -> Iterator[list[int]]:
    """`count` distinct ports free for TCP and UDP on 127.0.0.1, held until the block exits."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(tcp)
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind((HOST, port))
            except OSError:
                udp.close()
                continue
            held.append(udp)
            ports.append(port)
        yield ports
    finally:
        for sock in held:
            sock.close()


@dataclass
class LocalAgent:
    """One agent of a LocalMesh."""

    name: str
    region: str
    gossip: str
    api: str
    data_dir: Path
    log_path: Path
    seeds: tuple[str, ...]
    token: Path | None = None  # its own join token (None: the mesh's first token)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.api}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def maps_package(self, package: str) -> bool:
        """Whether a native library of the Python package `package` (numpy, onnxruntime) is
        mapped in this agent's process: the package has been imported there."""
        if self.process is None:
            return False
        try:
            maps = Path(f"/proc/{self.process.pid}/maps").read_text()
        except OSError:
            return False
        return any(package in Path(line.rpartition(" ")[2]).parts for line in maps.splitlines())

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of this agent's log (for error messages)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class LocalMesh:
    """A cluster directory and a set of agent processes under `root`."""

    root: Path
    profile: str = "local"
    debug_hooks: bool = True
    agents: list[LocalAgent] = field(default_factory=list)
    token_path: Path | None = None
    agent_flags: tuple[str, ...] = ()  # more `murmur agent` flags, for every agent (set before start)
    _ports: set[int] = field(default_factory=set)

    def init(self) -> str:
        """Create the cluster; returns its id."""
        cluster = init_cluster(self.root / "cluster")
        self.token_path = cluster.token_path
        return cluster.cluster_id

    def add(
        self, name: str, region: str, seeds: Sequence[LocalAgent] = (), token: Path | None = None
    ) -> LocalAgent:
        """Define an agent with fresh ports (not started); `token`: its own join token."""
        while True:
            with _reserved_ports(2) as (gossip_port, api_port):
                pass
            if gossip_port not in self._ports and api_port not in self._ports:
                break
        self._ports.update((gossip_port, api_port))
        agent = LocalAgent(
            name=name,
            region=region,
            gossip=f"{HOST}:{gossip_port}",
            api=f"{HOST}:{api_port}",
            data_dir=self.root / "nodes" / name,
            log_path=self.root / "logs" / f"{name}.log",
            seeds=tuple(s.gossip for s in seeds),
            token=token,
        )
        self.agents.append(agent)
        return agent

    def command(self, agent: LocalAgent) -> list[str]:
        """The `murmur agent` command line of `agent`."""
        assert self.token_path is not None, "call init() first"
        cmd = [
            sys.executable,
            "-m",
            "mesh.cli",
            "agent",
            "--data-dir",
            str(agent.data_dir),
            "--token",
            str(agent.token or self.token_path),
            "--region",
            agent.region,
            "--bind",
            agent.gossip,
            "--api",
            agent.api,
            "--profile",
            self.profile,
            # Seeds only: mDNS would bind on the host when the demo runs outside a namespace.
            "--no-mdns",
        ]
        for seed in agent.seeds:
            cmd += ["--seed", seed]
        if self.debug_hooks:
            cmd.append("--debug-hooks")
        return cmd + list(self.agent_flags)

    def start(self, agent: LocalAgent) -> None:
        """Start (or restart) `agent`; its output is appended to its log file."""
        assert not agent.running, f"{agent.name} is already running"
        agent.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(agent.log_path, "ab") as log:
            agent.process = subprocess.Popen(
                self.command(agent),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        agent.starts += 1

    def kill(self, agent: LocalAgent) -> None:
        """SIGKILL `agent` (a crash) and reap it."""
        if agent.process is not None and agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait()

    def stop(self, agent: LocalAgent, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM `agent`, SIGKILL after `grace_s`; its exit code (None if it had to be killed)."""
        process = agent.process
        if process is None:
            return None
        if process.poll() is not None:
            return process.returncode
        process.terminate()
        try:
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None

    def close(self) -> dict[str, int | None]:
        """Stop every agent still running (SIGTERM to all at once, then SIGKILL); exit codes by name."""
        running = [a for a in self.agents if a.running]
        for agent in running:
            assert agent.process is not None
            with contextlib.suppress(ProcessLookupError):
                agent.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        codes: dict[str, int | None] = {}
        for agent in running:
            assert agent.process is not None
            try:
                codes[agent.name] = agent.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait()
                codes[agent.name] = None
        return codes

    def kill_all(self) -> None:
        """SIGKILL every agent still running and reap it: a test's cleanup, where a graceful stop
        (the leave and its 1 s linger, mesh/service/launch.py) would only cost time."""
        for agent in self.agents:
            self.kill(agent)

    def __enter__(self) -> LocalMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- observing ---------------------------------------------------------------------------

    @staticmethod
    def get(agent: LocalAgent, path: str, params: dict[str, str] | None = None) -> Any:
        """GET `path` from the agent's API as JSON; None if it does not answer 200."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{agent.url}{path}{query}", timeout=HTTP_TIMEOUT_S) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    @staticmethod
    def post(agent: LocalAgent, path: str, doc: dict[str, Any]) -> Any:
        """POST JSON to the agent's API; the JSON answer, or None on failure."""
        request = urllib.request.Request(
            f"{agent.url}{path}",
            data=json.dumps(doc).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def view(self, observer: LocalAgent, region: str | None = None) -> dict[str, dict[str, Any]]:
        """The observer's members by node id ({} if it does not answer)."""
        rows = self.get(observer, "/v1/nodes", {"region": region} if region else None)
        if not isinstance(rows, list):
            return {}
        return {str(r["id"]): r for r in rows if isinstance(r, dict) and "id" in r}

    def node_id(self, agent: LocalAgent) -> str | None:
        """The agent's node id (from its health endpoint)."""
        health = self.get(agent, "/v1/health")
        return str(health["node_id"]) if isinstance(health, dict) else None

    def state_of(self, observer: LocalAgent, node_id: str) -> str | None:
        """How `observer` sees `node_id` ("alive", "suspect", "dead", "left", or None if unknown)."""
        row = self.view(observer).get(node_id)
        return None if row is None else str(row["state"])


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll `predicate` until it is true (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def pid_alive(pid: int) -> bool:
    """True if a process with `pid` exists (and is not a zombie we could reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
