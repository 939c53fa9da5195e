"""Watched connections on a device: idle TCP connections whose end tells of a dead process.

The membership core asks for them (gossip.io.Watch, gossip/watch.py); this
module holds them for the runtime (mesh/service/runtime.py), both ends:

- **Watcher.** Connect to the member's gossip port, send one sealed frame whose
  plaintext is `WATCH_GREETING`, then wait without a timeout. The end is
  reported to the core: peer_closed=True on a FIN, a reset or a refused
  connection (the member's host closed it: when a process dies its kernel
  closes every socket it held, at once); False when the connection could
  not be made in WATCH_CONNECT_TIMEOUT_S or the member declined the watch
  (it writes `WATCH_DECLINED` before closing). Nothing flows while the
  connection is idle: a watch costs a socket at each end, no traffic.
- **Watched.** The runtime hands us a stream whose first frame opened to the
  greeting. We hold it, reading nothing but its end. At most
  WATCHES_IN_PER_PEER_MAX per watcher (a newer one closes the oldest, which
  a watcher that lost its host left behind) and WATCHES_IN_MAX in all
  (beyond that the watch is declined): a member can pin a few sockets here,
  never many, and a watch never holds one of the stream slots
  (mesh/service/connlimits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import Callable

from gossip.io import Watch
from mesh.netaddr import split_hostport

# The plaintext of a watch connection's one frame: no core message starts like this
# (codec frames start with a msgpack array header).
WATCH_GREETING = b"\xffmurmur-watch/1"
# Written by a node that declines a watch, before it closes: "no evidence, try later".
WATCH_DECLINED = b"\x00"
WATCH_CONNECT_TIMEOUT_S = 3.0
WATCHES_OUT_MAX = 16  # gossip.watch.WATCH_COUNT_MAX per pool, two pools, and room
WATCHES_IN_MAX = 32
WATCHES_IN_PER_PEER_MAX = 2


class WatchLinks:
    """Both ends of a node's watched connections."""

    def __init__(
        self,
        *,
        seal_greeting: Callable[[str], bytes],
        frame: Callable[[bytes], bytes],
        on_end: Callable[[int, bool], None],
        spawn: Callable[[asyncio.Task[None]], None],
        counters: Counter[str],
    ) -> None:
        # seal_greeting(dst): the greeting sealed to the member at dst, framed by `frame`.
        self._seal_greeting = seal_greeting
        self._frame = frame
        self._on_end = on_end
        self._spawn = spawn
        self.counters = counters
        self._out: dict[int, asyncio.Task[None]] = {}
        self._in: OrderedDict[int, tuple[str, asyncio.StreamWriter]] = OrderedDict()
        self._in_seq = 0

    # --- the watcher ------------------------------------------------------------

    def open(self, out: Watch) -> None:
        """Start holding a watch (the core's gossip.io.Watch)."""
        loop = asyncio.get_running_loop()
        if len(self._out) >= WATCHES_OUT_MAX or out.watch_id in self._out:
            self.counters["drop_watch_busy"] += 1
            # Answered on the next loop turn: never re-enter the core from inside its flush.
            loop.call_soon(self._on_end, out.watch_id, False)
            return
        task = loop.create_task(self._hold_out(out))
        self._out[out.watch_id] = task
        self._spawn(task)

    def close(self, watch_id: int) -> None:
        """The core's Unwatch: close it, and report nothing."""
        task = self._out.pop(watch_id, None)
        if task is not None:
            task.cancel()

    async def _hold_out(self, out: Watch) -> None:
        peer_closed = False
        try:
            host, port = split_hostport(out.dst)
            async with asyncio.timeout(WATCH_CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(self._frame(self._seal_greeting(out.dst)))
                await writer.drain()
                self.counters["watches_out_established"] += 1
                # Blocks while the connection is idle; a byte means the peer declined.
                peer_closed = await reader.read(1) == b""
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except ConnectionRefusedError:
            peer_closed = True  # the host answered, and nothing listens: the process is gone
        except (ConnectionResetError, BrokenPipeError):
            peer_closed = True
        except (TimeoutError, OSError, ValueError):
            pass  # unreachable, or an address that proves nothing
        if self._out.pop(out.watch_id, None) is None:
            return  # unwatched meanwhile: the core has forgotten it
        self.counters["watch_ended_peer_closed" if peer_closed else "watch_ended_failed"] += 1
        self._on_end(out.watch_id, peer_closed)

    # --- the watched ------------------------------------------------------------

    async def hold_in(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watcher: str) -> None:
        """Hold a watch a member opened to us until it closes it (or we stop)."""
        mine = [k for k, (who, _) in self._in.items() if who == watcher]
        while len(mine) >= WATCHES_IN_PER_PEER_MAX:
            # Its newer watch replaces its oldest (left over from a lost host or a restart).
            _, old_writer = self._in.pop(mine.pop(0))
            old_writer.transport.abort()
            self.counters["watch_in_replaced"] += 1
        if len(self._in) >= WATCHES_IN_MAX:
            self.counters["watch_in_declined"] += 1
            writer.write(WATCH_DECLINED)
            with contextlib.suppress(OSError):
                await writer.drain()
            return
        self._in_seq += 1
        key = self._in_seq
        self._in[key] = (watcher, writer)
        self.counters["watches_in_held"] += 1
        try:
            # A watcher sends nothing more: any byte, or its close, ends the watch.
            await reader.read(1)
        except (OSError, asyncio.CancelledError):
            # Cancelled: our runtime is closing; the caller closes the socket (the
            # watcher's FIN), and a server task must end quietly, not as cancelled.
            pass
        finally:
            self._in.pop(key, None)

    @property
    def held_in(self) -> int:
        return len(self._in)

    @property
    def held_out(self) -> int:
        return len(self._out)
