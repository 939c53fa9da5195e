"""While a critical request is served from this node's replica, the node's other inference
requests give way at their two heavy steps on the event loop.

A model's queue serves `critical` requests first (inference/requestqueue.py), but before a
request reaches the queue, and after its run, the node's one event loop reads, decodes,
encodes and writes every request in arrival order. Under a flood of small requests the loop
is the bottleneck and a critical request waits for its turns behind the flood's
(docs/benchmarks.md, "Inference threads that pull"). So while a request that said
`Murmur-Priority: critical` in its header is being served here, any other request waits
before decoding its body and before encoding its answer, at most `GIVE_WAY_MAX_S` each
time, so that a stream of critical requests slows the rest but never stops them.

Only the header counts: it is known before the body is read. A request that says
`critical` only in its body's parameters is served first by the queue but does not make
the others give way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

GIVE_WAY_MAX_S = 0.05  # the longest one step of another request waits for critical ones


class CriticalFirst:
    """How many critical requests are being served here, and a way for the others to wait."""

    def __init__(self) -> None:
        self._serving = 0
        self._clear = asyncio.Event()
        self._clear.set()
        self.gave_way = 0  # steps of other requests that waited

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Around serving one critical request."""
        self._serving += 1
        self._clear.clear()
        try:
            yield
        finally:
            self._serving -= 1
            if not self._serving:
                self._clear.set()

    async def give_way(self) -> None:
        """For any other request, before a heavy step: wait while critical ones are served (at
        most GIVE_WAY_MAX_S). Costs nothing when none is."""
        if not self._serving:
            return
        self.gave_way += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._clear.wait(), GIVE_WAY_MAX_S)
