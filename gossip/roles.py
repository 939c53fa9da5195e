"""What a membership pool asks of the node that owns it: a few narrow roles.

A `Membership` (gossip/membership.py) runs SWIM for one pool. What it does not
decide itself it asks through these roles, each a small interface with one job,
so the pool never reaches into the rest of the node:

- `AdmissionGate`: may this node be a member; what our join request carries.
- `StateExchange`: state-store anti-entropy as opaque bytes (digest, delta, merge).
- `Directory`: region summaries carried in push-pull and redirects.
- `MessageSink`: messages the pool carries for its owner (broadcasts, summaries,
  records, application messages).

Each call names the pool by its code (codec.POOL_REGION or codec.POOL_FLEET).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gossip import codec

# Messages a pool does not handle itself but hands to its owner.
OwnerMessage = codec.UserBroadcast | codec.Summary | codec.RecordGossip | codec.AppMessage


class AdmissionGate(Protocol):
    """Admission checks for one pool, and the proof of a member's own claims."""

    @property
    def authenticated(self) -> bool:
        """True when members' alive claims must carry their own signature (admission mode)."""
        ...

    def sign_alive(self, pool: int, node_id: str, incarnation: int, addr: str, meta: bytes) -> bytes:
        """Our signature of our alive claim (b"" when not authenticated)."""
        ...

    def verify_alive(self, pool: int, msg: codec.Alive) -> bool:
        """True if msg is its member's own claim (always True when not authenticated)."""
        ...

    def may_join(self, pool: int, node_id: str, meta: bytes) -> bool:
        """True if node_id may be a member of pool (admitted); else its alive notice waits."""
        ...

    def introduction(self, pool: int) -> tuple[bytes, ...]:
        """Encoded records a join request carries (our admission), so the peer can admit us."""
        ...


class StateExchange(Protocol):
    """The state store's anti-entropy, as opaque bytes the pool carries in push-pull."""

    def digest(self, pool: int) -> bytes: ...

    def missing(self, pool: int, remote_digest: bytes) -> tuple[bytes, ...]: ...

    def merge(self, pool: int, now: float, blobs: Sequence[bytes]) -> None: ...


class Directory(Protocol):
    """Region summaries: what push-pull and redirects carry about the fleet."""

    def local_summaries(self, pool: int) -> tuple[codec.Summary, ...]: ...

    def redirect_summaries(self, pool: int | None) -> tuple[codec.Summary, ...]: ...

    def merge_summaries(self, pool: int, now: float, summaries: Sequence[codec.Summary]) -> None: ...

    def on_redirect(self, pool: int, now: float, reply: codec.PushPull) -> None: ...


class MessageSink(Protocol):
    """Receives the messages a pool carries for its owner."""

    def on_message(self, pool: int, now: float, src: str, msg: OwnerMessage) -> None: ...


@dataclass(frozen=True, slots=True)
class PoolRoles:
    """The roles one pool is given at construction."""

    gate: AdmissionGate
    state: StateExchange
    directory: Directory
    messages: MessageSink
