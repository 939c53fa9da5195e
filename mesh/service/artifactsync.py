"""Keeping this node's artifact store in line with its replicas and its size budget.

Every SYNC_INTERVAL_S the keeper reads this node's replicas (the placement core's
`own_replicas`) and the held deployments (`desired` records): the artifact of each replica
not held here is fetched from peers (mesh/service/fetcher.py), a transfer no replica
needs any more is stopped (its partial file stays, for a resume, until collected). Every
GC_INTERVAL_S garbage collection deletes artifacts no deployment names, least recently
used first, while the store is over `budget_bytes` (inference/artifact_gc.py), and the
partial files of artifacts no deployment names.

It also says which artifacts the inventory lists (`listed`: the most recently used,
ARTIFACTS_LISTED_MAX at most) and gives GET /metrics its artifact families.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gossip.records import Record
from inference.artifact_gc import to_delete
from inference.inventory import ARTIFACTS_LISTED_MAX
from inference.manifest import Deployment
from inference.placing_inputs import deployments_of
from mesh.service.artifacts import ArtifactStore
from mesh.service.fetcher import Fetcher
from mesh.service.metrics import bounded

log = logging.getLogger("murmur.artifacts")

ARTIFACT_BUDGET_BYTES = 2 * 1024**3  # --artifact-budget-bytes's default
SYNC_INTERVAL_S = 1.0
GC_INTERVAL_S = 30.0
TRANSFER_STATES = ("queued", "fetching", "waiting", "verifying")


class ArtifactKeeper:
    """Fetches what this node's replicas need and collects what no deployment needs."""

    def __init__(
        self,
        store: ArtifactStore,
        fetcher: Fetcher,
        desired: Callable[[], Sequence[Record]],
        own_deployments: Callable[[], Sequence[str]],
        *,
        budget_bytes: int = ARTIFACT_BUDGET_BYTES,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self._desired = desired
        self._own = own_deployments
        self.budget_bytes = budget_bytes
        self._cache: dict[bytes, Deployment] = {}
        self._touched: dict[str, None] = {}  # wanted artifacts already marked as used
        self.deleted = 0  # artifacts garbage collection removed

    def deployments(self) -> dict[str, Deployment]:
        return deployments_of(self._desired(), self._cache)

    def reconcile(self) -> None:
        """Start a transfer for each replica's artifact not held; stop those not wanted."""
        deployments = self.deployments()
        wanted: dict[str, int] = {}
        for name in self._own():
            deployment = deployments.get(name)
            if deployment is not None:
                wanted[deployment.artifact_sha256] = deployment.artifact_size_bytes
        for sha256, size in wanted.items():
            if self.fetcher.want(sha256, size) is None and sha256 not in self._touched:
                self.store.touch(sha256)  # held and used again: last to be collected
        self._touched = dict.fromkeys(wanted)
        for sha256 in self.fetcher.writing():
            if sha256 not in wanted:
                self.fetcher.cancel(sha256)

    def collect_garbage(self) -> list[str]:
        """Delete what no deployment needs while over the budget (blocking: a thread)."""
        keep = {d.artifact_sha256 for d in self.deployments().values()}
        keep.update(self.fetcher.writing())
        gone = to_delete(self.store.held(), keep, self.budget_bytes)
        for sha256 in gone:
            if self.store.delete(sha256):
                self.deleted += 1
                log.info("artifact %s deleted: no deployment needs it and the store is over budget", sha256)
        for sha256 in self.store.partials():
            if sha256 not in keep:
                self.store.remove_partial(sha256)
                log.info("partial transfer of artifact %s removed: no deployment needs it", sha256)
        return gone

    def listed(self) -> tuple[str, ...]:
        """The artifacts the inventory names as held here (most recently used), by id."""
        held = sorted(self.store.held(), key=lambda a: (-a.last_used, a.sha256))
        return tuple(sorted(a.sha256 for a in held[:ARTIFACTS_LISTED_MAX]))

    async def run(self, on_change: Callable[[], None]) -> None:
        """Reconcile every SYNC_INTERVAL_S, collect every GC_INTERVAL_S; never stops on an error."""
        since_gc_s = GC_INTERVAL_S
        while True:
            try:
                self.reconcile()
                if since_gc_s >= GC_INTERVAL_S:
                    since_gc_s = 0.0
                    if await asyncio.to_thread(self.collect_garbage):
                        on_change()
            except Exception:  # a disk error must not stop the node's fetching for good
                log.exception("artifact sync failed; retrying in %.0f s", SYNC_INTERVAL_S)
            await asyncio.sleep(SYNC_INTERVAL_S)
            since_gc_s += SYNC_INTERVAL_S


def artifact_families(keeper: ArtifactKeeper) -> Iterable[Metric]:
    """GET /metrics: bytes fetched and bad chunks by source peer, transfers by state, the store."""
    fetcher = keeper.fetcher
    received = CounterMetricFamily(
        "murmur_artifact_bytes", "Artifact bytes this node fetched, by source peer", labels=["source_peer"]
    )
    for peer, count in bounded(fetcher.bytes_by_peer.items()):
        received.add_metric([peer], count)
    bad = CounterMetricFamily(
        "murmur_artifact_bad_chunks",
        "Chunks a peer sent that the artifact's sha256 proved wrong (refused, fetched elsewhere)",
        labels=["source_peer"],
    )
    for peer, count in bounded(fetcher.bad_chunks_by_peer.items()):
        bad.add_metric([peer], count)
    transfers = GaugeMetricFamily(
        "murmur_artifact_transfers", "Transfers running, by state", labels=["state"]
    )
    states = [t["state"] for t in fetcher.transfers()]
    for state in TRANSFER_STATES:
        transfers.add_metric([state], states.count(state))
    held = keeper.store.held()
    store = GaugeMetricFamily("murmur_artifact_store_bytes", "Bytes of artifacts held in the store")
    store.add_metric([], sum(a.size_bytes for a in held))
    collected = CounterMetricFamily(
        "murmur_artifacts_collected", "Artifacts garbage collection deleted (over budget, unneeded)"
    )
    collected.add_metric([], keeper.deleted)
    return [received, bad, transfers, store, collected]
