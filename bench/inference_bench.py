"""Benchmark: what serving a model through a murmur node costs, against onnxruntime called directly.

    .venv/bin/python bench/inference_bench.py [--quick] [--json]

Two real `murmur agent` processes (mesh/dev/localmesh.py, one region, profile lan) on
127.0.0.1 in a private network namespace. Each figure has a baseline measured in the
same run (docs/benchmarks.md, "bench/inference_bench.py"):

- footprint: each agent's RSS (`ps -o rss=`) idle with no model, then after each example
  model is deployed; baseline a bare Python process with aiohttp, msgpack and PyNaCl
  imported, idle, and whether onnxruntime's and numpy's libraries are mapped in the agent;
- hop: sequential POST /v2/models/tabular-mlp/infer at the node holding the replica
  (local) and at the node without it (one forwarding hop), p50 and p99, against a
  direct `session.run` of the same input in this process;
- throughput: 16 concurrent clients through the holder (an aiohttp client; also wrk, a C
  load generator, when it is installed), against onnxruntime run
  directly by as many threads as the node's inference threads (the same core budget),
  for two example models and for two models built at bench time to take ~0.2 ms and
  ~2 ms a run (bench/sized_models.py, issue 11's targets), each of those also deployed
  with the manifest's dynamic batching (`<name>-batched`; the baseline stays one
  request a run);
- batching: the real ModelHost and ModelLanes in this process, 16 concurrent
  submitters, with and without a batching policy (no manifest field carries one yet);
- priority: sequential `Murmur-Priority: critical` requests, unloaded and while a
  child process saturates the holder with 16 concurrent bulk requests, for a fast model
  (image-classifier: the node's loop is the bottleneck) and a slow one (conv-large: the
  model's queue is).

No figure is checked against a threshold. Every step is bounded in time; the agents
and the load child are stopped on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import numpy as np
from provenance import source_version

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from agent_idle import BenchError, ensure_private_netns, start_baseline, stop_baseline  # noqa: E402
from sized_models import BATCHED, BATCHING_LINE, SIZED_MODELS  # noqa: E402
from sized_models import INPUT_NAME as SIZED_INPUT_NAME  # noqa: E402
from sized_models import INPUT_SHAPE as SIZED_INPUT_SHAPE  # noqa: E402
from sized_models import build as build_sized_models  # noqa: E402

from inference.batching import NO_BATCHING, BatchPolicy  # noqa: E402
from inference.manifest import manifest_from_doc  # noqa: E402
from inference.requestqueue import PRIORITY_HEADER, Priority  # noqa: E402
from inference.v2types import HEADER_LENGTH_HEADER  # noqa: E402
from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until  # noqa: E402
from mesh.examples.build_models import MODELS_DIR  # noqa: E402
from mesh.service.modelhost import (  # noqa: E402
    INFERENCE_THREADS_DEFAULT,
    INTRA_OP_THREADS_DEFAULT,
    HostSettings,
    ModelHost,
)
from mesh.service.modellanes import ModelLanes  # noqa: E402
from mesh.service.servedmodels import ServedModels  # noqa: E402

MODELS = ("vibration-anomaly", "tabular-mlp", "image-classifier")
SIZED = tuple(m.example.name for m in SIZED_MODELS)  # conv-small (~0.2 ms), conv-large (~2 ms)
SIZED_ALL = (*SIZED, *BATCHED)  # and each deployed with dynamic batching
INPUT_SHAPES = {
    "vibration-anomaly": (3, 128),
    "tabular-mlp": (16,),
    "image-classifier": (3, 32, 32),
    **{name: SIZED_INPUT_SHAPE for name in SIZED_ALL},
}
INPUT_NAMES = {
    "vibration-anomaly": "window",
    "tabular-mlp": "features",
    "image-classifier": "image",
    **{name: SIZED_INPUT_NAME for name in SIZED_ALL},
}
# model -> its .onnx file (its manifest is the .yaml beside it); run() adds the sized models.
MODEL_FILES = {name: MODELS_DIR / f"{name}.onnx" for name in MODELS}
CONCURRENCY = 16
CONVERGE_S = 60.0
READY_S = 60.0
SETTLE_S = 8.0  # the first inventory (and its accelerator probe) is done by then
MIB = 2**20
BATCH_POLICY = BatchPolicy(max_batch=8, max_delay_s=0.002)

# --- processes ---------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """RSS as `ps -o rss=` shows it (KiB), in MiB."""
    done = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
    return round(int(done.stdout.strip()) / 1024, 1)


def murmur(mesh: LocalMesh, node: LocalAgent, *args: str) -> subprocess.CompletedProcess[str]:
    assert mesh.token_path is not None
    cmd = [sys.executable, "-m", "mesh.cli", "--node", node.url, "--cluster", str(mesh.token_path.parent)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, check=False)


def ready_models(mesh: LocalMesh, agent: LocalAgent) -> list[str]:
    doc = mesh.get(agent, "/v1/placements")
    if not isinstance(doc, dict):
        return []
    return sorted(m["deployment"] for m in doc.get("models", []) if m.get("state") == "ready")


# --- inputs, statistics, direct onnxruntime -----------------------------------------------------


def sample_input(model: str, batch: int = 1) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(7)
    return rng.standard_normal((batch, *INPUT_SHAPES[model])).astype(np.float32)


def infer_body(model: str, binary: bool = False) -> tuple[bytes, dict[str, str]]:
    """One request's body and headers: JSON tensors, or the binary tensor data extension."""
    x = sample_input(model)
    tensor: dict[str, Any] = {"name": INPUT_NAMES[model], "shape": list(x.shape), "datatype": "FP32"}
    if not binary:
        tensor["data"] = x.ravel().tolist()
        return json.dumps({"inputs": [tensor]}).encode(), {"Content-Type": "application/json"}
    raw = x.tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps({"inputs": [tensor]}).encode()
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH_HEADER: str(len(header))}
    return header + raw, headers


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 4),
        "p99_ms": round(pct(ms, 99), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
    }


def direct_session(model: str) -> Any:
    """A session set up as mesh/service/modelhost.py sets one up (threads, no spinning)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = INTRA_OP_THREADS_DEFAULT
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(MODEL_FILES[model]), options, providers=["CPUExecutionProvider"])


def direct_latencies(session: Any, model: str, n: int) -> list[float]:
    feed = {INPUT_NAMES[model]: sample_input(model)}
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        session.run(None, feed)
        out.append(time.perf_counter() - t0)
    return out


def direct_throughput(session: Any, model: str, threads: int, duration_s: float) -> float:
    """Runs per second by `threads` threads calling session.run back to back (the node's core budget)."""
    feed = {INPUT_NAMES[model]: sample_input(model)}
    deadline = time.perf_counter() + duration_s
    counts = [0] * threads

    def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            session.run(None, feed)
            counts[i] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - started)


# --- HTTP clients ---------------------------------------------------------------------------------


class Client:
    """One keep-alive connection to an agent's API, posting one model's request."""

    def __init__(
        self, agent: LocalAgent, model: str, priority: str | None = None, binary: bool = False
    ) -> None:
        host, port = agent.api.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.agent, self.model = agent, model
        self.body, self.headers = infer_body(model, binary)
        if priority is not None:
            self.headers[PRIORITY_HEADER] = priority

    def latencies(self, n: int) -> list[float]:
        """Sequential requests; every answer must be 200."""
        out: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.conn.request("POST", f"/v2/models/{self.model}/infer", self.body, self.headers)
            resp = self.conn.getresponse()
            data = resp.read()
            out.append(time.perf_counter() - t0)
            if resp.status != 200:
                raise BenchError(f"{self.model} at {self.agent.name}: {resp.status} {data[:200]!r}")
        return out

    def close(self) -> None:
        self.conn.close()


def http_latencies(
    agent: LocalAgent, model: str, n: int, priority: str | None = None, binary: bool = False
) -> list[float]:
    client = Client(agent, model, priority, binary)
    try:
        return client.latencies(n)
    finally:
        client.close()


def cpu_s(pid: int) -> float:
    """The process's user + sys CPU seconds, all threads (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def http_throughput(
    url: str, model: str, concurrency: int, duration_s: float, priority: str | None, binary: bool = True
) -> dict[str, Any]:
    """`concurrency` clients posting back to back for `duration_s`; answers per second by status.
    Binary tensor bodies by default: the protocol's low-overhead form."""
    body, headers = infer_body(model, binary)
    if priority is not None:
        headers[PRIORITY_HEADER] = priority
    statuses: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def client() -> None:
            while loop.time() < deadline:
                async with session.post(f"{url}/v2/models/{model}/infer", data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    if resp.status == 429:
                        await asyncio.sleep(0.001)

        started = loop.time()
        cpu0 = time.process_time()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = loop.time() - started
    return {
        "ok_per_s": round(statuses.get(200, 0) / wall, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "client_cpu_share": round((time.process_time() - cpu0) / wall, 3),
    }


# --- the benchmark --------------------------------------------------------------------------------


def footprint_row(mesh: LocalMesh) -> dict[str, Any]:
    return {
        a.name: {
            "rss_mib": rss_mib(a.process.pid),
            "onnxruntime_mapped": a.maps_package("onnxruntime"),
            "numpy_mapped": a.maps_package("numpy"),
            "models": ready_models(mesh, a),
        }
        for a in mesh.agents
        if a.process is not None
    }


def deploy(mesh: LocalMesh, model: str) -> LocalAgent:
    """Deploy one model (1 replica) and return the agent that holds it ready."""
    for agent in mesh.agents:
        done = murmur(mesh, agent, "deploy", str(MODEL_FILES[model].with_suffix(".yaml")))
        if done.returncode != 0:
            raise BenchError(f"deploy {model}: {done.stderr.strip()}")
    holders: list[LocalAgent] = []

    def ready() -> bool:
        holders[:] = [a for a in mesh.agents if model in ready_models(mesh, a)]
        return bool(holders)

    if not wait_until(ready, READY_S, 0.3):
        raise BenchError(f"{model} not ready within {READY_S} s")
    return holders[0]


def hop_figures(mesh: LocalMesh, holder: LocalAgent, model: str, n: int, rounds: int) -> dict[str, Any]:
    """Direct, local and one-hop latencies (JSON and binary bodies), interleaved in rounds so
    that the machine's drift hits all of them alike."""
    other = next(a for a in mesh.agents if a is not holder)
    session = direct_session(model)
    direct_latencies(session, model, 50)  # warm-up
    paths = {
        "local_json": (holder, False),
        "one_hop_json": (other, False),
        "local_binary": (holder, True),
        "one_hop_binary": (other, True),
    }
    samples: dict[str, list[float]] = {"direct_session_run": [], **{k: [] for k in paths}}
    for agent, binary in paths.values():
        http_latencies(agent, model, 20, binary=binary)
    for _ in range(rounds):
        samples["direct_session_run"] += direct_latencies(session, model, n)
        for key, (agent, binary) in paths.items():
            samples[key] += http_latencies(agent, model, n, binary=binary)
    out: dict[str, Any] = {"model": model, **{k: summary_ms(v) for k, v in samples.items()}}
    d = out["direct_session_run"]
    for body in ("json", "binary"):
        lo, h = out[f"local_{body}"], out[f"one_hop_{body}"]
        out[f"added_by_local_node_{body}_p50_ms"] = round(lo["p50_ms"] - d["p50_ms"], 4)
        out[f"added_per_hop_{body}_p50_ms"] = round(h["p50_ms"] - lo["p50_ms"], 4)
        out[f"added_per_hop_{body}_p99_ms"] = round(h["p99_ms"] - lo["p99_ms"], 4)
    return out


def wrk_throughput(url: str, model: str, duration_s: float) -> dict[str, Any] | None:
    """`wrk` (a C load generator, if installed: apt-get install wrk) keeping CONCURRENCY binary
    requests in flight for `duration_s`: the node's figure without a Python client's CPU on the
    same cores. None without wrk."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    body, headers = infer_body(model, binary=True)
    with tempfile.TemporaryDirectory(prefix="murmur-wrk-") as tmp:
        (Path(tmp) / "body.bin").write_bytes(body)
        script = Path(tmp) / "post.lua"
        lines = [
            'wrk.method = "POST"',
            f'local f = io.open("{tmp}/body.bin", "rb")',
            "wrk.body = f:read('*all')",
        ]
        lines += ["f:close()", *(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())]
        script.write_text("\n".join(lines) + "\n")
        before = os.times()
        done = subprocess.run(
            [
                wrk,
                "-t1",
                f"-c{CONCURRENCY}",
                f"-d{duration_s:g}s",
                "-s",
                str(script),
                f"{url}/v2/models/{model}/infer",
            ],
            capture_output=True,
            text=True,
            timeout=duration_s + 30,
        )
        after = os.times()
    total = next((line.split() for line in done.stdout.splitlines() if " requests in " in line), None)
    if done.returncode != 0 or total is None:
        raise BenchError(f"wrk failed: {done.stdout[-300:]} {done.stderr[-300:]}")
    count, wall = int(total[0]), float(total[3].rstrip("s,"))
    bad = next((int(line.split()[-1]) for line in done.stdout.splitlines() if "Non-2xx" in line), 0)
    client_s = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {
        "client": "wrk",
        "ok_per_s": round((count - bad) / wall, 1),
        "statuses": {"200": count - bad, "other": bad},
        "client_cpu_share": round(client_s / wall, 3),
        "answered": count,
    }


def throughput_figures(holder: LocalAgent, model: str, duration_s: float) -> dict[str, Any]:
    session = direct_session(model)
    cpu0 = time.process_time()
    direct_rps = direct_throughput(session, model, INFERENCE_THREADS_DEFAULT, duration_s)
    direct_cpu_ms = (time.process_time() - cpu0) * 1000 / max(1.0, direct_rps * duration_s)
    assert holder.process is not None
    served: dict[str, dict[str, Any]] = {}
    for body in ("binary", "json"):
        cpu0 = cpu_s(holder.process.pid)
        run = asyncio.run(http_throughput(holder.url, model, CONCURRENCY, duration_s, None, body == "binary"))
        answered = sum(run["statuses"].values())
        # CPU per request: what the machine's other load disturbs least.
        run["agent_cpu_ms_per_request"] = round(
            (cpu_s(holder.process.pid) - cpu0) * 1000 / max(1, answered), 4
        )
        run["ratio"] = round(run["ok_per_s"] / direct_rps, 3)
        served[body] = run
    cpu0 = cpu_s(holder.process.pid)
    by_wrk = wrk_throughput(holder.url, model, duration_s)
    if by_wrk is not None:
        by_wrk["agent_cpu_ms_per_request"] = round(
            (cpu_s(holder.process.pid) - cpu0) * 1000 / max(1, by_wrk.pop("answered")), 4
        )
        by_wrk["ratio"] = round(by_wrk["ok_per_s"] / direct_rps, 3)
        served["binary, wrk"] = by_wrk
    single_ms = summary_ms(direct_latencies(session, model, 200))["p50_ms"]
    return {
        "model": model,
        "batching": BATCHING_LINE if model in BATCHED else None,
        "session_run_p50_ms": single_ms,
        "direct_runs_per_s": round(direct_rps, 1),
        "direct_threads": INFERENCE_THREADS_DEFAULT,
        "served": served,
        "direct_cpu_ms_per_run": round(direct_cpu_ms, 4),
    }


async def _lanes_run(lanes: ModelLanes, model: str, duration_s: float) -> tuple[int, list[float]]:
    loop = asyncio.get_running_loop()
    x = {INPUT_NAMES[model]: sample_input(model)}
    deadline = loop.time() + duration_s
    lat: list[float] = []

    async def submitter() -> None:
        while loop.time() < deadline:
            t0 = time.perf_counter()
            await lanes.lane(model).submit(x, Priority.NORMAL)
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(submitter() for _ in range(CONCURRENCY)))
    return len(lat), lat


def _constant_policy(policy: BatchPolicy) -> Callable[[str], BatchPolicy]:
    return lambda _name: policy


async def batching_figures(model: str, duration_s: float) -> dict[str, Any]:
    """The real ModelHost and ModelLanes in this process, without and with a batching policy."""
    data = (MODELS_DIR / f"{model}.onnx").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    deployment = manifest_from_doc(
        {
            "name": model,
            "model": {"name": model, "version": "1"},
            "artifact": {"sha256": sha, "size_bytes": len(data)},
            "replicas": 1,
        }
    )
    host = ModelHost(lambda s: MODELS_DIR / f"{model}.onnx" if s == sha else None, HostSettings())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_S
    while str(host.replica_state(deployment, loop.time())) != "ready":
        if loop.time() > deadline or host.error(model):
            raise BenchError(f"{model} did not load in-process: {host.error(model)}")
        await asyncio.sleep(0.02)
    out: dict[str, Any] = {
        "model": model,
        "policy": {"max_batch": BATCH_POLICY.max_batch, "max_delay_s": BATCH_POLICY.max_delay_s},
    }
    # Alternated, twice each, so the machine's drift hits both alike.
    samples: dict[str, tuple[int, list[float]]] = {"unbatched": (0, []), "batched": (0, [])}
    try:
        for label, policy in [("unbatched", NO_BATCHING), ("batched", BATCH_POLICY)] * 2:
            lanes = ModelLanes(
                ServedModels(host), _constant_policy(policy), threads=INFERENCE_THREADS_DEFAULT
            )
            await _lanes_run(lanes, model, 0.3)  # warm-up
            count, lat = await _lanes_run(lanes, model, duration_s / 2)
            await lanes.close()
            samples[label] = (samples[label][0] + count, samples[label][1] + lat)
    finally:
        await host.close()
    for label, (count, lat) in samples.items():
        out[label] = {"per_s": round(count / duration_s, 1), **summary_ms(lat)}
    out["throughput_gain"] = round(out["batched"]["per_s"] / out["unbatched"]["per_s"], 3)
    return out


def priority_figures(holder: LocalAgent, model: str, n: int, load_s: float) -> dict[str, Any]:
    """Critical and normal requests, one of each in turn (so both see the same load), unloaded
    and while a child process keeps 16 bulk requests in flight at the holder."""

    def sample() -> tuple[list[float], list[float]]:
        critical: list[float] = []
        normal: list[float] = []
        crit_client = Client(holder, model, "critical", binary=True)
        normal_client = Client(holder, model, binary=True)
        deadline = time.monotonic() + load_s - 2.0  # inside the load's window
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            critical += crit_client.latencies(1)
            normal += normal_client.latencies(1)
        crit_client.close()
        normal_client.close()
        return critical, normal

    http_latencies(holder, model, 20, "critical", binary=True)
    crit_idle, normal_idle = sample()
    load = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--bulk-load", holder.url, model, str(load_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # let the load reach its 16 requests in flight
        crit_loaded, normal_loaded = sample()
        out, _ = load.communicate(timeout=load_s + 30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    bulk = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    figures = {
        "critical_unloaded": summary_ms(crit_idle),
        "normal_unloaded": summary_ms(normal_idle),
        "critical_under_bulk": summary_ms(crit_loaded),
        "normal_under_bulk": summary_ms(normal_loaded),
    }
    u = figures["critical_unloaded"]
    return {
        "model": model,
        **figures,
        "bulk_load": bulk,
        "critical_p50_ratio": round(figures["critical_under_bulk"]["p50_ms"] / u["p50_ms"], 3),
        "critical_p99_ratio": round(figures["critical_under_bulk"]["p99_ms"] / u["p99_ms"], 3),
        "normal_p50_ratio": round(
            figures["normal_under_bulk"]["p50_ms"] / figures["normal_unloaded"]["p50_ms"], 3
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, rounds, dur = (200, 2, 3.0) if args.quick else (500, 4, 8.0)
    result: dict[str, Any] = {
        "source": source_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "load_1m_before": round(os.getloadavg()[0], 2),
    }
    baseline = start_baseline()
    time.sleep(1.0)  # settled: its RSS is read once, as `ps` shows it
    baseline_rss = rss_mib(baseline.pid)
    root = Path(tempfile.mkdtemp(prefix="murmur-inference-bench-"))
    mesh = LocalMesh(root, profile="lan", debug_hooks=False)
    try:
        mesh.init()
        seed = mesh.add("a0", "r1")
        mesh.add("a1", "r1", [seed])
        for agent in mesh.agents:
            mesh.start(agent)
        if not wait_until(
            lambda: all(
                len([r for r in mesh.view(a).values() if r.get("state") == "alive"]) == 2 for a in mesh.agents
            ),
            CONVERGE_S,
            0.3,
        ):
            raise BenchError("the two agents did not see each other alive")
        time.sleep(SETTLE_S)
        footprint: list[dict[str, Any]] = [{"step": "idle, no model", "agents": footprint_row(mesh)}]
        holders: dict[str, LocalAgent] = {}
        for model in MODELS:
            holders[model] = deploy(mesh, model)
            time.sleep(2.0)
            footprint.append({"step": f"+ {model}", "agents": footprint_row(mesh)})
        result["footprint"] = {"baseline_bare_python_rss_mib": baseline_rss, "steps": footprint}
        print("footprint done", file=sys.stderr)
        MODEL_FILES.update(build_sized_models(root / "sized-models"))
        for model in SIZED_ALL:
            holders[model] = deploy(mesh, model)
        result["hop"] = [
            hop_figures(mesh, holders[m], m, n, rounds) for m in ("tabular-mlp", "image-classifier")
        ]
        print("hop done", file=sys.stderr)
        result["throughput"] = [
            throughput_figures(holders[m], m, dur) for m in ("tabular-mlp", "image-classifier", *SIZED_ALL)
        ]
        print("throughput done", file=sys.stderr)
        # Two regimes: a fast model whose requests the node's event loop cannot read as fast as
        # the bulk clients send them (the wait is in front of the queue), and a slow one whose
        # queue fills (the priority decides who runs next).
        result["priority"] = [
            priority_figures(holders[m], m, n // 2, dur * 2) for m in ("image-classifier", "conv-large")
        ]
        print("priority done", file=sys.stderr)
    finally:
        mesh.close()
        stop_baseline(baseline)
        shutil.rmtree(root, ignore_errors=True)
    result["batching"] = [asyncio.run(batching_figures(m, dur)) for m in ("tabular-mlp", "image-classifier")]
    result["load_1m_after"] = round(os.getloadavg()[0], 2)
    return result


def print_summary(r: dict[str, Any]) -> None:
    src = r["source"]
    print(f"inference_bench at {src['commit']} (uncommitted changes: {src['uncommitted_changes']}), ", end="")
    print(f"{r['cpus']} CPUs, load average {r['load_1m_before']} -> {r['load_1m_after']}")
    fp = r["footprint"]
    print(
        "\nfootprint: RSS (ps -o rss) in MiB; bare python + aiohttp baseline",
        fp["baseline_bare_python_rss_mib"],
    )
    for step in fp["steps"]:
        cells = ", ".join(
            f"{name} {a['rss_mib']} ({','.join(a['models']) or 'no model'}; "
            f"onnxruntime {'mapped' if a['onnxruntime_mapped'] else 'not mapped'}, "
            f"numpy {'mapped' if a['numpy_mapped'] else 'not mapped'})"
            for name, a in step["agents"].items()
        )
        print(f"  {step['step']:<22} {cells}")
    print("\nlatency, sequential requests, ms p50 / p99")
    for h in r["hop"]:
        d = h["direct_session_run"]
        print(f"  {h['model']}: direct session.run {d['p50_ms']:.3f} / {d['p99_ms']:.3f}")
        for body in ("json", "binary"):
            lo, o = h[f"local_{body}"], h[f"one_hop_{body}"]
            print(
                f"    {body:<6} local {lo['p50_ms']:.3f} / {lo['p99_ms']:.3f}, one hop {o['p50_ms']:.3f} / "
                f"{o['p99_ms']:.3f}: the node adds {h[f'added_by_local_node_{body}_p50_ms']:.3f}, a hop adds "
                f"{h[f'added_per_hop_{body}_p50_ms']:.3f} (p99 {h[f'added_per_hop_{body}_p99_ms']:.3f})"
            )
    print(
        f"\nthroughput, {CONCURRENCY} concurrent clients at the holder, against direct onnxruntime"
        " on the same threads"
    )
    for t in r["throughput"]:
        print(
            f"  {t['model']:<17} ({t['session_run_p50_ms']:.3f} ms a run) direct {t['direct_runs_per_s']}/s "
            f"({t['direct_cpu_ms_per_run']} ms CPU a run)"
        )
        for body, v in t["served"].items():
            print(
                f"    {body:<6} served {v['ok_per_s']}/s: {v['ratio']}x; agent CPU a request "
                f"{v['agent_cpu_ms_per_request']} ms; the client used {v['client_cpu_share']} of a core"
            )
    print(f"\ndynamic batching (in-process ModelHost + ModelLanes, {CONCURRENCY} submitters)")
    for b in r["batching"]:
        print(
            f"  {b['model']:<17} unbatched {b['unbatched']['per_s']}/s, batched {b['batched']['per_s']}/s: "
            f"{b['throughput_gain']}x; latency p50 {b['unbatched']['p50_ms']:.3f} -> "
            f"{b['batched']['p50_ms']:.3f} ms"
        )
    for p in r["priority"]:
        print(f"\npriority ({p['model']}), ms p50 / p99")
        for key in ("critical_unloaded", "normal_unloaded", "critical_under_bulk", "normal_under_bulk"):
            print(f"  {key:<20} {p[key]['p50_ms']:.3f} / {p[key]['p99_ms']:.3f} (n {p[key]['n']})")
        print(
            f"  critical under bulk / unloaded: p50 {p['critical_p50_ratio']}x, "
            f"p99 {p['critical_p99_ratio']}x; "
            f"normal p50 {p['normal_p50_ratio']}x; the bulk load: {p['bulk_load'].get('ok_per_s')}/s, "
            f"statuses {p['bulk_load'].get('statuses')}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer requests and shorter windows (~1 min)")
    parser.add_argument("--bulk-load", nargs=3, metavar=("URL", "MODEL", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bulk_load:  # the load child of priority_figures
        url, model, seconds = args.bulk_load
        print(json.dumps(asyncio.run(http_throughput(url, model, CONCURRENCY, float(seconds), "bulk"))))
        return 0
    ensure_private_netns(argv, Path(__file__))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        result = run(args)
    except BenchError as exc:
        print(f"inference_bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
