"""Events a gossip core reports to its driver (small frozen values)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gossip.records import Record


class MemberState(StrEnum):
    """A member's state in one observer's view of a pool."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """A member of `pool` ("region" or "fleet") entered `state` in this node's view."""

    pool: str
    node_id: str
    addr: str
    state: MemberState
    incarnation: int


@dataclass(frozen=True, slots=True)
class BroadcastDelivered:
    """A fleet-wide broadcast reached this node for the first time."""

    origin_id: str
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class GatewayChanged:
    """This node became (True) or stopped being (False) a gateway of its region."""

    is_gateway: bool


@dataclass(frozen=True, slots=True)
class IncarnationChanged:
    """This node's own incarnation rose (persist it so a restart starts above it)."""

    incarnation: int


@dataclass(frozen=True, slots=True)
class RecordsAccepted:
    """Signed records new to this node's state store (persist them; they are already verified)."""

    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class AdmissionRefused:
    """A node's admission record was refused (reason: a gossip.admission.REFUSALS entry).

    The node never becomes a member here; the owner logs why (once per node and reason).
    """

    node_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Revoked:
    """An operator revoked node_id: it was expelled here and is refused from now on.

    When node_id is this node's own id, this node has been revoked: its owner should stop.
    """

    node_id: str


@dataclass(frozen=True, slots=True)
class AppMessageReceived:
    """An application message from member from_id of `pool` for the hosted core on `channel`.

    The sender was a live member of the pool at the address the message came
    from; the payload is the hosted core's own encoding, not yet validated.
    """

    pool: str
    channel: int
    from_id: str
    payload: bytes


class HostedEvent:
    """Base of the events that cores hosted by the composite node report (node/hosted.py).

    Gossip does not know them; it only lets them travel the same event queue to the driver.
    """

    __slots__ = ()


Event = (
    MemberChanged
    | BroadcastDelivered
    | GatewayChanged
    | IncarnationChanged
    | RecordsAccepted
    | AdmissionRefused
    | Revoked
    | AppMessageReceived
    | HostedEvent
)
