"""The simulator's event loop: one heap of `(time_s, seq, kind, ...)` on a virtual clock.

Each simulated node is a sans-IO core plus the little state a driver keeps for it
(`NodeSlot`): whether it is up, its armed timer, a stall backlog, open streams and
wire counters. The engine calls `handle_timer` at `next_deadline()`, delivers
datagrams and stream frames, and after every call drains `poll_transmit()` and
`next_event()`, exactly like the asyncio driver does with a real clock.

Heap entries are plain tuples `(time_s, seq, kind, idx, a, b, c)`: `seq` is unique,
so comparison never reaches the payload, and equal times run in scheduling order.
A node's timer is re-armed only when its deadline changed; a stale timer entry
is recognised by its generation number and skipped (lazy deletion).
"""

from __future__ import annotations

import heapq
import os
import random
from collections.abc import Callable
from types import TracebackType
from typing import Any

from gossip.config import ENVELOPE_OVERHEAD_BYTES
from gossip.envelope import INTRO_OVERHEAD_BYTES, NONCE_BYTES, SEALED_REPLY_OVERHEAD_BYTES, PeerKeys
from gossip.events import IncarnationChanged
from gossip.io import CheckResult, ConnCheck, Core, Datagram, Sealer, StreamOpen, Unwatch, Watch
from sim.network import Network
from sim.slot import Entry, Listener, NodeSlot
from sim.watches import WATCH_CONNECT_TIMEOUT_S, WatchTable

# Entry kinds.
K_TIMER = 0  # idx, a=generation
K_DGRAM = 1  # idx=dst, a=src idx, b=src addr, c=data
K_STREAM_REQ = 2  # idx=server, a=client idx, b=(client epoch, request id), c=data
K_STREAM_REPLY = 3  # idx=client, a=server idx, b=(client epoch, request id), c=data | None
K_STREAM_TIMEOUT = 4  # idx=client, a=client epoch, b=request id
K_NODE_CALL = 5  # idx, a=epoch, b=fn(core, now)
K_CALL = 6  # idx=-1, b=fn(now)
K_STALL_END = 7  # idx, a=epoch
# Frames sealed pairwise (gossip/envelope.py): the sender is proven to the receiver,
# which opens them only if it knows the sender's key; introducing frames carry the
# sender's key, so any node with a node key opens them. Same fields as the plain kinds.
K_DGRAM_PAIRWISE = 8
K_STREAM_REQ_PAIRWISE = 9
K_DGRAM_INTRO = 10
K_STREAM_REQ_INTRO = 11
K_CONN_CHECK = 12  # idx=client, a=client epoch, b=request id, c=CheckResult
K_WATCH_END = 13  # idx=watcher, a=watcher epoch, b=watch id, c=peer_closed
# How a frame is sealed, the index into the tuples below.
SEAL_NETWORK_KEY, SEAL_PAIRWISE, SEAL_INTRO = 0, 1, 2
_DGRAM_KINDS = (K_DGRAM, K_DGRAM_PAIRWISE, K_DGRAM_INTRO)
_STREAM_REQ_KINDS = (K_STREAM_REQ, K_STREAM_REQ_PAIRWISE, K_STREAM_REQ_INTRO)
_OVERHEAD_BYTES = (ENVELOPE_OVERHEAD_BYTES, ENVELOPE_OVERHEAD_BYTES, INTRO_OVERHEAD_BYTES)


# A stalled node's socket buffer and ready queue are finite too: beyond this many
# deferred events, new arrivals are dropped (and counted), as a kernel would.
BACKLOG_MAX = 10_000
# A core whose deadline stays at `now` after handle_timer would spin forever.
TIMER_SPIN_MAX = 64
# A lost SYN (or its answer) is sent again after TCP's initial retransmission timeout
# (Linux: 1 s), longer than any connection check waits.
TCP_SYN_RTO_S = 1.0
# A lost segment of an established connection (a FIN) is sent again after TCP's
# retransmission timeout, at least 200 ms on Linux.
TCP_MIN_RTO_S = 0.2

_SIM_DIR = os.path.dirname(os.path.abspath(__file__))
_STDLIB_DIR = os.path.dirname(os.path.abspath(os.__file__))


class Engine:
    """Virtual clock, event heap, and the drivers of every simulated node."""

    def __init__(
        self,
        network: Network,
        listener: Listener,
        *,
        region_stream_timeout_s: float,
        fleet_stream_timeout_s: float,
        packet_max_bytes: int,
        stream_max_bytes: int,
        sealer: Sealer | None = None,
        nonce_rng: random.Random | None = None,
        check_rng: random.Random | None = None,
        watch_rng: random.Random | None = None,
    ) -> None:
        self.now = 0.0
        self.network = network
        self.listener = listener
        self.slots: list[NodeSlot] = []
        self.by_addr: dict[str, int] = {}
        self.region_stream_timeout_s = region_stream_timeout_s
        self.fleet_stream_timeout_s = fleet_stream_timeout_s
        self.packet_max_bytes = packet_max_bytes
        self.stream_max_bytes = stream_max_bytes
        self._sealer = sealer
        self._nonce_rng = nonce_rng if nonce_rng is not None else random.Random(0)
        # Connection checks draw their handshakes apart from the network (see Network.handshake_s).
        self._check_rng = check_rng if check_rng is not None else random.Random(0)
        # Watched connections (sim/watches.py), with delays drawn apart from the network too.
        self._watch_rng = watch_rng if watch_rng is not None else random.Random(1)
        self.watches = WatchTable()
        self._heap: list[Entry] = []
        self._seq = 0
        self.events_processed = 0
        # Drops by reason, for the report and the tests.
        self.drops: dict[str, int] = {
            "loss": 0,
            "partition": 0,
            "no_host": 0,
            "host_down": 0,
            "unopenable": 0,
            "backlog_full": 0,
        }
        self.duplicated = 0
        # Connection checks by outcome (not in the report: its keys stay as they were).
        self.conn_checks: dict[CheckResult, int] = dict.fromkeys(CheckResult, 0)

    # -- scheduling -------------------------------------------------------------------

    def _push(self, t: float, kind: int, idx: int, a: Any = None, b: Any = None, c: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, idx, a, b, c))

    def call_at(self, t: float, fn: Callable[[float], None]) -> None:
        """Run `fn(now)` at virtual time `t` (scenario actions, metric probes)."""
        self._push(max(t, self.now), K_CALL, -1, None, fn)

    def call_node_at(self, t: float, idx: int, fn: Callable[[Any, float], None]) -> None:
        """Call `fn(core, now)` on node `idx` at `t`, as its driver would (deferred by a stall)."""
        self._push(max(t, self.now), K_NODE_CALL, idx, self.slots[idx].epoch, fn)

    # -- nodes and faults -------------------------------------------------------------

    def add_node(self, node_id: str, addr: str, region: int, core: Core, *, drive: bool = True) -> NodeSlot:
        """Add a node that is up from now on; driven once (unless `drive` is False) to arm its timer."""
        if addr in self.by_addr:
            raise ValueError(f"address {addr} is already in use by {self.slots[self.by_addr[addr]].node_id}")
        slot = NodeSlot(len(self.slots), node_id, addr, region, core, self.now)
        slot.peers = _peers_of(core)
        self.slots.append(slot)
        self.by_addr[addr] = slot.idx
        self.network.grow(len(self.slots))
        if drive:
            self._after(slot, self.now)
        return slot

    def drive(self, idx: int) -> None:
        """Drain node idx's output and arm its timer (after adding nodes with drive=False)."""
        slot = self.slots[idx]
        if slot.up:
            self._after(slot, self.now)

    def crash(self, idx: int, *, host_lost: bool = False) -> None:
        """Stop node `idx` at once: its timers, backlog and open streams vanish.

        host_lost: the whole host is gone (power, network), so nothing answers at its
        address any more (silence); otherwise only the process died, and its host
        refuses connections to its port with a reset.
        """
        slot = self.slots[idx]
        if not slot.up:
            return
        slot.host_up = not host_lost
        self.watches.watcher_died(idx, slot.epoch)
        watchers = self.watches.close_target(idx)
        if not host_lost:
            for watcher_idx, watcher_epoch, watch_id in watchers:
                self._watch_closed(slot, self.slots[watcher_idx], watcher_epoch, watch_id)
        slot.uptime_s += self.now - slot.up_since_s
        slot.up = False
        slot.core = None
        slot.peers = None
        slot.proven = set()
        slot.epoch += 1
        slot.timer_gen += 1
        slot.timer_at = None
        slot.stalled = False
        slot.backlog = []
        slot.streams = {}

    def restart(self, idx: int, core: Core, addr: str | None = None) -> None:
        """Bring a crashed node back with a fresh core, at its old address or a new one."""
        slot = self.slots[idx]
        if slot.up:
            raise ValueError(f"{slot.node_id} is up; crash it before restarting it")
        if addr is not None and addr != slot.addr:
            if addr in self.by_addr:
                raise ValueError(f"address {addr} is already in use")
            if self.by_addr.get(slot.addr) == idx:
                del self.by_addr[slot.addr]
            slot.addr = addr
            self.by_addr[addr] = idx
        slot.core = core
        slot.peers = _peers_of(core)
        slot.up = True
        slot.host_up = True
        slot.up_since_s = self.now
        slot.timer_spin = 0
        self._after(slot, self.now)

    def stall(self, idx: int, duration_s: float) -> None:
        """Freeze node `idx` for `duration_s`: its events queue up and run at the stall's end."""
        slot = self.slots[idx]
        if not slot.up:
            return
        # Overlapping stalls merge: the node wakes when the last of them ends.
        until_s = self.now + duration_s
        if slot.stalled and until_s <= slot.stall_until_s:
            return
        slot.stalled = True
        slot.stall_until_s = until_s
        self._push(until_s, K_STALL_END, idx, slot.epoch)

    # -- the loop ---------------------------------------------------------------------

    def run_until(self, t_end: float) -> None:
        """Process every event due at or before `t_end`, then set the clock to `t_end`."""
        heap = self._heap
        pop = heapq.heappop
        dispatch = self._dispatch
        while heap and heap[0][0] <= t_end:
            entry = pop(heap)
            self.now = entry[0]
            self.events_processed += 1
            try:
                dispatch(entry, entry[0])
            except Exception as exc:
                self._core_exception(entry, exc)
        self.now = max(self.now, t_end)

    def _core_exception(self, entry: Entry, exc: Exception) -> None:
        # An exception raised inside a core is a broken invariant; one raised by the
        # simulator's own code is a bug in the simulator and must surface.
        # It came from a core if some frame of the traceback runs code that is
        # neither the simulator's nor the standard library's.
        tb: TracebackType | None = exc.__traceback__
        last_file = ""
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            folder = os.path.dirname(os.path.abspath(filename))
            if folder != _SIM_DIR and not folder.startswith(_STDLIB_DIR):
                last_file = filename
            tb = tb.tb_next
        if not last_file or entry[2] == K_CALL:
            raise exc
        idx = entry[3]
        who = self.slots[idx].node_id if 0 <= idx < len(self.slots) else "?"
        where = os.path.basename(last_file)
        self.listener.on_violation(
            self.now, "no_core_exception", f"{who}: {type(exc).__name__}: {exc} (raised in {where})"
        )
        if 0 <= idx < len(self.slots):
            slot = self.slots[idx]
            if slot.up and slot.core is not None:
                # Keep driving it: drain whatever it queued before raising.
                try:
                    self._after(slot, self.now)
                except Exception as exc2:  # a core that keeps raising is reported once
                    del exc2

    def _dispatch(self, entry: Entry, now: float) -> None:
        kind = entry[2]
        idx = entry[3]
        if kind == K_CALL:
            entry[5](now)
            return
        slot = self.slots[idx]
        if not slot.up:
            if kind in _DGRAM_KINDS or kind in _STREAM_REQ_KINDS:
                self.drops["host_down"] += 1
                if kind in _STREAM_REQ_KINDS and slot.host_up:
                    # The host answers a connection to a dead process with a reset; a lost
                    # host answers nothing, and the client's timeout fires.
                    client = self.slots[entry[4]]
                    self._push(
                        now + self._one_way_s(slot, client), K_STREAM_REPLY, client.idx, idx, entry[5], None
                    )
            return
        if slot.stalled and kind != K_STALL_END:
            if kind == K_TIMER and entry[4] != slot.timer_gen:
                return
            if len(slot.backlog) >= BACKLOG_MAX:
                self.drops["backlog_full"] += 1
                return
            slot.backlog.append(entry)
            return
        core = slot.core
        assert core is not None
        if kind == K_TIMER:
            if entry[4] != slot.timer_gen:
                return
            slot.timer_at = None
            core.handle_timer(now)
            self._after(slot, now)
            self._check_timer_advanced(slot, now)
        elif kind in _DGRAM_KINDS:
            data = self._unseal(entry[6])
            if data is None:
                return
            if self.network.partitioned and self.network.blocked(entry[4], idx):
                self.drops["partition"] += 1
                return
            sender_id = self._proven_sender(slot, entry[4], kind) if kind != K_DGRAM else ""
            if sender_id is None:
                return
            core.handle_datagram(now, entry[5], data, sender_id)
            self._after(slot, now)
        elif kind in _STREAM_REQ_KINDS:
            self._serve_stream(slot, core, entry, now)
        elif kind == K_STREAM_REPLY:
            epoch, request_id = entry[5]
            if epoch != slot.epoch or request_id not in slot.streams:
                return
            if self.network.partitioned and self.network.blocked(entry[4], idx):
                # The connection broke under the partition: the client's timeout fires.
                self.drops["partition"] += 1
                return
            del slot.streams[request_id]
            # None is a reset (refused connection); a reply that does not open is one too.
            reply = self._unseal(entry[6]) if entry[6] is not None else None
            core.handle_stream_reply(now, request_id, reply)
            self._after(slot, now)
        elif kind == K_CONN_CHECK:
            if entry[4] != slot.epoch:
                return
            core.handle_conn_check(now, entry[5], entry[6])
            self._after(slot, now)
        elif kind == K_WATCH_END:
            if entry[4] != slot.epoch:
                return
            core.handle_watch_ended(now, entry[5], entry[6])
            self._after(slot, now)
        elif kind == K_STREAM_TIMEOUT:
            if entry[4] != slot.epoch or slot.streams.pop(entry[5], None) is None:
                return
            core.handle_stream_reply(now, entry[5], None)
            self._after(slot, now)
        elif kind == K_NODE_CALL:
            if entry[4] != slot.epoch:
                return
            entry[5](core, now)
            self._after(slot, now)
        elif kind == K_STALL_END:
            if entry[4] != slot.epoch or not slot.stalled or now < slot.stall_until_s:
                return
            # Like a starved event loop working off its backlog: everything that
            # arrived during the stall runs now, in its original order.
            slot.stalled = False
            backlog = slot.backlog
            slot.backlog = []
            for i, deferred in enumerate(backlog):
                if slot.stalled or not slot.up:
                    # A new stall or crash while draining (only from a core callback):
                    # keep the rest for later.
                    slot.backlog = backlog[i:] + slot.backlog
                    break
                try:
                    self._dispatch(deferred, now)
                except Exception as exc:
                    self._core_exception(deferred, exc)

    def _check_timer_advanced(self, slot: NodeSlot, now: float) -> None:
        at = slot.timer_at
        if at is None or at > now:
            slot.timer_spin = 0
            return
        slot.timer_spin += 1
        if slot.timer_spin == TIMER_SPIN_MAX:
            self.listener.on_violation(
                now,
                "timer_advances",
                f"{slot.node_id}: next_deadline() stayed at {at:.6f} <= now after "
                f"{TIMER_SPIN_MAX} handle_timer calls",
            )
        if slot.timer_spin >= TIMER_SPIN_MAX:
            # Step past the spin so the run can go on.
            slot.timer_gen += 1
            slot.timer_at = now + 0.001
            self._push(now + 0.001, K_TIMER, slot.idx, slot.timer_gen)

    # -- after every call: drain the core -----------------------------------------------

    def _after(self, slot: NodeSlot, now: float) -> None:
        core = slot.core
        assert core is not None
        out = core.poll_transmit()
        if out:
            for item in out:
                if type(item) is Datagram:
                    self._send_datagram(slot, item, now)
                elif type(item) is ConnCheck:
                    self._check_conn(slot, item, now)
                elif type(item) is Watch:
                    self._watch(slot, item, now)
                elif type(item) is Unwatch:
                    self.watches.remove((slot.idx, slot.epoch, item.watch_id))
                else:
                    assert isinstance(item, StreamOpen)
                    self._open_stream(slot, item, now)
        event = core.next_event()
        if event is not None:
            listener = self.listener
            while event is not None:
                if type(event) is IncarnationChanged:
                    slot.incarnation = event.incarnation
                listener.on_event(now, slot, event)
                event = core.next_event()
        deadline = core.next_deadline()
        if deadline != slot.timer_at:
            slot.timer_at = deadline
            slot.timer_gen += 1
            if deadline is not None:
                # The hottest push of all, inlined.
                self._seq += 1
                heapq.heappush(
                    self._heap,
                    (
                        deadline if deadline > now else now,
                        self._seq,
                        K_TIMER,
                        slot.idx,
                        slot.timer_gen,
                        None,
                        None,
                    ),
                )

    def _sealing(self, slot: NodeSlot, dst: str, payload_bytes: int, room_bytes: int | None) -> int:
        """How slot's driver seals to dst, as mesh/service/runtime.py decides it: pairwise to a
        member whose key it knows and that has shown it knows ours; else introducing our key
        if it fits in the packet; else the network key (the member reads it as a stranger's)."""
        peers = slot.peers
        if peers is None:
            return SEAL_NETWORK_KEY
        peer = peers.peer_at(dst)
        if peer is None or peers.peer_key(peer) is None:
            return SEAL_NETWORK_KEY
        if peer in slot.proven:
            return SEAL_PAIRWISE
        if room_bytes is not None and payload_bytes + INTRO_OVERHEAD_BYTES > room_bytes:
            return SEAL_NETWORK_KEY
        return SEAL_INTRO

    def _proven_sender(self, receiver: NodeSlot, src_idx: int, kind: int) -> str | None:
        """The sender of a pairwise or introducing frame, if the receiver opens it (else None).

        A pairwise frame opens only where the sender's key is known; an introducing one
        wherever there is a node key. Either proves the sender knows the receiver's key.
        """
        sender_id = self.slots[src_idx].node_id
        peers = receiver.peers
        if peers is None or (
            kind in (K_DGRAM_PAIRWISE, K_STREAM_REQ_PAIRWISE) and peers.peer_key(sender_id) is None
        ):
            # Reported only where it happens (fleets with admission), so other reports keep their shape.
            self.drops["sender_unknown"] = self.drops.get("sender_unknown", 0) + 1
            return None
        receiver.proven.add(sender_id)
        return sender_id

    def _seal(self, plaintext: bytes) -> bytes:
        assert self._sealer is not None
        return self._sealer.seal(plaintext, self._nonce_rng.randbytes(NONCE_BYTES))

    def _unseal(self, frame: bytes) -> bytes | None:
        """A datagram's or stream frame's plaintext; None (counted) when it does not open."""
        if self._sealer is None:
            return frame
        data = self._sealer.open(frame)
        if data is None:
            self.drops["unopenable"] += 1
        return data

    def _count_out(
        self,
        slot: NodeSlot,
        plain_bytes: int,
        limit_bytes: int,
        kind: str,
        what: str,
        now: float,
        overhead_bytes: int = ENVELOPE_OVERHEAD_BYTES,
    ) -> None:
        """Count a sealed message on the wire; a size over its limit breaks an invariant."""
        size = plain_bytes + overhead_bytes
        slot.tx_bytes += size
        slot.tx_msgs += 1
        if size > limit_bytes:
            self.listener.on_violation(
                now, kind, f"{slot.node_id} sent a {size}-byte {what} (limit {limit_bytes})"
            )

    def _send_datagram(self, slot: NodeSlot, dg: Datagram, now: float) -> None:
        # Unkeyed fleets (no peers) skip the call: this runs for every datagram simulated.
        sealing = (
            self._sealing(slot, dg.dst, len(dg.payload), self.packet_max_bytes)
            if slot.peers is not None
            else SEAL_NETWORK_KEY
        )
        self._count_out(
            slot,
            len(dg.payload),
            self.packet_max_bytes,
            "packet_max_bytes",
            f"datagram to {dg.dst}",
            now,
            _OVERHEAD_BYTES[sealing],
        )
        dst_idx = self.by_addr.get(dg.dst)
        if dst_idx is None:
            self.drops["no_host"] += 1
            return
        network = self.network
        copies = network.copies()
        if copies == 0:
            self.drops["loss"] += 1
            return
        if network.partitioned and network.blocked(slot.idx, dst_idx):
            self.drops["partition"] += 1
            return
        data = self._seal(dg.payload) if self._sealer is not None else dg.payload
        dst_region = self.slots[dst_idx].region
        kind = _DGRAM_KINDS[sealing]
        self._seq += 1
        heapq.heappush(
            self._heap,
            (
                now + network.delay_s(slot.region, dst_region),
                self._seq,
                kind,
                dst_idx,
                slot.idx,
                slot.addr,
                data,
            ),
        )
        if copies == 2:
            self.duplicated += 1
            self._push(
                now + network.delay_s(slot.region, dst_region), kind, dst_idx, slot.idx, slot.addr, data
            )

    # -- streams: reliable, a TCP handshake's worth of latency ---------------------------

    def _one_way_s(self, a: NodeSlot, b: NodeSlot) -> float:
        return self.network.delay_s(a.region, b.region)

    def _frame_out(
        self,
        slot: NodeSlot,
        payload: bytes,
        now: float,
        what: str,
        overhead_bytes: int = ENVELOPE_OVERHEAD_BYTES,
    ) -> bytes:
        # The limit is on the plaintext (the reader allows the largest envelope beyond it).
        self._count_out(
            slot,
            len(payload),
            self.stream_max_bytes + overhead_bytes - ENVELOPE_OVERHEAD_BYTES,
            "stream_max_bytes",
            f"{what} frame",
            now,
            overhead_bytes,
        )
        return self._seal(payload) if self._sealer is not None else payload

    def _open_stream(self, slot: NodeSlot, so: StreamOpen, now: float) -> None:
        sealing = self._sealing(slot, so.dst, len(so.payload), None)
        data = self._frame_out(slot, so.payload, now, "stream request", _OVERHEAD_BYTES[sealing])
        dst_idx = self.by_addr.get(so.dst)
        server = self.slots[dst_idx] if dst_idx is not None else None
        same_region = server is not None and server.region == slot.region
        timeout_s = self.region_stream_timeout_s if same_region else self.fleet_stream_timeout_s
        slot.streams[so.request_id] = -1 if dst_idx is None else dst_idx
        self._push(now + timeout_s, K_STREAM_TIMEOUT, slot.idx, slot.epoch, so.request_id)
        if server is None:
            self.drops["no_host"] += 1
            return
        network = self.network
        if network.partitioned and network.blocked(slot.idx, server.idx):
            self.drops["partition"] += 1
            return
        key = (slot.epoch, so.request_id)
        if not server.up:
            self.drops["host_down"] += 1
            if not server.host_up:
                return  # a lost host: silence, the client's timeout fires
            # Connection refused (the host's reset): one round trip.
            rtt_s = self._one_way_s(slot, server) + self._one_way_s(server, slot)
            self._push(now + rtt_s, K_STREAM_REPLY, slot.idx, server.idx, key, None)
            return
        # SYN, SYN-ACK, then the request: three one-way trips plus the transfer.
        wire_bytes = len(so.payload) + _OVERHEAD_BYTES[sealing]
        delay_s = network.stream_delay_s(slot.region, server.region, wire_bytes, trips=3)
        self._push(now + delay_s, _STREAM_REQ_KINDS[sealing], server.idx, slot.idx, key, data)

    def _check_conn(self, slot: NodeSlot, cc: ConnCheck, now: float) -> None:
        """A TCP handshake to cc.dst and nothing more: refused, accepted, or silence.

        A process that is up holds its listening socket, so its kernel completes the
        handshake even while the process is stalled (accepted); a dead process on a live
        host gets its SYN answered with a reset (refused); a lost host, a partition or a
        lost segment leave the check unanswered. An unanswered check is not delivered at
        all: the core forgets its checks when their probes end (gossip.io.ConnCheck), and
        a silent check then adds nothing to the heap, the clock or the random draws.
        """
        dst_idx = self.by_addr.get(cc.dst)
        if dst_idx is None:
            self.conn_checks[CheckResult.TIMED_OUT] += 1
            return
        server = self.slots[dst_idx]
        network = self.network
        silent = not (server.up or server.host_up)
        if silent or (network.partitioned and network.blocked(slot.idx, server.idx)):
            self.conn_checks[CheckResult.TIMED_OUT] += 1
            return
        result = CheckResult.ACCEPTED if server.up else CheckResult.REFUSED
        rtt_s = network.handshake_s(slot.region, server.region, self._check_rng, TCP_SYN_RTO_S)
        if rtt_s > cc.timeout_s:
            self.conn_checks[CheckResult.TIMED_OUT] += 1
            return
        self.conn_checks[result] += 1
        self._push(now + rtt_s, K_CONN_CHECK, slot.idx, slot.epoch, cc.request_id, result)

    def _watch(self, slot: NodeSlot, w: Watch, now: float) -> None:
        """Open a watched connection (sim/watches.py): established, refused, or failed."""
        dst_idx = self.by_addr.get(w.dst)
        server = self.slots[dst_idx] if dst_idx is not None else None
        network = self.network
        if (
            server is None
            or not (server.up or server.host_up)
            or (network.partitioned and network.blocked(slot.idx, server.idx))
        ):
            self._push(now + WATCH_CONNECT_TIMEOUT_S, K_WATCH_END, slot.idx, slot.epoch, w.watch_id, False)
            return
        if not server.up:
            rtt_s = network.handshake_s(slot.region, server.region, self._watch_rng, TCP_SYN_RTO_S)
            self._push(now + rtt_s, K_WATCH_END, slot.idx, slot.epoch, w.watch_id, True)
            return
        self.watches.add(server.idx, (slot.idx, slot.epoch, w.watch_id))

    def _watch_closed(self, server: NodeSlot, watcher: NodeSlot, watcher_epoch: int, watch_id: int) -> None:
        """server's process died on a live host: its FIN reaches the watcher, barring a partition."""
        network = self.network
        if network.partitioned and network.blocked(server.idx, watcher.idx):
            return
        delay_s = network.segment_s(server.region, watcher.region, self._watch_rng, TCP_MIN_RTO_S)
        self._push(self.now + delay_s, K_WATCH_END, watcher.idx, watcher_epoch, watch_id, True)

    def _serve_stream(self, server: NodeSlot, core: Core, entry: Entry, now: float) -> None:
        client = self.slots[entry[4]]
        network = self.network
        if network.partitioned and network.blocked(client.idx, server.idx):
            self.drops["partition"] += 1
            return
        data = self._unseal(entry[6])
        sender_id = self._proven_sender(server, client.idx, entry[2]) if entry[2] != K_STREAM_REQ else ""
        # A network-key request names its sender (unproven); the answer is sealed to it.
        claimed_id = client.node_id if not sender_id and client.peers is not None else ""
        if data is None or sender_id is None:
            # The server closes a connection it cannot authenticate: the client sees it fail.
            self._push(
                now + self._one_way_s(server, client), K_STREAM_REPLY, client.idx, server.idx, entry[5], None
            )
            return
        reply = core.handle_stream_request(now, client.addr, data, sender_id, claimed_id)
        self._after(server, now)
        if reply is None:
            return
        # A join's answer is sealed to the joiner's key once its admission is known here.
        sealed_to_joiner = (
            bool(claimed_id) and server.peers is not None and server.peers.peer_key(claimed_id) is not None
        )
        overhead_bytes = SEALED_REPLY_OVERHEAD_BYTES if sealed_to_joiner else ENVELOPE_OVERHEAD_BYTES
        frame = self._frame_out(server, reply, now, "stream reply", overhead_bytes)
        wire_bytes = len(reply) + overhead_bytes
        delay_s = network.stream_delay_s(server.region, client.region, wire_bytes, trips=1)
        self._push(now + delay_s, K_STREAM_REPLY, client.idx, server.idx, entry[5], frame)


def _peers_of(core: Core) -> PeerKeys | None:
    """The core's directory of member keys when its members are authenticated (pairwise frames).

    Other cores (test cores, nodes without admission) see only network-key frames,
    and the engine then spends nothing per datagram on keys.
    """
    if getattr(core, "authenticated", False):
        assert isinstance(core, PeerKeys)
        return core
    return None
