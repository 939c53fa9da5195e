"""`drain NODE --wait`: until the node holds no replica and the replacements are ready, with
replicas moved against to move; a replacement with nowhere to go is named and ends the wait;
Ctrl-C stops the waiting. A region's placement answers over real HTTP from a script that moves
on at each of the wait's sleeps (an injected clock)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from mesh.cli.client import EXIT_INTERRUPTED, CliError, CliTimeout, NodeClient
from mesh.cli.drainwait import wait_drained
from mesh.cli.progress import Progress
from tests.mesh.test_deploy_wait import Script
from tests.mesh.test_progress import Stream

DRAINED = "d" * 16


def _placement(on_node: list[str], ready: dict[str, int], unplaced: Sequence[str] = ()) -> dict[str, Any]:
    """Each deployment has 1 replica desired; `on_node`: the deployments the draining node still holds."""
    replicas = [{"deployment": d, "slot": 1, "node": DRAINED, "state": "ready"} for d in on_node]
    replicas += [
        {"deployment": d, "slot": 0, "node": "e" * 16, "state": "ready" if n else "loading"}
        for d, n in sorted(ready.items())
    ]
    return {
        "region": "north",
        "replicas": replicas,
        "deployments": [
            {"deployment": d, "ready": n + on_node.count(d), "desired": 1} for d, n in sorted(ready.items())
        ],
        "unplaced": [{"deployment": d, "slot": 0, "reason": "no schedulable node"} for d in unplaced],
    }


async def _drain(script: Script, timeout_s: float = 60.0, tty: bool = False) -> tuple[Any, str, str]:
    async def placements(request: web.Request) -> web.Response:
        assert request.query.get("region") == "north"
        return web.json_response(script.state)

    app = web.Application()
    app.router.add_get("/v1/placements", placements)
    async with TestServer(app, host="127.0.0.1") as server:
        out, err = io.StringIO(), Stream(tty)

        def run() -> Any:
            try:
                return wait_drained(
                    NodeClient(f"127.0.0.1:{server.port}"),
                    DRAINED,
                    "north",
                    timeout_s,
                    script.clock,
                    out,
                    sleep=script.sleep,
                    progress=Progress(err, script.clock, columns=200),
                )
            except CliError as exc:
                return exc

        result = await asyncio.to_thread(run)
    return result, out.getvalue(), err.getvalue()


async def test_the_wait_ends_when_the_node_holds_nothing_and_the_replacements_are_ready() -> None:
    script = Script(
        [
            _placement(["a", "b"], {"a": 0, "b": 0}),  # replacements loading; the old ones kept
            _placement(["a", "b"], {"a": 1, "b": 0}),  # a's replacement ready: the next placement drops it
            _placement(["b"], {"a": 1, "b": 0}),
            _placement([], {"a": 1, "b": 1}),
        ]
    )
    code, out, err = await _drain(script)
    assert code == 0, code
    assert f"drain {DRAINED}: it holds no replica in region north; 2 moved, every replacement ready" in out
    assert err.splitlines() == [
        f"drain {DRAINED} [--------------------] 0/2 replicas moved",
        f"drain {DRAINED} [##########----------] 1/2 replicas moved",
        f"drain {DRAINED} [####################] 2/2 replicas moved",
    ]


async def test_a_replacement_with_nowhere_to_go_is_named_and_ends_the_wait_with_1() -> None:
    script = Script([_placement(["a"], {"a": 0}, unplaced=["a"])])
    result, _out, err = await _drain(script)
    assert isinstance(result, CliError) and not isinstance(result, CliTimeout) and result.exit_status == 1
    assert err.count(f"drain {DRAINED}: region north: a/0 cannot be placed: no schedulable node") == 1
    assert "The node stays draining" in str(result)


async def test_a_drain_that_does_not_finish_times_out_and_ctrl_c_stops_the_waiting() -> None:
    result, _out, _err = await _drain(Script([_placement(["a"], {"a": 0})]), timeout_s=2.0)
    assert isinstance(result, CliTimeout) and "it still holds 1 replica(s) in region north" in str(result)

    def interrupt(script: Script) -> None:
        raise KeyboardInterrupt

    code, _out, err = await _drain(Script([_placement(["a"], {"a": 0})], on_sleep=interrupt), tty=True)
    assert code == EXIT_INTERRUPTED
    assert err.endswith(
        f"\r\x1b[Kstopped waiting (Ctrl-C); the drain of {DRAINED} goes on without the CLI. "
        "Watch it: murmur placements --region north\n"
    )
