"""The healing part of `murmur demo`: a stream of requests during the heal, and where the lost
replicas went.

The stream runs in a thread so that the story can keep printing while requests flow; it
counts answered and failed requests, nothing more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mesh.dev.demo_models import Answer, infer
from mesh.dev.localmesh import LocalAgent

STREAM_INTERVAL_S = 0.25  # a few requests a second: enough to see, light on a loaded machine
STREAM_TIMEOUT_S = 5.0


@dataclass
class RequestStream:
    """Sends one inference every STREAM_INTERVAL_S to `entry` until stopped."""

    entry: LocalAgent
    model: str
    body: bytes
    answered: int = 0
    failed: int = 0
    last_failure: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-requests", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            answer: Answer = infer(self.entry, self.model, self.body, STREAM_TIMEOUT_S)
            with self._lock:
                if answer.ok:
                    self.answered += 1
                else:
                    self.failed += 1
                    error = answer.doc.get("error") if isinstance(answer.doc, dict) else None
                    self.last_failure = f"HTTP {answer.status}: {error}"
            self._stop.wait(STREAM_INTERVAL_S)

    def counts(self) -> tuple[int, int]:
        """(answered, failed) so far."""
        with self._lock:
            return self.answered, self.failed

    def stop(self) -> tuple[int, int]:
        """Stop the stream (waits for the request in flight); (answered, failed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STREAM_TIMEOUT_S + 1.0)
        return self.counts()


@dataclass
class HealWatch:
    """Follows one deployment's replicas in a region until `desired` of them are ready on live
    nodes, printing each replica placed on a node that did not hold one before the kill.

    `holders` are the node ids that held a replica before; `say` prints a line with the time.
    """

    deployment: str
    dead_node: str
    holders: tuple[str, ...]
    desired: int
    names: dict[str, str]
    say: Callable[[str], None]
    placed: dict[str, str] = field(default_factory=dict)  # new node -> its state last printed
    moved_to: list[str] = field(default_factory=list)

    def observe(self, rows: list[dict[str, object]]) -> bool:
        """Print what changed in the region's replica rows; True once the region is whole again."""
        ready = 0
        for row in rows:
            if row.get("deployment") != self.deployment:
                continue
            slot, node, state = str(row.get("slot")), str(row.get("node")), str(row.get("state"))
            if node == self.dead_node:
                continue
            ready += state == "ready"
            if node in self.holders:
                continue
            name = self.names.get(node, node)
            if node not in self.placed:
                self.moved_to.append(name)
                provisional = " (provisional: the region has no leader)" if row.get("provisional") else ""
                self.say(f"{self.deployment}/{slot} placed on {name} ({node}){provisional}: {state}")
            elif self.placed[node] != state:
                self.say(f"{self.deployment}/{slot} on {name}: {state}")
            self.placed[node] = state
        return ready >= self.desired and bool(self.placed)
