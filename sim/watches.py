"""The simulator's model of watched connections (gossip.io.Watch): idle TCP connections held open.

What the model keeps is who holds an established watch on whom; what it
decides is when a watcher hears that one ended:
- opening: a watch to a process that is up is established (the connection
  sits idle: no traffic, no heap entries); to a dead process on a live host it
  is refused after one handshake (the peer's host closed it: evidence); to a
  lost host, an unknown address or across a partition it fails after the
  connect timeout (no evidence).
- a process that dies on a live host: its kernel closes every connection, so
  each of its watchers hears a FIN after a one-way trip (a lost FIN is sent
  again after TCP's retransmission timeout), unless a partition stands between
  them, which swallows it (the watcher then learns nothing: silence).
- a lost host, a stall, a partition: nothing happens to established watches.

Delays are drawn from a random generator of their own, so watches leave every
datagram's fate and delay as they were.
"""

from __future__ import annotations

# A connection attempt that gets no answer is given up after this long (no evidence).
WATCH_CONNECT_TIMEOUT_S = 3.0

# One established watch: (watcher idx, watcher epoch, watch id).
WatchKey = tuple[int, int, int]


class WatchTable:
    """Established watches, by the node watched and by the watcher."""

    def __init__(self) -> None:
        self._of_target: dict[int, dict[WatchKey, None]] = {}
        self._target_of: dict[WatchKey, int] = {}
        self.established = 0

    def add(self, target_idx: int, key: WatchKey) -> None:
        self._of_target.setdefault(target_idx, {})[key] = None
        self._target_of[key] = target_idx
        self.established += 1

    def remove(self, key: WatchKey) -> None:
        """The watcher closed it (Unwatch), or its process died (the connection went with it)."""
        target_idx = self._target_of.pop(key, None)
        if target_idx is not None:
            watchers = self._of_target[target_idx]
            del watchers[key]
            if not watchers:
                del self._of_target[target_idx]

    def close_target(self, target_idx: int) -> list[WatchKey]:
        """The watched process died: every watch on it ends; the watchers to tell."""
        keys = list(self._of_target.pop(target_idx, {}))
        for key in keys:
            del self._target_of[key]
        return keys

    def watcher_died(self, watcher_idx: int, watcher_epoch: int) -> None:
        """A watcher's process died: its connections closed with it (nobody is told)."""
        for key in [k for k in self._target_of if k[0] == watcher_idx and k[1] == watcher_epoch]:
            self.remove(key)
