"""What the placement core (inference/placing.py) reads, what it reports, and its settings.

The core reads the world through three small Protocols, so drivers wire it to
the real objects and tests to fakes or a real gossip.state.StateStore:

- `PlacementMesh`: this node's region pool and the state store (records by
  kind, member keys, our own latest record version); `GossipPlacementMesh`
  adapts a `GossipNode`;
- `PlacementElection`: who leads, whether we may act alone, and the leader's
  certificate; `consensus.election.ElectionCore` has these methods itself;
- `ReplicaRuntime`: the state of this node's replica of a deployment (loading,
  ready, failed). The agent's model host (mesh/service/modelhost.py) loads and warms
  up each replica it is asked about; `HeldArtifacts` (tests of placement alone) says
  ready when the artifact is held; the simulator draws a load time from its seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gossip.events import HostedEvent, MemberState
from gossip.node import GossipNode
from gossip.records import Record
from inference.assignments import ReplicaState
from inference.manifest import Deployment
from inference.placement import ChangeKind


class PlacementMesh(Protocol):
    """The region pool and the state store, as placement reads them."""

    def region_members(self) -> list[tuple[str, MemberState]]:
        """Every member of this node's region pool with its state, this node included, by id."""
        ...

    def records(self, kind: str) -> list[Record]:
        """The held records of `kind` (no tombstones), sorted by key."""
        ...

    def member_key(self, node_id: str) -> bytes | None:
        """An admitted member's Ed25519 public key (to check certificates), or None."""
        ...

    def latest_version(self, node_id: str) -> int | None:
        """The highest version of node_id's records held (ours: sign above it), or None."""
        ...


class GossipPlacementMesh:
    """PlacementMesh over a GossipNode (the drivers' adapter)."""

    def __init__(self, gossip: GossipNode) -> None:
        self._gossip = gossip

    def region_members(self) -> list[tuple[str, MemberState]]:
        return self._gossip.member_states("region")

    def records(self, kind: str) -> list[Record]:
        return self._gossip.state.records(kind)

    def member_key(self, node_id: str) -> bytes | None:
        return self._gossip.member_key(node_id)

    def latest_version(self, node_id: str) -> int | None:
        return self._gossip.state.latest_version(node_id)


class PlacementElection(Protocol):
    """The region's election, as placement reads it (ElectionCore implements it)."""

    def leader(self) -> str | None:
        """The leader as this node believes, or None."""
        ...

    def is_leader(self, now: float) -> bool:
        """True while this node leads within its lease: it may publish placements."""
        ...

    def certificate(self) -> bytes | None:
        """The believed leader's certificate (consensus/certificate.py), or None."""
        ...


class ReplicaRuntime(Protocol):
    """Where this node's replica of a deployment stands in the node's model runtime."""

    def replica_state(self, deployment: Deployment, now: float) -> ReplicaState | None:
        """LOADING, READY or FAILED; None if the runtime has not started on it."""
        ...

    def replica_error(self, deployment: str) -> str | None:
        """Why this node's replica of `deployment` failed (when FAILED), or None."""
        ...


class HeldArtifacts:
    """ReplicaRuntime with no model runtime (tests of placement alone): a held artifact is ready."""

    def __init__(self, held: Callable[[str], bool]) -> None:
        """held(sha256 hex) -> True if the artifact store holds that artifact, verified."""
        self._held = held

    def replica_state(self, deployment: Deployment, now: float) -> ReplicaState | None:
        return ReplicaState.READY if self._held(deployment.artifact_sha256) else None

    def replica_error(self, deployment: str) -> str | None:
        return None  # nothing is loaded, so nothing fails


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    """The placement core's timings, in seconds (one place, like consensus/timing.py)."""

    react_delay_s: float = 0.05  # after a relevant change, act this soon (changes come in bursts)
    refresh_interval_s: float = 3.0  # a leader recomputes at least this often
    leaderless_after_s: float = 3.0  # no leader this long: take over provisionally (one election round)
    state_poll_s: float = 0.5  # ask the runtime this often while a replica is on its way
    retry_unproven_s: float = 5.0  # re-check placements whose certificate's keys were unknown
    # A leader gives a holder suspect this long a standby on another node (kept until ready):
    # a crashed host is confirmed dead only after its suspicion runs out (several seconds), and
    # a refuted suspicion, the common false alarm, ends well within this delay.
    standby_after_s: float = 1.0
    # A node still reports a replica the applied placement dropped, from an older placement, this
    # long after it was applied: the node lost it (both sendings), publish a newer epoch again.
    release_retry_s: float = 3.0

    def __post_init__(self) -> None:
        if min(self.react_delay_s, self.refresh_interval_s, self.leaderless_after_s) < 0 or (
            self.standby_after_s < 0
        ):
            raise ValueError(
                "react_delay_s, refresh_interval_s, leaderless_after_s and standby_after_s must be 0 or more"
            )
        if min(self.state_poll_s, self.retry_unproven_s, self.refresh_interval_s, self.release_retry_s) <= 0:
            raise ValueError(
                "state_poll_s, retry_unproven_s, refresh_interval_s and release_retry_s must be above 0"
            )


@dataclass(frozen=True, slots=True, order=True)
class AppliedChange:
    """One difference between two applied placements."""

    deployment: str
    slot: int
    kind: ChangeKind
    from_node: str | None
    to_node: str | None


@dataclass(frozen=True, slots=True)
class PlacementApplied(HostedEvent):
    """This node applied placement `epoch` of `term` in `era` (era: [generation, founder])."""

    region: str
    era: tuple[int, str]
    term: int
    epoch: int
    leader: str
    changes: tuple[AppliedChange, ...]


@dataclass(frozen=True, slots=True)
class ReplicaStateChanged(HostedEvent):
    """This node's replica of `deployment` is now in `state` (new replicas start assigned or
    provisional: fetch and load them)."""

    deployment: str
    slot: int
    state: ReplicaState


@dataclass(frozen=True, slots=True)
class ReplicaDropped(HostedEvent):
    """This node no longer holds a replica of `deployment`: stop serving it."""

    deployment: str
    slot: int
