"""A tiny ping/ack protocol with the gossip core's method shape, to test the engine alone.

Every probe interval a node pings a random peer; a peer that misses an ack
becomes suspect, then dead after two more misses. Now and then it opens a
stream to a peer, which echoes the request. Every input is logged with its
`now`, so tests can see exactly what the engine delivered, when, in what order.
"""

from __future__ import annotations

import random

from gossip.events import Event, MemberChanged, MemberState
from gossip.io import CheckResult, Datagram, StreamOpen


class ToyCore:
    """Ping/ack between a fixed set of peers; echo streams."""

    def __init__(
        self,
        addr: str,
        peers: list[str],
        rng: random.Random,
        *,
        now: float = 0.0,
        probe_interval_s: float = 1.0,
        ack_timeout_s: float = 0.5,
        stream_interval_s: float | None = None,
    ) -> None:
        self.addr = addr
        self.peers = [p for p in peers if p != addr]
        self.rng = rng
        self.probe_interval_s = probe_interval_s
        self.ack_timeout_s = ack_timeout_s
        self.stream_interval_s = stream_interval_s
        self.log: list[tuple[float, str, str]] = []
        self.out: list[Datagram | StreamOpen] = []
        self.events: list[Event] = []
        self.misses: dict[str, int] = {}
        self.pending: dict[int, tuple[str, float]] = {}  # seq -> (peer, deadline)
        self.seq = 0
        self.request_id = 0
        self.next_probe_s = now + rng.uniform(0.0, probe_interval_s)
        self.next_stream_s = now + stream_interval_s if stream_interval_s is not None else None
        self.replies: list[tuple[float, int, bytes | None]] = []

    # -- the driver API -------------------------------------------------------------

    def handle_datagram(self, now: float, src: str, data: bytes, sender_id: str = "") -> None:
        self.log.append((now, "dgram", f"{src} {data.decode()}"))
        kind, _, rest = data.decode().partition(":")
        if kind == "ping":
            self.out.append(Datagram(src, b"ack:" + rest.encode()))
        elif kind == "ack":
            entry = self.pending.pop(int(rest), None)
            if entry is not None:
                self._alive(entry[0])

    def handle_stream_request(
        self, now: float, src: str, data: bytes, sender_id: str = "", claimed_id: str = ""
    ) -> bytes | None:
        self.log.append((now, "stream_request", f"{src} {data.decode()}"))
        if data == b"refuse":
            return None
        return b"echo:" + data

    def handle_stream_reply(self, now: float, request_id: int, data: bytes | None) -> None:
        self.log.append((now, "stream_reply", f"{request_id} {data!r}"))
        self.replies.append((now, request_id, data))

    def handle_conn_check(self, now: float, request_id: int, result: CheckResult) -> None:
        self.log.append((now, "conn_check", f"{request_id} {result.name}"))

    def handle_timer(self, now: float) -> None:
        self.log.append((now, "timer", ""))
        for seq, (peer, deadline) in list(self.pending.items()):
            if now >= deadline:
                del self.pending[seq]
                self._missed(peer)
        if now >= self.next_probe_s and self.peers:
            self.next_probe_s = now + self.probe_interval_s
            peer = self.rng.choice(self.peers)
            self.seq += 1
            self.pending[self.seq] = (peer, now + self.ack_timeout_s)
            self.out.append(Datagram(peer, f"ping:{self.seq}".encode()))
        if self.next_stream_s is not None and now >= self.next_stream_s and self.peers:
            assert self.stream_interval_s is not None
            self.next_stream_s = now + self.stream_interval_s
            self.open_stream(self.rng.choice(self.peers), b"sync")

    def next_deadline(self) -> float | None:
        t = self.next_probe_s
        for _peer, deadline in self.pending.values():
            t = min(t, deadline)
        if self.next_stream_s is not None:
            t = min(t, self.next_stream_s)
        return t

    def poll_transmit(self) -> list[Datagram | StreamOpen]:
        out, self.out = self.out, []
        return out

    def next_event(self) -> Event | None:
        return self.events.pop(0) if self.events else None

    # -- helpers for tests ----------------------------------------------------------

    def send(self, dst: str, text: str) -> None:
        """Queue a datagram (tests call this through engine.call_node_at)."""
        self.out.append(Datagram(dst, text.encode()))

    def open_stream(self, dst: str, payload: bytes) -> int:
        self.request_id += 1
        self.out.append(StreamOpen(dst, self.request_id, payload))
        return self.request_id

    def _missed(self, peer: str) -> None:
        n = self.misses.get(peer, 0) + 1
        self.misses[peer] = n
        if n == 1:
            self.events.append(MemberChanged("region", peer, peer, MemberState.SUSPECT, 0))
        elif n == 3:
            self.events.append(MemberChanged("region", peer, peer, MemberState.DEAD, 0))

    def _alive(self, peer: str) -> None:
        if self.misses.pop(peer, 0):
            self.events.append(MemberChanged("region", peer, peer, MemberState.ALIVE, 0))


class RecordingListener:
    """An engine listener that keeps everything."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int, Event]] = []
        self.violations: list[tuple[float, str, str]] = []

    def on_event(self, now: float, slot: object, event: Event) -> None:
        self.events.append((now, getattr(slot, "idx", -1), event))

    def on_violation(self, now: float, kind: str, detail: str) -> None:
        self.violations.append((now, kind, detail))
