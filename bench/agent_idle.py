"""Benchmark: what an idle `murmur agent` costs, in a 20-agent mesh on 127.0.0.1.

    .venv/bin/python bench/agent_idle.py [--window-s 60] [--json]

Starts 20 agents in two regions of 10 (profile lan) with mesh.dev.localmesh, waits
until every agent sees all 10 members of its region alive, lets the mesh settle,
then measures every agent over an idle window: CPU (user + sys seconds per wall
second), resident memory, and its gossip traffic (the UDP and stream counters of
its /v1/health, read just before and just after the window).

The baseline, measured in the same window on the same machine, is a bare Python
process that imports the agent's heavy libraries (aiohttp, msgpack, PyNaCl) and
runs an asyncio loop with an aiohttp server on 127.0.0.1 that does nothing.
Agent CPU and RSS are reported as they are and as ratios to that baseline,
summarised as p50 and max over the agents. No figure is checked against a
threshold: this is a measurement, not a test.

Network safety: agents bind only 127.0.0.1, and the whole benchmark runs in a
private network namespace whose only interface is its own loopback. Started
outside one (as root), the script re-executes itself under
`unshare -n sh -c 'ip link set lo up && exec ...'`. Every step is bounded in
time; on error, Ctrl-C or SIGTERM every agent gets SIGTERM (SIGKILL after a grace
period) and the baseline is killed; a kill -9 of this script makes the kernel
stop them too (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import math
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from provenance import source_version

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent

REGIONS = ("north", "south")
AGENTS_PER_REGION = 10
PROFILE = "lan"
SEEDS_MAX = 3
DEFAULT_WINDOW_S = 60.0
DEFAULT_SETTLE_S = 10.0
DEFAULT_CONVERGE_TIMEOUT_S = 120.0
BASELINE_READY_TIMEOUT_S = 30.0
SAMPLE_INTERVAL_S = 1.0
POLL_S = 0.5
MIB = 2**20
NETNS_ENV = "MURMUR_BENCH_NETNS"
_PR_SET_PDEATHSIG = 1
TRAFFIC_COUNTERS = ("bytes_out", "bytes_in", "datagrams_out", "datagrams_in", "streams_out", "streams_in")

# The same-run baseline: the agent's heavy imports and an idle aiohttp server on loopback.
BASELINE_CODE = """\
import asyncio, signal
import aiohttp, msgpack, nacl.secret, nacl.signing
from aiohttp import web

async def main():
    runner = web.AppRunner(web.Application())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()

asyncio.run(main())
"""


class BenchError(Exception):
    """A step of the benchmark did not happen in time."""


# --- network namespace -----------------------------------------------------------------------


def _only_loopback() -> bool:
    """True if this process's network namespace has no interface but lo.

    socket.if_nameindex() asks the kernel about the caller's own namespace
    (/sys/class/net would show the namespace sysfs was mounted in).
    """
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def ensure_private_netns(argv: Sequence[str], script: Path | None = None) -> None:
    """Return if already alone with loopback; else re-exec `script` (default this one) with `argv`
    under `unshare -n` (bench/inference_bench.py uses it too)."""
    script = (script or Path(__file__)).resolve()
    name = script.stem
    if _only_loopback():
        # Our own namespace's lo, nothing else: bringing it up is idempotent and harmless.
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if os.environ.get(NETNS_ENV):
        raise SystemExit(f"{name}: still not in a private network namespace after unshare -n; giving up")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        raise SystemExit(f"{name}: needs unshare(1) and ip(8) (util-linux, iproute2) to isolate the network")
    if os.geteuid() != 0:
        raise SystemExit(
            f"{name}: needs root to create a private network namespace; run it as root, or where "
            "unprivileged user namespaces are allowed: "
            f"unshare -rn sh -c 'ip link set lo up && exec .venv/bin/python bench/{script.name}'"
        )
    os.environ[NETNS_ENV] = "1"
    cmd = [
        "unshare",
        "-n",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        sys.executable,
        str(script),
        *argv,
    ]
    print(f"{name}: re-executing in a private network namespace: {' '.join(cmd)}", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os.execvp(cmd[0], cmd)


# --- processes ----------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start_baseline() -> subprocess.Popen[bytes]:
    """Start the baseline process and wait until its server listens."""
    process = subprocess.Popen(
        [sys.executable, "-c", BASELINE_CODE],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], BASELINE_READY_TIMEOUT_S)
    if not ready or process.stdout.readline().strip() != b"ready":
        stop_baseline(process)
        raise BenchError(f"the baseline process was not ready within {BASELINE_READY_TIMEOUT_S:g} s")
    return process


def stop_baseline(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _cpu_ns(pid: int) -> dict[int, int]:
    """Time on CPU of each live thread of `pid`, in ns (/proc/PID/task/TID/schedstat)."""
    times: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return times
    for tid in tids:
        with (
            contextlib.suppress(OSError, ValueError, IndexError),
            open(f"/proc/{pid}/task/{tid}/schedstat") as f,
        ):
            times[int(tid)] = int(f.read().split()[0])
    return times


def _ticks_s(proc: psutil.Process) -> float:
    cpu = proc.cpu_times()
    return float(cpu.user + cpu.system)


@dataclass
class Subject:
    """One measured process: an agent or the baseline."""

    name: str
    pid: int
    agent: LocalAgent | None = None
    proc: psutil.Process = field(init=False)
    cpu_ns_start: dict[int, int] = field(default_factory=dict)
    ticks_start_s: float = 0.0
    rss_samples: list[int] = field(default_factory=list)
    health_start: dict[str, Any] | None = None
    health_start_t: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.proc = psutil.Process(self.pid)

    def begin(self) -> None:
        self.cpu_ns_start = _cpu_ns(self.pid)
        self.ticks_start_s = _ticks_s(self.proc)
        self.rss_samples = [self.proc.memory_info().rss]

    def sample(self) -> None:
        self.rss_samples.append(self.proc.memory_info().rss)

    def end(self, window_s: float) -> None:
        end_ns = _cpu_ns(self.pid)
        ticks_s = _ticks_s(self.proc) - self.ticks_start_s
        mem = self.proc.memory_full_info()
        # schedstat counts nanoseconds actually on a CPU; the tick counters (user + sys) are
        # sampled at 10 ms, too coarse for an idle process. They also cover threads that ended
        # inside the window, which schedstat cannot: compare the two in the report.
        sched_s = sum(ns - self.cpu_ns_start.get(tid, 0) for tid, ns in end_ns.items()) / 1e9
        cpu_s = sched_s if end_ns else ticks_s
        self.result = {
            "name": self.name,
            "pid": self.pid,
            "cpu_s_per_s": cpu_s / window_s,
            "cpu_ticks_s_per_s": ticks_s / window_s,
            "rss_mib": mem.rss / MIB,
            "rss_max_mib": max(self.rss_samples) / MIB,
            "uss_mib": mem.uss / MIB,
            "pss_mib": getattr(mem, "pss", 0) / MIB,
            "threads": self.proc.num_threads(),
        }


# --- statistics ---------------------------------------------------------------------------------


def _nearest_rank(ordered: Sequence[float], p: float) -> float:
    return ordered[max(1, math.ceil(p / 100.0 * len(ordered))) - 1]


def summary(values: Sequence[float]) -> dict[str, float | None]:
    """{p50, max} by nearest rank."""
    if not values:
        return {"p50": None, "max": None}
    ordered = sorted(values)
    return {"p50": _nearest_rank(ordered, 50), "max": ordered[-1]}


def _ratio(value: float | None, base: float) -> float | None:
    return None if value is None or base <= 0 else value / base


def _minus(value: float | None, base: float) -> float | None:
    return None if value is None else value - base


def _rounded(obj: Any, digits: int = 4) -> Any:
    """Floats to `digits` significant digits (CPU rates are small numbers), recursively."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v, digits) for v in obj]
    return obj


# --- the benchmark ------------------------------------------------------------------------------


def _seeds(mesh: LocalMesh, region: str) -> list[LocalAgent]:
    """The first agents already defined in `region`; the first of a region is seeded from another."""
    same = [a for a in mesh.agents if a.region == region]
    return same[:SEEDS_MAX] if same else mesh.agents[:1]


def _alive(mesh: LocalMesh, agent: LocalAgent) -> int:
    return sum(1 for row in mesh.view(agent).values() if row.get("state") == "alive")


def _say(start: float, text: str) -> None:
    print(f"[{time.monotonic() - start:6.1f}s] {text}", file=sys.stderr, flush=True)


def _check_running(mesh: LocalMesh, baseline: subprocess.Popen[bytes]) -> None:
    dead = [a.name for a in mesh.agents if not a.running]
    if baseline.poll() is not None:
        dead.append("baseline")
    if dead:
        tails = "".join(
            f"\n--- {a.name} ({a.log_path}) ---\n{a.log_tail()}" for a in mesh.agents if not a.running
        )
        raise BenchError(f"stopped during the benchmark: {', '.join(dead)}{tails}")


def _traffic(agent: Subject, health_end: dict[str, Any] | None, end_t: float) -> dict[str, float | None]:
    start = agent.health_start
    if start is None or health_end is None or end_t <= agent.health_start_t:
        return {f"{name}_per_s": None for name in TRAFFIC_COUNTERS}
    before = start["counters"]["runtime"]
    after = health_end["counters"]["runtime"]
    span_s = end_t - agent.health_start_t
    return {
        f"{name}_per_s": (int(after.get(name, 0)) - int(before.get(name, 0))) / span_s
        for name in TRAFFIC_COUNTERS
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="murmur-bench-idle-"))
    mesh = LocalMesh(root, profile=PROFILE, debug_hooks=False)
    baseline: subprocess.Popen[bytes] | None = None
    exit_codes: dict[str, int | None] = {}
    try:
        mesh.init()
        baseline = start_baseline()
        _say(t0, f"baseline (idle aiohttp server, pid {baseline.pid}) is up; starting agents in {root}")
        for region in REGIONS:
            for i in range(1, AGENTS_PER_REGION + 1):
                mesh.start(mesh.add(f"{region}-{i:02d}", region, _seeds(mesh, region)))
        for agent in mesh.agents:
            print(f"$ {' '.join(mesh.command(agent))}", file=sys.stderr)
        _say(t0, f"started {len(mesh.agents)} agents; waiting until each sees its region alive")

        pending = list(mesh.agents)

        def converged() -> bool:
            _check_running(mesh, baseline)
            pending[:] = [a for a in pending if _alive(mesh, a) != AGENTS_PER_REGION]
            return not pending

        if not wait_until(converged, args.converge_timeout_s, POLL_S):
            late = pending[0]
            raise BenchError(
                f"{len(pending)} agents did not see their region alive within {args.converge_timeout_s:g} s "
                f"(e.g. {late.name} sees {_alive(mesh, late)}/{AGENTS_PER_REGION})\n--- {late.name} "
                f"({late.log_path}) ---\n{late.log_tail()}"
            )
        converged_s = time.monotonic() - t0
        _say(t0, f"every agent sees its region alive; settling for {args.settle_s:g} s")
        time.sleep(args.settle_s)
        _check_running(mesh, baseline)

        agents: list[Subject] = []
        for agent in mesh.agents:
            assert agent.process is not None
            subject = Subject(agent.name, agent.process.pid, agent)
            subject.health_start = mesh.get(agent, "/v1/health")
            subject.health_start_t = time.monotonic()
            agents.append(subject)
        base = Subject("baseline", baseline.pid)
        subjects = [*agents, base]
        _say(t0, f"measuring an idle window of {args.window_s:g} s")
        for subject in subjects:
            subject.begin()
        window_start = time.monotonic()
        next_sample = window_start + SAMPLE_INTERVAL_S
        while next_sample < window_start + args.window_s:
            time.sleep(max(0.0, next_sample - time.monotonic()))
            for subject in subjects:
                subject.sample()
            next_sample += SAMPLE_INTERVAL_S
        time.sleep(max(0.0, window_start + args.window_s - time.monotonic()))
        window_s = time.monotonic() - window_start
        _check_running(mesh, baseline)
        for subject in subjects:
            subject.end(window_s)

        stable = 0
        for subject in agents:
            assert subject.agent is not None
            health = mesh.get(subject.agent, "/v1/health")
            subject.result.update(_traffic(subject, health, time.monotonic()))
            datagrams_per_s = (subject.result["datagrams_out_per_s"] or 0.0) + (
                subject.result["datagrams_in_per_s"] or 0.0
            )
            subject.result["cpu_us_per_datagram"] = (
                subject.result["cpu_s_per_s"] / datagrams_per_s * 1e6 if datagrams_per_s else None
            )
            subject.result["region"] = subject.agent.region
            subject.result["gateway"] = bool(health and health.get("is_gateway"))
            alive = (health or {}).get("members", {}).get("alive")
            subject.result["region_alive_after"] = alive
            stable += alive == AGENTS_PER_REGION
        _say(t0, "window done; stopping every agent with SIGTERM")
        exit_codes = mesh.close()
        stop_baseline(baseline)
        return report(args, agents, base, window_s, converged_s, stable, exit_codes, root)
    finally:
        mesh.close()
        if baseline is not None:
            stop_baseline(baseline)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def report(
    args: argparse.Namespace,
    agents: list[Subject],
    base: Subject,
    window_s: float,
    converged_s: float,
    stable: int,
    exit_codes: dict[str, int | None],
    root: Path,
) -> dict[str, Any]:
    b = base.result

    def over(rows: list[dict[str, Any]], key: str) -> dict[str, float | None]:
        return summary([float(r[key]) for r in rows if r.get(key) is not None])

    rows = [a.result for a in agents]
    groups = {
        "all": rows,
        "gateways": [r for r in rows if r["gateway"]],
        "members": [r for r in rows if not r["gateway"]],
    }
    summaries: dict[str, Any] = {}
    for group, members in groups.items():
        cpu = over(members, "cpu_s_per_s")
        rss = over(members, "rss_mib")
        uss = over(members, "uss_mib")
        summaries[group] = {
            "agents": len(members),
            "cpu_s_per_s": cpu,
            # None when the baseline used no measurable CPU (an idle loop with no timers sleeps).
            "cpu_vs_baseline": {k: _ratio(v, b["cpu_s_per_s"]) for k, v in cpu.items()},
            "cpu_minus_baseline_s_per_s": {k: _minus(v, b["cpu_s_per_s"]) for k, v in cpu.items()},
            "cpu_us_per_datagram": over(members, "cpu_us_per_datagram"),
            "rss_mib": rss,
            "rss_vs_baseline": {k: _ratio(v, b["rss_mib"]) for k, v in rss.items()},
            "rss_minus_baseline_mib": {k: _minus(v, b["rss_mib"]) for k, v in rss.items()},
            "uss_mib": uss,
            "uss_vs_baseline": {k: _ratio(v, b["uss_mib"]) for k, v in uss.items()},
            "uss_minus_baseline_mib": {k: _minus(v, b["uss_mib"]) for k, v in uss.items()},
            "rss_max_mib": over(members, "rss_max_mib"),
            "bytes_out_per_s": over(members, "bytes_out_per_s"),
            "bytes_in_per_s": over(members, "bytes_in_per_s"),
            "datagrams_out_per_s": over(members, "datagrams_out_per_s"),
            "streams_out_per_s": over(members, "streams_out_per_s"),
        }
    doc: dict[str, Any] = _rounded(
        {
            "benchmark": "agent_idle",
            "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "mem_bytes": psutil.virtual_memory().total,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "loadavg_1m": os.getloadavg()[0],
            },
            "source": source_version(),
            "agents": len(agents),
            "regions": list(REGIONS),
            "profile": PROFILE,
            "window_s": window_s,
            "settle_s": args.settle_s,
            "converged_after_start_s": converged_s,
            "agents_seeing_region_alive_after_window": stable,
            "clean_shutdown": all(code == 0 for code in exit_codes.values())
            and len(exit_codes) == len(agents),
            "exit_codes": exit_codes,
            "baseline": b,
            "summary": summaries,
            "per_agent": rows,
            "root": str(root) if args.keep else None,
        }
    )
    return doc


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def print_human(doc: dict[str, Any]) -> None:
    b = doc["baseline"]
    print(
        f"agent_idle: {doc['agents']} agents ({' + '.join(doc['regions'])}, profile {doc['profile']}), "
        f"idle window {doc['window_s']:.1f} s after {doc['settle_s']:g} s settle; "
        f"converged {doc['converged_after_start_s']:.1f} s after start"
    )
    print(
        f"source: commit {doc['source']['commit']}, "
        f"uncommitted changes: {doc['source']['uncommitted_changes']}"
    )
    print(
        f"baseline (idle aiohttp + msgpack + nacl): CPU {b['cpu_s_per_s'] * 1000:.2f} ms/s, "
        f"RSS {b['rss_mib']:.1f} MiB, USS {b['uss_mib']:.1f} MiB"
    )
    print()
    print(
        f"{'agent':<10} {'gw':>2} {'CPU ms/s':>9} {'RSS MiB':>8} {'USS MiB':>8} {'UDP B/s out':>12} {'in':>8}"
    )
    for r in doc["per_agent"]:
        print(
            f"{r['name']:<10} {'*' if r['gateway'] else '':>2} {r['cpu_s_per_s'] * 1000:>9.2f} "
            f"{r['rss_mib']:>8.1f} {r['uss_mib']:>8.1f} {_fmt(r['bytes_out_per_s'], '.0f'):>12} "
            f"{_fmt(r['bytes_in_per_s'], '.0f'):>8}"
        )
    print()
    print(
        f"{'over agents':<16} {'CPU ms/s':>9} {'x base':>7} {'us/dgram':>9} {'RSS MiB':>8} {'x base':>7} "
        f"{'+MiB':>5} {'USS MiB':>8} {'x base':>7} {'B/s out':>8}"
    )
    for group, s in doc["summary"].items():
        for stat in ("p50", "max") if s["agents"] else ():
            cpu = s["cpu_s_per_s"][stat]
            cells = [
                _fmt(None if cpu is None else cpu * 1000, ".2f").rjust(9),
                _fmt(s["cpu_vs_baseline"][stat], ".1f", "x").rjust(7),
                _fmt(s["cpu_us_per_datagram"][stat], ".0f").rjust(9),
                _fmt(s["rss_mib"][stat], ".1f").rjust(8),
                _fmt(s["rss_vs_baseline"][stat], ".3f", "x").rjust(7),
                _fmt(s["rss_minus_baseline_mib"][stat], ".1f").rjust(5),
                _fmt(s["uss_mib"][stat], ".1f").rjust(8),
                _fmt(s["uss_vs_baseline"][stat], ".3f", "x").rjust(7),
                _fmt(s["bytes_out_per_s"][stat], ".0f").rjust(8),
            ]
            label = f"{group} {stat} ({s['agents']})"
            print(f"{label:<16} {' '.join(cells)}")
    if not b["cpu_s_per_s"]:
        print(
            "(the baseline used no measurable CPU in the window, so CPU x base is undefined: "
            "read CPU ms/s as the agent's whole cost, a share of one core)"
        )
    print()
    print(
        f"agents still seeing their whole region alive after the window: "
        f"{doc['agents_seeing_region_alive_after_window']}/{doc['agents']}; "
        f"clean shutdown (SIGTERM, exit 0): {doc['clean_shutdown']}; "
        f"load avg {doc['machine']['loadavg_1m']:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--window-s", type=float, default=DEFAULT_WINDOW_S, help="idle window (default 60)")
    parser.add_argument(
        "--settle-s", type=float, default=DEFAULT_SETTLE_S, help="wait after convergence (default 10)"
    )
    parser.add_argument(
        "--converge-timeout-s",
        type=float,
        default=DEFAULT_CONVERGE_TIMEOUT_S,
        help="give up if the mesh has not formed by then (default 120)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep the agents' data and logs directory")
    args = parser.parse_args(raw)
    if args.window_s <= 0 or args.settle_s < 0 or args.converge_timeout_s <= 0:
        parser.error("--window-s and --converge-timeout-s must be positive, --settle-s not negative")
    ensure_private_netns(raw)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    try:
        doc = run(args)
    except BenchError as exc:
        print(f"agent_idle: error: {exc}", file=sys.stderr)
        return 1
    except psutil.Error as exc:  # a measured process vanished mid-window
        print(f"agent_idle: error: lost a measured process: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("agent_idle: interrupted; every agent was stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_human(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
