"""A connection flood for the real-process tests: many idle or slow TCP connections, reopened when closed.

It holds `count` connections to one host:port from loopback source addresses
(127.0.0.2, 127.0.0.3, ...: distinct sources on one machine), sends each an
opening once, then `trickle` bytes every `trickle_interval_s` (a slowloris
keeps its headers unfinished that way), and reopens any connection the target
closes, as an attacker with no key would. It runs in a thread of the test
process; loopback only.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType

CONNECT_TIMEOUT_S = 0.5
POLL_S = 0.05
REOPEN_PAUSE_S = 0.01  # a closed slot is reopened after this (a tight loop would only burn the test's CPU)


def loopback_sources(count: int) -> list[str]:
    """`count` loopback addresses other than 127.0.0.1 (which the agents use): 127.0.0.2, ..."""
    return [f"127.0.{i // 250}.{i % 250 + 2}" for i in range(count)]


def ensure_open_files(count: int) -> None:
    """Raise this process's soft open-files limit to `count` (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count if hard == resource.RLIM_INFINITY else min(count, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Flood:
    """`count` connections to `target` (host, port) from `sources` in turn, held open and reopened."""

    def __init__(
        self,
        target: tuple[str, int],
        count: int,
        sources: Sequence[str],
        *,
        opening: bytes = b"",
        trickle: bytes = b"",
        trickle_interval_s: float = 1.0,
    ) -> None:
        self.target = target
        self.count = count
        self.sources = list(sources)
        self.opening = opening
        self.trickle = trickle
        self.trickle_interval_s = trickle_interval_s
        self.opened = 0  # connections established
        self.closed_by_target = 0  # closed (or reset) by the target
        self.refused = 0  # connect failed or timed out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)
        self._selector = selectors.DefaultSelector()
        self._sockets: dict[int, socket.socket] = {}  # slot -> socket

    def __enter__(self) -> Flood:
        ensure_open_files(self.count + 256)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop and close every connection."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    @property
    def holding(self) -> int:
        """Connections open right now."""
        return len(self._sockets)

    def _open(self, slot: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((self.sources[slot % len(self.sources)], 0))
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(self.target)
            if self.opening:
                sock.sendall(self.opening)
            sock.setblocking(False)
        except OSError:
            sock.close()
            self.refused += 1
            return
        self.opened += 1
        self._sockets[slot] = sock
        self._selector.register(sock, selectors.EVENT_READ, slot)

    def _close(self, slot: int) -> None:
        sock = self._sockets.pop(slot)
        self._selector.unregister(sock)
        sock.close()

    def _run(self) -> None:
        next_trickle = time.monotonic() + self.trickle_interval_s
        try:
            while not self._stop.is_set():
                for slot in range(self.count):
                    if slot not in self._sockets and not self._stop.is_set():
                        self._open(slot)
                for key, _ in self._selector.select(timeout=POLL_S):
                    slot = int(key.data)
                    try:
                        data = self._sockets[slot].recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:  # closed by the target: reopen on the next turn
                        self.closed_by_target += 1
                        self._close(slot)
                if self.trickle and time.monotonic() >= next_trickle:
                    next_trickle = time.monotonic() + self.trickle_interval_s
                    for slot in list(self._sockets):
                        try:
                            self._sockets[slot].send(self.trickle)
                        except OSError:
                            self.closed_by_target += 1
                            self._close(slot)
                if len(self._sockets) < self.count:
                    time.sleep(REOPEN_PAUSE_S)
        finally:
            for slot in list(self._sockets):
                with contextlib.suppress(OSError):
                    self._close(slot)
            self._selector.close()
