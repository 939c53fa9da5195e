"""A hosted test core: numbered requests to every region peer, each answered, resent until answered.

It is what the election core will be, in miniature: it learns its peers from
gossip events, talks to them only with application messages on its channel,
keeps its own timer, and reports events. Tests drive it through the composite
node on the in-memory link (tests/gossip/harness.py), with loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from gossip.events import Event, HostedEvent, MemberChanged, MemberState
from gossip.records import Record
from node.channels import Channel
from node.hosted import AppSend

REQUEST = 0
REPLY = 1


@dataclass(frozen=True, slots=True)
class PeerAnswered(HostedEvent):
    """Every request this core sent to peer was answered."""

    peer: str


class EchoCore:
    """Sends `requests` numbered requests to each live region peer; resends the unanswered."""

    def __init__(self, requests: int = 5, retry_s: float = 0.3, channel: int = Channel.TEST_FIRST) -> None:
        self._channel = channel
        self.requests = requests
        self.retry_s = retry_s
        self.unanswered: dict[str, set[int]] = {}  # peer -> seqs not yet answered
        self.received: dict[str, set[int]] = {}  # peer -> seqs it asked us
        self.duplicates = 0
        self.malformed = 0
        self._out: list[AppSend] = []
        self._events: list[HostedEvent] = []
        self._next_retry_s: float | None = None

    @property
    def channel(self) -> int:
        return self._channel

    def observe(self, now: float, event: Event) -> None:
        if type(event) is not MemberChanged or event.pool != "region":
            return
        if event.state == MemberState.ALIVE and event.node_id not in self.unanswered:
            self.unanswered[event.node_id] = set(range(self.requests))
            self._send_all(event.node_id)
            self._arm(now)
        elif event.state in (MemberState.DEAD, MemberState.LEFT):
            self.unanswered.pop(event.node_id, None)

    def handle_message(self, now: float, pool: str, from_id: str, payload: bytes) -> None:
        try:
            kind, seq = msgpack.unpackb(payload)
        except Exception:
            self.malformed += 1
            return
        if kind == REQUEST:
            seen = self.received.setdefault(from_id, set())
            if seq in seen:
                self.duplicates += 1
            seen.add(seq)
            self._out.append(AppSend(from_id, msgpack.packb([REPLY, seq])))
        elif kind == REPLY:
            pending = self.unanswered.get(from_id)
            if pending and seq in pending:
                pending.discard(seq)
                if not pending:
                    self._events.append(PeerAnswered(from_id))

    def ask(self, now: float, peer: str, seq: int) -> None:
        """Send one more request to peer (a test's own)."""
        self.unanswered.setdefault(peer, set()).add(seq)
        self._out.append(AppSend(peer, msgpack.packb([REQUEST, seq])))
        self._arm(now)

    def handle_timer(self, now: float) -> None:
        self._next_retry_s = None
        for peer, pending in self.unanswered.items():
            for seq in sorted(pending):
                self._out.append(AppSend(peer, msgpack.packb([REQUEST, seq])))
        self._arm(now)

    def next_deadline(self) -> float | None:
        return self._next_retry_s

    def poll_messages(self) -> list[AppSend]:
        out, self._out = self._out, []
        return out

    def drain_events(self) -> list[HostedEvent]:
        out, self._events = self._events, []
        return out

    def poll_records(self) -> list[tuple[Record, bool]]:
        return []

    def _send_all(self, peer: str) -> None:
        for seq in range(self.requests):
            self._out.append(AppSend(peer, msgpack.packb([REQUEST, seq])))

    def _arm(self, now: float) -> None:
        if any(self.unanswered.values()) and self._next_retry_s is None:
            self._next_retry_s = now + self.retry_s
