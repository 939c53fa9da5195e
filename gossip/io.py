"""The I/O vocabulary of the sans-IO cores: what a core asks its driver to send.

A core never touches a socket. It returns these values from `poll_transmit()`;
the driver (mesh/service/runtime.py on a device, sim/ in the simulator) seals them with
the envelope and puts them on the wire, and feeds what arrives back in. A
`ConnCheck` sends no data at all: it asks the driver whether the host at an
address still has something listening there (docs/design.md, "Refused
connections"); a `Watch` holds an idle connection open so that the death of the
process at the other end is heard at once ("Watched connections").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from gossip.events import Event


@dataclass(frozen=True, slots=True)
class AppSend:
    """One application message a hosted core wants sent to member `dst_id` of `pool`.

    Defined here, the lowest layer, so that every hosted core (node/, consensus/,
    inference/) can return it; node/hosted.py re-exports it.
    """

    dst_id: str
    payload: bytes
    pool: str = "region"


@dataclass(frozen=True, slots=True)
class Datagram:
    """One UDP packet to send to `dst` ("host:port"); plaintext, sealed by the driver."""

    dst: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class StreamOpen:
    """Open a reliable stream to `dst`, send `payload`, read one reply frame.

    The driver answers with `handle_stream_reply(now, request_id, reply)`, where
    reply is None when the peer could not be reached or timed out.
    """

    dst: str
    request_id: int
    payload: bytes


class CheckResult(IntEnum):
    """How a connection check (`ConnCheck`) ended."""

    # No answer within the timeout: the host is lost, cut off, or the packets were.
    TIMED_OUT = 0
    # The host answered with a reset: nothing listens there, that process is gone.
    REFUSED = 1
    # The handshake completed: the host is up and something holds the port.
    ACCEPTED = 2


@dataclass(frozen=True, slots=True)
class ConnCheck:
    """Try a TCP connection to `dst` ("host:port"), send nothing, and close it at once.

    The driver answers with `handle_conn_check(now, request_id, result)` within
    about `timeout_s`; a driver may leave a check that timed out unanswered (the
    core forgets a check when the probe it served ends, so that reads the same).
    """

    dst: str
    request_id: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Watch:
    """Open a TCP connection to `dst`, send the watch greeting, and hold it open, idle.

    When a process dies, its kernel closes every connection it held: the
    watcher hears a FIN or a reset at once, though the dead process sends
    nothing (docs/design.md, "Watched connections"). The driver answers with
    `handle_watch_ended(now, watch_id, peer_closed)` when the connection ends:
    peer_closed True when the peer's host closed or refused it (FIN, reset,
    ECONNREFUSED), False when it failed otherwise (a timeout, an unreachable
    network, the peer declining the watch). It never answers after `Unwatch`.
    """

    dst: str
    watch_id: int


@dataclass(frozen=True, slots=True)
class Unwatch:
    """Close the watch `watch_id` (no answer follows)."""

    watch_id: int


Outbound = Datagram | StreamOpen | ConnCheck | Watch | Unwatch


class Core(Protocol):
    """What a driver drives: the shape of gossip.node.GossipNode (and of test cores)."""

    # sender_id: the member the driver's pairwise envelope proved sent the frame ("" for
    # a network-key frame, or a driver without pairwise keys); see gossip/envelope.py.
    # claimed_id: the id a network-key stream request names (unproven); the driver seals
    # the answer so that only that node opens it.
    def handle_datagram(self, now: float, src: str, data: bytes, sender_id: str = "") -> None: ...
    def handle_stream_request(
        self, now: float, src: str, data: bytes, sender_id: str = "", claimed_id: str = ""
    ) -> bytes | None: ...
    def handle_stream_reply(self, now: float, request_id: int, data: bytes | None) -> None: ...
    def handle_conn_check(self, now: float, request_id: int, result: CheckResult) -> None: ...
    def handle_watch_ended(self, now: float, watch_id: int, peer_closed: bool) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...
    def poll_transmit(self) -> list[Outbound]: ...
    def next_event(self) -> Event | None: ...


class Sealer(Protocol):
    """The envelope as drivers use it (gossip.envelope.Keyring): seal with a given nonce, open or None."""

    def seal(self, plaintext: bytes, nonce: bytes) -> bytes: ...
    def open(self, data: bytes) -> bytes | None: ...
