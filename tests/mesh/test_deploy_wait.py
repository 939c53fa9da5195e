"""`deploy --wait` past the record: replicas ready against desired, artifact bytes, the replicas
that will not become ready named, and Ctrl-C. One node's API answers over real HTTP from a script
that moves on at each of the wait's sleeps (an injected clock: no timing in the test)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mesh.cli import deploywait
from mesh.cli.client import EXIT_INTERRUPTED, CliError, CliTimeout
from mesh.cli.progress import Progress
from tests.mesh.test_progress import Stream

SHA = "ab" * 32
OLD_SHA = "cd" * 32
MIB = 1024 * 1024


@dataclass
class Script:
    """What the node answers at each step; step i holds until the wait's i-th sleep."""

    steps: list[dict[str, Any]]
    step: int = 0
    now: float = 0.0
    on_sleep: Callable[[Script], None] | None = None
    answered: list[str] = field(default_factory=list)

    @property
    def state(self) -> dict[str, Any]:
        return self.steps[min(self.step, len(self.steps) - 1)]

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.step += 1
        if self.on_sleep is not None:
            self.on_sleep(self)


def _app(script: Script, port: list[int]) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"region": "north", "regions": {"north": 2}})

    async def nodes(request: web.Request) -> web.Response:
        api = f"127.0.0.1:{port[0]}"
        rows = [{"id": n, "state": "alive", "api": api} for n in ("n1", "n2")]
        return web.json_response(rows)

    async def deployment(request: web.Request) -> web.Response:
        manifest = {"artifact": {"sha256": SHA, "size_bytes": 4 * MIB}}
        return web.json_response({"name": "vibration", "version": 7, "manifest": manifest})

    async def placements(request: web.Request) -> web.Response:
        state = script.state
        if "region" not in request.query:  # the replica node's own: its model host
            return web.json_response({"region": "north", "models": state.get("models", [])})
        replicas = [
            {"deployment": "vibration", "slot": slot, "node": node, "state": st}
            for slot, (node, st) in enumerate(state.get("replicas", []))
        ]
        ready = sum(1 for r in replicas if r["state"] == "ready")
        return web.json_response(
            {
                "region": "north",
                "replicas": replicas,
                "deployments": [{"deployment": "vibration", "ready": ready, "desired": 2}],
                "unplaced": state.get("unplaced", []),
            }
        )

    async def transfers(request: web.Request) -> web.Response:
        return web.json_response(script.state.get("transfers", []))

    app = web.Application()
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/nodes", nodes)
    app.router.add_get("/v1/deployments/{name}", deployment)
    app.router.add_get("/v1/placements", placements)
    app.router.add_get("/v1/transfers", transfers)
    return app


async def _wait(script: Script, tty: bool = False, timeout_s: float = 60.0) -> tuple[Any, str, str]:
    """(exit status or the CliError raised, stdout, the progress stream) of one wait."""
    port: list[int] = []
    async with TestServer(_app(script, port), host="127.0.0.1") as server:
        port.append(server.port)
        out, err = io.StringIO(), Stream(tty)
        progress = Progress(err, script.clock, columns=200)

        def run() -> Any:
            try:
                return deploywait.wait_for(
                    f"127.0.0.1:{server.port}",
                    "vibration",
                    7,
                    timeout_s,
                    script.clock,
                    out,
                    sleep=script.sleep,
                    progress=progress,
                )
            except CliError as exc:
                return exc

        result = await asyncio.to_thread(run)
    return result, out.getvalue(), err.getvalue()


def _transfer(done: int, state: str = "fetching") -> dict[str, Any]:
    return {"sha256": SHA, "state": state, "size_bytes": 4 * MIB, "bytes_done": done}


def _model(sha: str, state: str = "ready", **extra: Any) -> dict[str, Any]:
    return {"deployment": "vibration", "state": state, "sha256": sha, **extra}


async def test_the_wait_goes_on_until_the_replicas_are_ready_and_shows_the_bytes_fetched() -> None:
    script = Script(
        [
            {"replicas": [("n1", "assigned"), ("n2", "assigned")]},
            {"replicas": [("n1", "loading"), ("n2", "assigned")], "transfers": [_transfer(MIB)]},
            {"replicas": [("n1", "loading"), ("n2", "loading")], "transfers": [_transfer(2 * MIB)]},
            {
                "replicas": [("n1", "ready"), ("n2", "ready")],
                "models": [_model(SHA)],
                "transfers": [_transfer(4 * MIB, "done")],
            },
        ]
    )
    code, out, err = await _wait(script)
    assert code == 0, code
    assert "deployment vibration: held by all 2 alive nodes after" in out
    assert "deployment vibration: 2 replica(s) ready in every region after" in out
    assert "  region north: 2/2 replicas ready" in out
    lines = err.splitlines()
    # Without a terminal: one line per change. Both replicas' nodes answer at the one API here, so
    # the bytes of its transfer count twice.
    assert lines[0] == "deployment vibration [####################] 2/2 nodes hold it"
    assert lines[1:] == [
        "deployment vibration [--------------------] 0/2 replicas ready 2 assigned",
        "deployment vibration [--------------------] 0/2 replicas ready 2MiB/8MiB 1 assigned, 1 loading",
        "deployment vibration [--------------------] 0/2 replicas ready 4MiB/8MiB 2 loading",
        "deployment vibration [####################] 2/2 replicas ready 8MiB/8MiB",
    ]


async def test_a_replica_still_serving_the_version_before_is_not_counted_ready() -> None:
    old = {"replicas": [("n1", "ready"), ("n2", "ready")], "models": [_model(OLD_SHA)]}
    loading_new = {**old, "models": [_model(OLD_SHA, next_version="2")]}
    new = {**old, "models": [_model(SHA)]}
    script = Script([old, loading_new, new])
    code, out, err = await _wait(script)
    assert code == 0 and script.step == 2, (code, script.step)
    assert "0/2 replicas ready 2 updating" in err
    assert "2 replica(s) ready in every region" in out


async def test_a_replica_that_cannot_be_placed_is_named_at_once_and_ends_the_wait_with_1() -> None:
    why = "only 1 node meets the requirements for 2 replicas (spread)"
    script = Script(
        [
            {
                "replicas": [("n1", "ready")],
                "models": [_model(SHA)],
                "unplaced": [{"deployment": "vibration", "slot": 1, "reason": why}],
            }
        ]
    )
    result, _out, err = await _wait(script)
    assert isinstance(result, CliError) and result.exit_status == 1
    assert not isinstance(result, CliTimeout)
    named = f"deployment vibration: region north: vibration/1 cannot be placed: {why}"
    assert err.count(named) == 1  # said once, as soon as seen, not at every poll
    assert "1 replica(s) will not become ready without a change" in str(result)
    assert "murmur describe deployment vibration" in str(result)
    assert script.now >= deploywait.PROBLEM_SETTLE_S and script.now < 60  # not the timeout


async def test_a_failed_replica_is_named_with_its_nodes_error() -> None:
    error = "load failed: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF"
    script = Script(
        [{"replicas": [("n1", "failed"), ("n2", "ready")], "models": [_model(SHA, "failed", error=error)]}]
    )
    result, _out, err = await _wait(script)
    assert isinstance(result, CliError) and result.exit_status == 1
    assert f"region north: vibration/0 on n1 failed: {error}" in err
    assert f"vibration/0 on n1 failed: {error}" in str(result)


async def test_a_passing_problem_does_not_end_the_wait() -> None:
    unplaced = [{"deployment": "vibration", "slot": 1, "reason": "no leader placed it yet"}]
    script = Script(
        [
            {"replicas": [("n1", "assigned")], "unplaced": unplaced},
            {"replicas": [("n1", "assigned"), ("n2", "assigned")]},
            {"replicas": [("n1", "ready"), ("n2", "ready")], "models": [_model(SHA)]},
        ]
    )
    code, _out, err = await _wait(script)
    assert code == 0 and "cannot be placed: no leader placed it yet" in err


async def test_the_ready_phase_times_out_with_each_region_and_state() -> None:
    script = Script([{"replicas": [("n1", "ready"), ("n2", "loading")], "models": [_model(SHA)]}])
    result, _out, _err = await _wait(script, timeout_s=3.0)
    assert isinstance(result, CliTimeout) and result.exit_status == 4
    assert "held everywhere, but not every replica is ready after 3 s" in str(result)
    assert "region north: 1/2 replicas ready (1 loading)" in str(result)


async def test_ctrl_c_stops_the_waiting_and_says_how_to_watch_the_rollout() -> None:
    def interrupt(script: Script) -> None:
        if script.step == 2:
            raise KeyboardInterrupt

    script = Script([{"replicas": [("n1", "assigned"), ("n2", "assigned")]}], on_sleep=interrupt)
    code, _out, err = await _wait(script, tty=True)
    assert code == EXIT_INTERRUPTED == 130
    assert err.endswith(
        "\r\x1b[Kstopped waiting (Ctrl-C); deployment vibration version 7 goes on without the CLI. "
        "Watch it: murmur describe deployment vibration\n"
    )


@pytest.mark.parametrize("tty", [True, False])
async def test_on_a_terminal_the_progress_line_is_redrawn_and_cleared(tty: bool) -> None:
    script = Script([{"replicas": [("n1", "ready"), ("n2", "ready")], "models": [_model(SHA)]}])
    code, _out, err = await _wait(script, tty=tty)
    assert code == 0
    assert ("\r\x1b[K" in err) is tty and err.endswith("\r\x1b[K" if tty else "\n")
