"""What the network-key core (node/netkeys.py) exchanges with its driver and reads of the mesh (sans-IO).

Its timings (`NetKeyConfig`), the events a driver applies to its keyring
(`NetworkKeyInstalled`, `NetworkKeyInUse`, `NetworkKeysRetired`), and the
read-only views of the mesh it needs (`KeyPeers`, and `GossipPeers` over a
`GossipNode`). node/netkeys.py re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gossip.events import HostedEvent, MemberState
from gossip.keyholding import REPORT_DELAY_S
from gossip.kinds import KEYRING_KIND, NETKEY_KIND, REGION_SCOPE_PREFIX
from gossip.netkey import NETKEY_SLOT
from gossip.node import GossipNode
from gossip.records import Record


@dataclass(frozen=True, slots=True)
class NetKeyConfig:
    """Timings and fan-out of the key's spread (one place, like gossip/config.py)."""

    push_fanout: int = 3  # members offered the key by each new holder, per pool
    pull_delay_s: float = 1.0  # after the record arrives, wait (x 1-2, jittered) for a push first
    ask_interval_s: float = 1.0  # first retry of an unanswered request ...
    ask_interval_max_s: float = 8.0  # ... doubling up to this
    use_after_s: float = 30.0  # seal with the new key this long after obtaining it
    answer_interval_s: float = 1.0  # at most one answer per asker per this long
    # A changed keyring is said (the node's `keyring` record) this long after the change, drawn
    # at random: every member changes at once, and a burst of their records while the `netkey`
    # record spreads slowed its spread (the simulator, 60 nodes in 3 regions, seed 2: p99 from
    # 1.5 s to 22 s with no delay or 2-10 s; 1.8 s with 10-30 s). It also folds changes close
    # together (a rotation's install and use) into one record.
    # An operator may shorten it (`murmur agent --keyring-report-delay`) where the burst does not
    # matter: a small fleet, a test.
    report_delay_min_s: float = REPORT_DELAY_S[0]
    report_delay_max_s: float = REPORT_DELAY_S[1]

    def __post_init__(self) -> None:
        if self.push_fanout < 0 or self.pull_delay_s < 0 or self.use_after_s < 0:
            raise ValueError("push_fanout, pull_delay_s and use_after_s must be 0 or more")
        if not 0 < self.ask_interval_s <= self.ask_interval_max_s:
            raise ValueError("need 0 < ask_interval_s <= ask_interval_max_s")
        if not 0 <= self.report_delay_min_s <= self.report_delay_max_s:
            raise ValueError("need 0 <= report_delay_min_s <= report_delay_max_s")


@dataclass(frozen=True, slots=True)
class NetworkKeyInstalled(HostedEvent):
    """Install `key` in the keyring now (it opens frames at once) and persist it."""

    epoch: int
    key_id: str
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class NetworkKeyInUse(HostedEvent):
    """Seal with `key` (installed) from now on, and persist that it is the primary."""

    epoch: int
    key_id: str
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class NetworkKeysRetired(HostedEvent):
    """The grace period of `epoch` is over: remove `keys` from the keyring and from disk."""

    epoch: int
    keys: tuple[bytes, ...] = field(repr=False)


class KeyPeers(Protocol):
    """What the core reads of the mesh (the gossip layer's read-only views)."""

    def live_members(self, pool: str) -> list[str]:
        """Ids of the other members alive in a pool ("region" or "fleet"), in id order."""
        ...

    def member_key(self, node_id: str) -> bytes | None:
        """An admitted member's Ed25519 public key, or None."""
        ...

    def is_revoked(self, node_id: str) -> bool:
        """True if an operator revoked node_id (its revocation record is held)."""
        ...

    def notice_record(self) -> Record | None:
        """The `netkey` record held (restored from disk at start), or None."""
        ...

    def own_holding(self) -> Record | None:
        """This node's own `keyring` record held (restored from disk at start), or None."""
        ...

    def latest_version(self) -> int:
        """The highest version of any record this node signed that is held here (0: none)."""
        ...

    def region_scope(self) -> str:
        """The scope of this node's region (`region:<name>`), where its `keyring` record lives."""
        ...


class GossipPeers:
    """KeyPeers over a GossipNode (the drivers' adapter)."""

    def __init__(self, gossip: GossipNode) -> None:
        self._gossip = gossip

    def live_members(self, pool: str) -> list[str]:
        me = self._gossip.node_id
        return [
            m.node_id for m in self._gossip.members(pool) if m.state == MemberState.ALIVE and m.node_id != me
        ]

    def member_key(self, node_id: str) -> bytes | None:
        return self._gossip.member_key(node_id)

    def is_revoked(self, node_id: str) -> bool:
        return self._gossip.state.is_revoked(node_id)

    def notice_record(self) -> Record | None:
        return self._gossip.state.get(NETKEY_KIND, NETKEY_SLOT)

    def own_holding(self) -> Record | None:
        return self._gossip.state.get(KEYRING_KIND, self._gossip.node_id)

    def latest_version(self) -> int:
        return self._gossip.state.latest_version(self._gossip.node_id) or 0

    def region_scope(self) -> str:
        return REGION_SCOPE_PREFIX + self._gossip.region
