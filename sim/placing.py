"""Placement in the simulator: what every simulated node needs to host a PlacementCore.

- `SimRuntime`: the node's model runtime as placement reads it. A replica is
  LOADING from the moment the core first asks about it, and READY after a load
  time drawn from an RNG of the node's own life (LOAD_S), so adding placement
  leaves every other stream's draws as they were.
- `FleetTrust` and `FleetPlacementMesh`: an unkeyed fleet's nodes ("n00001") have
  no admission record, so neither the state store nor the placement core would
  know their keys. As FleetKeyPeers does for the election, these read each
  node's key from the fleet's table (a driver concern: an agent's admission
  carries it).
- `device_inventory`: each node's device, drawn from the seed and varied so the
  deployment set's requirements exclude some nodes: every 4th node of a region
  has an accelerator, every 3rd a camera label, memory from 4 to 32 GiB with
  every 4th node (offset 2) at 32 GiB.
- `deployment_set`: the deployments every scenario places (DEPLOYMENTS x
  REPLICAS_PER_REGION per region), each with a requirement some nodes miss.
"""

from __future__ import annotations

import hashlib
import random

from gossip.kinds import DEFAULT_KINDS, Writer
from gossip.node import GossipNode
from gossip.trust import Trust
from inference.assignments import ReplicaState
from inference.inventory import Inventory
from inference.manifest import Deployment, manifest_from_doc
from inference.placing_ports import GossipPlacementMesh

LOAD_S = (0.5, 3.0)
LOAD_RNG_DOMAIN = "murmur-sim-load"
INVENTORY_RNG_DOMAIN = "murmur-sim-device"
GIB = 1 << 30
ACCELERATOR = "CUDAExecutionProvider"
CAMERA_LABEL = ("camera", "yes")
BIG_MEMORY_BYTES = 12 * GIB
REPLICAS_PER_REGION = 2
ARTIFACT_SIZE_BYTES = 64 << 20


class SimRuntime:
    """ReplicaRuntime of one node's life: LOADING for a drawn load time, then READY."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._ready_at_s: dict[str, float] = {}

    def replica_state(self, deployment: Deployment, now: float) -> ReplicaState | None:
        ready_at = self._ready_at_s.get(deployment.name)
        if ready_at is None:
            ready_at = self._ready_at_s[deployment.name] = now + self._rng.uniform(*LOAD_S)
        return ReplicaState.READY if now >= ready_at else ReplicaState.LOADING

    def replica_error(self, deployment: str) -> str | None:
        return None  # a simulated load never fails

    def drop(self, deployment: str) -> None:
        """The node stopped its replica: a new one loads again."""
        self._ready_at_s.pop(deployment, None)


def load_rng(seed: int, node_id: str, life: int) -> random.Random:
    """The load-time RNG of one life of one node (derived apart from the run's other RNGs)."""
    return random.Random(f"{LOAD_RNG_DOMAIN}/{seed}/{node_id}/{life}")


class FleetTrust:
    """A Trust that also knows the unkeyed fleet's node keys by node id (see the module docstring)."""

    def __init__(self, inner: Trust, node_keys: dict[str, bytes]) -> None:
        self._inner = inner
        self._nodes = node_keys  # the fleet's table, filled as nodes are created

    @property
    def cluster_id(self) -> str:
        return self._inner.cluster_id

    def is_operator(self, author: str) -> bool:
        return self._inner.is_operator(author)

    def is_root_operator(self, author: str) -> bool:
        return self._inner.is_root_operator(author)

    def public_key(self, author: str) -> bytes | None:
        return self._inner.public_key(author) or self._nodes.get(author)

    def is_revoked(self, author: str) -> bool:
        return self._inner.is_revoked(author)

    def may_write(self, author: str, kind: str, key: str) -> bool:
        if author in self._nodes and not self._inner.is_operator(author):
            policy = DEFAULT_KINDS.get(kind)
            return policy is not None and policy.writer is Writer.NODE and key == author
        return self._inner.may_write(author, kind, key)


class FleetPlacementMesh(GossipPlacementMesh):
    """GossipPlacementMesh whose member keys come from the fleet's table (unkeyed fleets)."""

    def __init__(self, gossip: GossipNode, keys: dict[str, bytes]) -> None:
        super().__init__(gossip)
        self._keys = keys

    def member_key(self, node_id: str) -> bytes | None:
        return self._keys.get(node_id)


def device_inventory(seed: int, node_id: str, region: str, position: int) -> Inventory:
    """The device of the position-th node of a region (see the module docstring)."""
    rng = random.Random(f"{INVENTORY_RNG_DOMAIN}/{seed}/{node_id}")
    cpus = rng.choice((2, 4, 8))
    memory = 32 * GIB if position % 4 == 2 else rng.choice((4, 8, 16, 32)) * GIB
    accelerators = ["CPUExecutionProvider"]
    if position % 4 == 0:
        accelerators.insert(0, ACCELERATOR)
    labels = {"site": region}
    if position % 3 == 1:
        labels[CAMERA_LABEL[0]] = CAMERA_LABEL[1]
    return Inventory(
        cpu_count=cpus,
        load_1m=round(rng.uniform(0.0, cpus / 4), 2),
        cpu_percent=round(rng.uniform(0.0, 50.0), 1),
        memory_total_bytes=memory,
        memory_available_bytes=memory // 2,
        disk_free_bytes=rng.randrange(20 * GIB, 500 * GIB),
        accelerators=tuple(accelerators),
        os="linux",
        arch=rng.choice(("x86_64", "aarch64")),
        python="3.11.9",
        labels=labels,
        region=region,
    )


def deployment_set(replicas: int = REPLICAS_PER_REGION) -> list[Deployment]:
    """The deployments every scenario places: one needs an accelerator, one a label, one memory."""
    requirements = (
        ("sim-detect", {"accelerator": "cuda"}),
        ("sim-count", {"labels": {CAMERA_LABEL[0]: CAMERA_LABEL[1]}}),
        ("sim-forecast", {"min_memory_bytes": BIG_MEMORY_BYTES}),
    )
    out: list[Deployment] = []
    for name, req in requirements:
        sha = hashlib.sha256(f"{name}/1".encode()).hexdigest()
        doc = {
            "name": name,
            "model": {"name": name, "version": "1"},
            "artifact": {"sha256": sha, "size_bytes": ARTIFACT_SIZE_BYTES},
            "replicas": replicas,
            "requirements": req,
        }
        out.append(manifest_from_doc(doc))
    return out
