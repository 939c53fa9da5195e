"""The asyncio driver of a sans-IO gossip core: one UDP socket, one TCP listener, one timer.

The core never sees a socket or a clock. This module feeds it `loop.time()` and
what arrives, and after every call into it: sends what `poll_transmit()` returns
(sealed with the network keyring), hands `next_event()` values to subscribers,
and re-arms a single `loop.call_at(next_deadline())`. aioquic's asyncio
protocol has the same shape.

Sealing (gossip/envelope.py): a frame to a member whose key the core knows
(`peer_at`, `peer_key`) is sealed pairwise, so the receiver knows which member
sent it; anything else (a join to a seed, a reply to a stranger) under the
network key. What opens is handed to the core with the proven sender id ("" for
a network-key frame). A stream's reply is sealed the way its request was (a
join's answer only for the joiner, see `_seal_answer`), and a reply to a
pairwise request must come from the member it was sealed to.

Streams carry one request frame and one reply frame per TCP connection; a frame
is a 4-byte big-endian length then the sealed bytes. Anything that does not
open with the keyring, is too large, or is too slow is dropped and counted:
a bad peer costs a counter, never the node.

Inbound streams are admitted by a ConnectionTable (mesh/service/connlimits.py):
a stranger's address holds at most STREAMS_IN_PER_HOST_MAX of them, strangers
together STREAMS_IN_STRANGERS_MAX, and the rest of STREAMS_IN_MAX is kept for
members (`is_member_host`). A connection must deliver its whole request frame
within REQUEST_FRAME_DEADLINE_S, extended as its bytes arrive at
REQUEST_FRAME_RATE_MIN_BYTES_PER_S (a large push-pull on a slow link), never
beyond the stream timeout: an idle connection holds a slot for 2 s, not 30.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import nacl.signing
import nacl.utils

from gossip.config import ENVELOPE_OVERHEAD_BYTES
from gossip.envelope import (
    BOXES_MAX,
    FRAME_OVERHEAD_MAX_BYTES,
    INTRO_OVERHEAD_BYTES,
    Keyring,
    PeerEnvelope,
    PeerKeys,
)
from gossip.events import Event
from gossip.io import CheckResult, ConnCheck, Core, Datagram, StreamOpen, Unwatch, Watch
from mesh.netaddr import join_hostport, split_hostport
from mesh.service.connlimits import ConnectionCaps, ConnectionTable, Slot
from mesh.service.watches import WATCH_GREETING, WatchLinks

log = logging.getLogger(__name__)

T = TypeVar("T")
NONCE_BYTES = 24
FRAME_HEADER = struct.Struct(">I")
# Concurrency limits: a flood of connections or stream requests queues nowhere.
STREAMS_OUT_MAX = 32
STREAMS_IN_MAX = 64
# A stranger (an address that is no member's) needs one stream to join; 8 covers
# retries and a few nodes behind one NAT, and 48 strangers leave 16 slots to members.
STREAMS_IN_PER_HOST_MAX = 8
STREAMS_IN_STRANGERS_MAX = 48
# Connection checks in flight at once (one per unanswered probe, a few per second
# at most); beyond this a check is dropped, counted, and answered as timed out.
CONN_CHECKS_MAX = 16
# A peer writes its request as soon as it connects: 2 s is many round trips on a
# LAN, and what an idle connection may hold a slot for.
REQUEST_FRAME_DEADLINE_S = 2.0
# A frame's bytes arriving at least this fast extend the deadline (a 1 MiB
# push-pull over a 1 Mbit/s fleet link), up to the stream timeout.
REQUEST_FRAME_RATE_MIN_BYTES_PER_S = 64 * 1024
READ_CHUNK_BYTES = 64 * 1024
PROVEN_PEERS_MAX = BOXES_MAX
# Frames introducing keys we have not met cost an X25519 multiplication (~45 us)
# each: at most this many per second (a burst of joins in a cold start is well
# below it; a flood of random keys costs at most ~3 ms of CPU per second).
NEW_KEYS_PER_S = 64.0
NEW_KEYS_BURST = 256


class FrameError(Exception):
    """A stream frame that breaks the framing rules (the message is the counter key)."""


async def read_frame(reader: asyncio.StreamReader, sealed_max_bytes: int) -> bytes:
    """One length-prefixed frame; FrameError if it announces more than `sealed_max_bytes`."""
    length = _frame_length(await reader.readexactly(FRAME_HEADER.size), sealed_max_bytes)
    return await reader.readexactly(length)


def _frame_length(header: bytes, sealed_max_bytes: int) -> int:
    """The length a frame header announces; FrameError outside what a sealed frame can be."""
    (length,) = FRAME_HEADER.unpack(header)
    if length > sealed_max_bytes:
        raise FrameError("frame_too_large")
    if length < ENVELOPE_OVERHEAD_BYTES:
        raise FrameError("frame_too_short")
    return int(length)


async def read_request_frame(
    reader: asyncio.StreamReader, sealed_max_bytes: int, *, started_s: float, timeout_s: float
) -> bytes:
    """One frame that must be complete by `started_s` + REQUEST_FRAME_DEADLINE_S, later only as
    fast as REQUEST_FRAME_RATE_MIN_BYTES_PER_S brings its bytes, never after `started_s` + `timeout_s`.

    TimeoutError when the deadline passes (loop time, as `started_s`)."""
    latest_s = started_s + timeout_s
    async with asyncio.timeout_at(min(started_s + REQUEST_FRAME_DEADLINE_S, latest_s)) as deadline:
        length = _frame_length(await reader.readexactly(FRAME_HEADER.size), sealed_max_bytes)
        chunks: list[bytes] = []
        received = 0
        while received < length:
            chunk = await reader.read(min(length - received, READ_CHUNK_BYTES))
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(chunks), length)
            chunks.append(chunk)
            received += len(chunk)
            extended_s = started_s + REQUEST_FRAME_DEADLINE_S + received / REQUEST_FRAME_RATE_MIN_BYTES_PER_S
            deadline.reschedule(min(extended_s, latest_s))
        return b"".join(chunks)


def frame(sealed: bytes) -> bytes:
    """The length prefix and `sealed`."""
    return FRAME_HEADER.pack(len(sealed)) + sealed


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._runtime._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a dead peer surfaces here; it is expected.
        self._runtime._drop("udp_error", exc)


class Runtime:
    """Drives one core on one UDP socket and one TCP listener sharing host:port."""

    def __init__(
        self,
        keyring: Keyring,
        *,
        packet_max_bytes: int,
        stream_max_bytes: int,
        stream_timeout_s: float,
        node_key: nacl.signing.SigningKey | None = None,
    ) -> None:
        # node_key: this node's identity; with it, frames to members are sealed pairwise.
        self._envelope = PeerEnvelope(keyring, node_key)
        self._peers: PeerKeys | None = None
        # Peers whose pairwise frame opened here: they know our key, so frames to them
        # need not introduce it. Bounded like the envelope's boxes.
        self._proven: OrderedDict[str, None] = OrderedDict()
        # A token bucket for keys the envelope has not met (an X25519 multiplication each).
        self._new_key_tokens = float(NEW_KEYS_BURST)
        self._new_key_tokens_at = 0.0
        self._packet_max_bytes = packet_max_bytes
        self._sealed_stream_max_bytes = stream_max_bytes + FRAME_OVERHEAD_MAX_BYTES
        self._stream_max_bytes = stream_max_bytes
        self._stream_timeout_s = stream_timeout_s
        self._loop = asyncio.get_running_loop()
        self._node: Core | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams_out = 0
        self._checks_out = 0
        self.counters: Counter[str] = Counter()
        self._streams_in = ConnectionTable(
            ConnectionCaps(
                total_max=STREAMS_IN_MAX,
                per_host_max=STREAMS_IN_PER_HOST_MAX,
                strangers_max=STREAMS_IN_STRANGERS_MAX,
            ),
            lambda reason: self._drop(f"stream_in_{reason}"),
        )
        # Whether an address (no port: streams come from ephemeral ports) is a
        # member's; the node service sets it (mesh/service/agent.py).
        self.is_member_host: Callable[[str], bool] = lambda host: False
        self._subscribers: list[Callable[[Event], None]] = []
        # Watched connections (mesh/service/watches.py), both ends.
        self.watches = WatchLinks(
            seal_greeting=self._seal_greeting,
            frame=frame,
            on_end=self._watch_ended,
            spawn=self._track,
            counters=self.counters,
        )
        self._flushing = False
        self._closed = False
        self.addr = ""

    # --- setup ---------------------------------------------------------------

    async def bind(self, host: str, port: int) -> str:
        """Open the UDP socket and the TCP listener on host:port (port 0: pick one); the bound address."""
        attempts = 20 if port == 0 else 1
        for attempt in range(attempts):
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port)
            )
            bound_port = int(transport.get_extra_info("sockname")[1])
            try:
                server = await asyncio.start_server(self._serve_stream, host, bound_port, reuse_address=True)
            except OSError:
                transport.close()
                if attempt + 1 == attempts:
                    raise
                continue  # the TCP twin of a random UDP port was taken: draw again
            self._udp = transport
            self._server = server
            self.addr = join_hostport(host, bound_port)
            return self.addr
        raise AssertionError("unreachable")

    @property
    def keyring(self) -> Keyring:
        """The network keys (install, use, remove rotate them without a restart)."""
        return self._envelope.keyring

    def attach(self, node: Core, peers: PeerKeys | None = None) -> None:
        """Start driving `node`; traffic that arrived before this was dropped.

        peers (usually the node itself) says who is at which address and with
        which key; without it every frame is sealed with the network key.
        """
        self._node = node
        self._peers = peers
        self._flush()

    def _peer_key_at(self, dst: str) -> tuple[str, bytes | None]:
        """(member id, public key) of the member at dst, ("", None) if none: whom to seal to."""
        peers = self._peers
        if peers is None or not self._envelope.pairwise:
            return "", None
        peer = peers.peer_at(dst)
        if peer is None:
            return "", None
        key = peers.peer_key(peer)
        return (peer, key) if key is not None else ("", None)

    def _key_of(self, node_id: str) -> bytes | None:
        return self._peers.peer_key(node_id) if self._peers is not None else None

    def _seal(
        self, payload: bytes, peer_key: bytes | None, peer: str = "", room_bytes: int | None = None
    ) -> bytes:
        """Seal to peer_key: pairwise if the peer has shown it knows our key; else introducing our
        key if that fits in room_bytes; else under the network key (it reads us as a stranger,
        as it would a frame it cannot open, but it still answers a probe)."""
        introduce = peer_key is not None and peer not in self._proven
        if introduce and room_bytes is not None and len(payload) + INTRO_OVERHEAD_BYTES > room_bytes:
            introduce, peer_key = False, None
        return self._envelope.seal(payload, nacl.utils.random(NONCE_BYTES), peer_key, introduce=introduce)

    def _open(self, data: bytes) -> tuple[bytes, str] | tuple[None, str]:
        """Open a frame; a pairwise one proves its sender knows our key (we stop introducing us)."""
        now = self._loop.time()
        self._new_key_tokens = min(
            NEW_KEYS_BURST, self._new_key_tokens + (now - self._new_key_tokens_at) * NEW_KEYS_PER_S
        )
        self._new_key_tokens_at = now
        derived = self._envelope.keys_derived
        opened = self._envelope.open(data, self._key_of, new_keys_allowed=self._new_key_tokens >= 1)
        # Every key derived costs a token, whether the frame then opened or not.
        self._new_key_tokens -= self._envelope.keys_derived - derived
        plaintext, sender = opened
        if plaintext is not None and sender:
            proven = self._proven
            if sender in proven:
                proven.move_to_end(sender)
            else:
                proven[sender] = None
                if len(proven) > PROVEN_PEERS_MAX:
                    proven.popitem(last=False)
        return opened

    def _seal_answer(self, answer: bytes, sender: str, claimed: str) -> bytes:
        """A stream's answer: pairwise to a proven member; to a network-key request (a join),
        sealed to the key of the node it names if we know it now (its admission rode on it),
        so that only that node reads the pool it joined; else under the network key."""
        if sender:
            return self._seal(answer, self._key_of(sender))
        key = self._key_of(claimed) if claimed and self._envelope.pairwise else None
        if key is not None:
            self.counters["answers_sealed_to_joiner"] += 1
        return self._envelope.seal_to(answer, nacl.utils.random(NONCE_BYTES), key)

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """Call `callback` with every event the core reports, in order."""
        self._subscribers.append(callback)

    def drive(self, action: Callable[[float], T]) -> T:
        """Call into the core (e.g. `lambda now: node.join(now, seeds)`), then flush its output."""
        result = action(self._loop.time())
        self._flush()
        return result

    async def close(self) -> None:
        """Stop the timer, cancel stream exchanges, close both sockets."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._udp is not None:
            self._udp.close()

    # --- the one place that empties the core after a call ----------------------

    def _flush(self) -> None:
        node = self._node
        if node is None or self._closed:
            return
        if self._flushing:
            return  # a subscriber called into the core: the outer loop drains it
        self._flushing = True
        try:
            while True:
                transmits = node.poll_transmit()
                for out in transmits:
                    match out:
                        case Datagram():
                            self._send_datagram(out)
                        case StreamOpen():
                            self._open_stream(out)
                        case ConnCheck():
                            self._check_conn(out)
                        case Watch():
                            self.watches.open(out)
                        case Unwatch():
                            self.watches.close(out.watch_id)
                events = 0
                while (event := node.next_event()) is not None:
                    events += 1
                    self._dispatch(event)
                if not transmits and not events:
                    break
        finally:
            self._flushing = False
        self._arm_timer(node.next_deadline())

    def _arm_timer(self, deadline: float | None) -> None:
        if deadline == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._node is not None and not self._closed:
            self._node.handle_timer(self._loop.time())
            self._flush()

    def _dispatch(self, event: Event) -> None:
        self.counters[f"event_{type(event).__name__}"] += 1
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                self.counters["subscriber_error"] += 1
                log.exception("event subscriber %r failed on %r", callback, event)

    def _drop(self, reason: str, detail: object = "") -> None:
        self.counters[f"drop_{reason}"] += 1
        log.debug("dropped (%s) %s; drops so far: %d", reason, detail, self.counters[f"drop_{reason}"])

    # --- datagrams -------------------------------------------------------------

    def _send_datagram(self, out: Datagram) -> None:
        if self._udp is None:
            return
        try:
            host, port = split_hostport(out.dst)
        except ValueError:
            self._drop("bad_destination", out.dst)
            return
        peer, peer_key = self._peer_key_at(out.dst)
        sealed = self._seal(out.payload, peer_key, peer, self._packet_max_bytes)
        if len(sealed) > self._packet_max_bytes:
            self._drop("datagram_too_large_out", len(sealed))
            return
        try:
            self._udp.sendto(sealed, (host, port))
        except OSError as exc:
            self._drop("send_error", exc)
            return
        self.counters["datagrams_out"] += 1
        self.counters["bytes_out"] += len(sealed)

    def _on_datagram(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.counters["datagrams_in"] += 1
        self.counters["bytes_in"] += len(data)
        node = self._node
        if node is None or self._closed:
            self._drop("not_ready")
            return
        if len(data) > self._packet_max_bytes:
            self._drop("datagram_too_large", len(data))
            return
        plaintext, sender = self._open(data)
        if plaintext is None:
            self._drop("datagram_" + sender, addr)  # datagram_unsealed, datagram_sender_unknown
            return
        if sender:
            self.counters["datagrams_pairwise_in"] += 1
        node.handle_datagram(self._loop.time(), join_hostport(str(addr[0]), int(addr[1])), plaintext, sender)
        self._flush()

    # --- streams -----------------------------------------------------------------

    def _open_stream(self, out: StreamOpen) -> None:
        if self._streams_out >= STREAMS_OUT_MAX or len(out.payload) > self._stream_max_bytes:
            self._drop("stream_refused_out", out.dst)
            # Reply on the next loop turn: never re-enter the core from inside its flush.
            self._loop.call_soon(self._stream_result, out.request_id, None)
            return
        self._streams_out += 1
        self._spawn(self._exchange(out))

    # --- connection checks (docs/design.md, "Refused connections") -----------------

    def _check_conn(self, out: ConnCheck) -> None:
        if self._checks_out >= CONN_CHECKS_MAX:
            self._drop("conn_check_busy", out.dst)
            # Answered on the next loop turn: never re-enter the core from inside its flush.
            self._loop.call_soon(self._check_result, out.request_id, CheckResult.TIMED_OUT)
            return
        self._checks_out += 1
        self._spawn(self._conn_check(out))

    async def _conn_check(self, out: ConnCheck) -> None:
        """Open a TCP connection to out.dst and close it at once: refused, accepted or timed out."""
        result = CheckResult.TIMED_OUT
        try:
            host, port = split_hostport(out.dst)
            async with asyncio.timeout(out.timeout_s):
                _reader, writer = await asyncio.open_connection(host, port)
            result = CheckResult.ACCEPTED
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        except ConnectionRefusedError:
            result = CheckResult.REFUSED
        except (TimeoutError, OSError, ValueError):
            # No answer, or one that proves nothing (an unreachable network): silence.
            pass
        finally:
            self._checks_out -= 1
        self.counters["conn_check_" + result.name.lower()] += 1
        self._check_result(out.request_id, result)

    def _check_result(self, request_id: int, result: CheckResult) -> None:
        if self._node is not None and not self._closed:
            self._node.handle_conn_check(self._loop.time(), request_id, result)
            self._flush()

    # --- watched connections (docs/design.md, "Watched connections") --------------

    def _seal_greeting(self, dst: str) -> bytes:
        peer, peer_key = self._peer_key_at(dst)
        return self._seal(WATCH_GREETING, peer_key, peer)

    def _watch_ended(self, watch_id: int, peer_closed: bool) -> None:
        if self._node is not None and not self._closed:
            self._node.handle_watch_ended(self._loop.time(), watch_id, peer_closed)
            self._flush()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._track(self._loop.create_task(coro))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _exchange(self, out: StreamOpen) -> None:
        reply: bytes | None = None
        try:
            peer, peer_key = self._peer_key_at(out.dst)
            sealed = self._seal(out.payload, peer_key, peer)
            host, port = split_hostport(out.dst)
            async with asyncio.timeout(self._stream_timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    writer.write(frame(sealed))
                    await writer.drain()
                    answer = await read_frame(reader, self._sealed_stream_max_bytes)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
            self.counters["streams_out"] += 1
            reply, replier = self._open(answer)
            if reply is None:
                self._drop("frame_" + replier, out.dst)
            elif replier != peer:
                # Sealed to a member, answered by someone else (or under the network key).
                self._drop("frame_wrong_sender", out.dst)
                reply = None
        except TimeoutError:
            self._drop("stream_timeout", out.dst)
        except FrameError as exc:
            self._drop(str(exc), out.dst)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self._drop("stream_failed", f"{out.dst}: {exc!r}")
        finally:
            self._streams_out -= 1
        self._stream_result(out.request_id, reply)

    def _stream_result(self, request_id: int, reply: bytes | None) -> None:
        if self._node is not None and not self._closed:
            self._node.handle_stream_reply(self._loop.time(), request_id, reply)
            self._flush()

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        src = join_hostport(host, int(peer[1])) if peer else "?"
        if self._node is None or self._closed:
            self._drop("stream_refused_in", src)
            writer.transport.abort()
            return
        slot = self._streams_in.admit(host, member=self.is_member_host(host), close=writer.transport.abort)
        if slot is None:
            writer.transport.abort()  # counted by the table; abort: nothing to flush, free the socket now
            return
        task = asyncio.current_task()
        if task is not None:
            self._track(task)
        watcher: str | None = None
        try:
            try:
                watcher = await self._answer_stream(reader, writer, slot, src)
            finally:
                # A watch holds no stream slot while it idles (mesh/service/watches.py).
                self._streams_in.release(slot)
            if watcher is not None:
                await self.watches.hold_in(reader, writer, watcher)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot, src: str
    ) -> str | None:
        """Read one request frame and answer it; the watcher's name if it opened a watch instead."""
        started_s = self._loop.time()
        try:
            try:
                sealed = await read_request_frame(
                    reader,
                    self._sealed_stream_max_bytes,
                    started_s=started_s,
                    timeout_s=self._stream_timeout_s,
                )
            except TimeoutError:
                self._drop("stream_request_timeout", src)
                return None
            self._streams_in.served(slot)
            request, sender = self._open(sealed)
            if request is None:
                self._drop("frame_" + sender, src)
                return None
            if request == WATCH_GREETING:
                if sender or not self._envelope.pairwise:
                    return sender or src  # unkeyed: no name to group by
                self._drop("watch_in_unauthenticated", src)  # a member seals pairwise
                return None
            self.counters["streams_in"] += 1
            if self._node is None or self._closed:
                return None
            claimed = "" if sender else self._envelope.claimed_sender(sealed)
            answer = self._node.handle_stream_request(self._loop.time(), src, request, sender, claimed)
            self._flush()
            if answer is not None:
                async with asyncio.timeout_at(started_s + self._stream_timeout_s):
                    writer.write(frame(self._seal_answer(answer, sender, claimed)))
                    await writer.drain()
        except TimeoutError:
            self._drop("stream_timeout", src)
        except FrameError as exc:
            self._drop(str(exc), src)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and exc.expected == FRAME_HEADER.size:
                # Connected and closed without a byte: a peer's connection check.
                self.counters["conn_checks_in"] += 1
            elif not slot.evicted:  # an eviction is counted as such
                self._drop("stream_failed", f"{src}: {exc!r}")
        except OSError as exc:
            if not slot.evicted:  # an eviction is counted as such
                self._drop("stream_failed", f"{src}: {exc!r}")
        return None
