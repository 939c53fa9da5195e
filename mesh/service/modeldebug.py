"""A debug hook (only with `murmur agent --debug-hooks`): saturate this node's inference threads
with back-to-back inferences and measure how late the event loop runs meanwhile.

    POST /v1/debug/infer-load {"deployment": "image-classifier", "duration_s": 10, "concurrency": 8}
        -> 202; the load runs in the background (one at a time: 409 while one runs)
    GET /v1/debug/infer-load -> {"running": false, "inferences": ..., "loop_lag_ms": {...}, ...}

It exists to show that inference never starves gossip (tests/real/test_models_real.py):
its requests, zeros shaped by the model's signature, go through the model's queue and the
inference threads as the API's do (mesh/service/modellanes.py, at `bulk` priority), without
HTTP in the way.
Loop lag: a probe sleeps `LAG_PROBE_S` again and again; how much later than asked it
wakes is the lag (p50, p99, max).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from inference.requestqueue import Priority
from mesh.service.modelhost import ModelError, ModelHost, zeros_like_signature
from mesh.service.modellanes import InferFailed, ModelLanes, QueueFull

LAG_PROBE_S = 0.01
DURATION_MAX_S = 60.0
CONCURRENCY_MAX = 64


class InferLoad:
    """The one load run at a time, and the result of the last."""

    def __init__(self, models: ModelHost, lanes: ModelLanes) -> None:
        self.models = models
        self.lanes = lanes
        self.task: asyncio.Task[None] | None = None
        self.result: dict[str, Any] = {"running": False}

    async def run(self, deployment: str, duration_s: float, concurrency: int) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_s
        counts = {"inferences": 0, "errors": 0}
        lags_s: list[float] = []
        errors: list[str] = []

        async def worker() -> None:
            while loop.time() < end:
                model = self.models.loaded(deployment)
                try:
                    if model is None:
                        raise ModelError(f"{deployment}: not loaded here")
                    await self.lanes.lane(deployment).submit(zeros_like_signature(model), Priority.BULK)
                    counts["inferences"] += 1
                except (ModelError, QueueFull, InferFailed) as exc:
                    counts["errors"] += 1
                    if len(errors) < 5:
                        errors.append(str(exc))
                    await asyncio.sleep(0.05)

        async def probe() -> None:
            while loop.time() < end:
                asked = loop.time()
                await asyncio.sleep(LAG_PROBE_S)
                lags_s.append(max(0.0, loop.time() - asked - LAG_PROBE_S))

        started = loop.time()
        await asyncio.gather(probe(), *(worker() for _ in range(concurrency)))
        lags_s.sort()

        def at(q: float) -> float:
            return round(lags_s[min(len(lags_s) - 1, int(q * len(lags_s)))] * 1000, 2) if lags_s else 0.0

        self.result = {
            "running": False,
            "deployment": deployment,
            "concurrency": concurrency,
            "duration_s": round(loop.time() - started, 2),
            **counts,
            "first_errors": errors,
            "loop_lag_ms": {"p50": at(0.5), "p99": at(0.99), "max": at(1.0), "probes": len(lags_s)},
        }


async def post_infer_load(request: web.Request) -> web.Response:
    load = request.app[LOAD]
    if load.task is not None and not load.task.done():
        return web.json_response({"error": "a load is running; GET /v1/debug/infer-load"}, status=409)
    try:
        doc = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    usage = '{"deployment": NAME, "duration_s": 0 < S <= 60, "concurrency": 1..64}'
    if not isinstance(doc, dict):
        return web.json_response({"error": f"body must be JSON: {usage}"}, status=400)
    deployment, duration_s, concurrency = doc.get("deployment"), doc.get("duration_s"), doc.get("concurrency")
    if (
        not isinstance(deployment, str)
        or not isinstance(duration_s, int | float)
        or isinstance(duration_s, bool)
        or not 0 < duration_s <= DURATION_MAX_S
        or not isinstance(concurrency, int)
        or isinstance(concurrency, bool)
        or not 1 <= concurrency <= CONCURRENCY_MAX
    ):
        return web.json_response({"error": f"body must be JSON: {usage}"}, status=400)
    load.result = {"running": True}
    load.task = asyncio.create_task(load.run(deployment, float(duration_s), concurrency))
    return web.json_response({"running": True}, status=202)


async def get_infer_load(request: web.Request) -> web.Response:
    return web.json_response(request.app[LOAD].result)


async def _cancel_on_cleanup(app: web.Application) -> Any:
    yield
    task = app[LOAD].task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


LOAD = web.AppKey("infer_load", InferLoad)


def add_routes(app: web.Application, models: ModelHost, lanes: ModelLanes) -> None:
    """Add the debug hook's routes (launch.py, with --debug-hooks only)."""
    app[LOAD] = InferLoad(models, lanes)
    app.router.add_post("/v1/debug/infer-load", post_infer_load)
    app.router.add_get("/v1/debug/infer-load", get_infer_load)
    app.cleanup_ctx.append(_cancel_on_cleanup)
