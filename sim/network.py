"""The seeded network model: per-link latency, loss, duplication, reordering, partitions.

Latency follows the architecture's regions: a region is one site's LAN (a
lognormal delay around a median of 1-3 ms, the median drawn per region), and
each pair of regions is joined by a WAN link whose median (20-80 ms) is drawn
once per pair from the seed, with a few percent of jitter on every packet.
Reordering is the natural consequence of that jitter. Every datagram is lost
with probability `loss` and duplicated with probability `duplicate`.
Partitions put every node in a group; nothing crosses between groups.

Per-packet draws are two RNG calls: a uniform for the packet's fate and 12
random bits that index a precomputed table of lognormal jitter factors.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

INTRA_MEDIAN_S = (0.001, 0.003)
INTER_MEDIAN_S = (0.020, 0.080)
INTRA_SIGMA = 0.35
INTER_SIGMA = 0.08
DUPLICATE_DEFAULT = 0.001
# Bandwidth for stream transfers (push-pull state): a site LAN vs a WAN uplink.
INTRA_BYTES_PER_S = 12_500_000.0
INTER_BYTES_PER_S = 2_500_000.0
# TCP retransmits a lost segment after its minimum RTO (Linux: 200 ms).
TCP_RTO_MIN_S = 0.2

_JITTER_BITS = 12
_JITTER_SIZE = 1 << _JITTER_BITS


def _jitter_table(rng: random.Random, sigma: float) -> list[float]:
    return [math.exp(sigma * rng.gauss(0.0, 1.0)) for _ in range(_JITTER_SIZE)]


class Network:
    """Latency, loss, duplication and partitions between simulated nodes."""

    def __init__(
        self,
        rng: random.Random,
        region_count: int,
        *,
        loss: float = 0.0,
        duplicate: float = DUPLICATE_DEFAULT,
    ) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {loss}")
        if not 0.0 <= duplicate < 1.0 - loss:
            raise ValueError(f"duplicate must be in [0, 1 - loss), got {duplicate}")
        self.rng = rng
        self.loss = loss
        self.duplicate = duplicate
        self._dup_edge = loss + duplicate
        self.region_count = region_count
        # median one-way delay in seconds, [src region][dst region], symmetric.
        self.median_s: list[list[float]] = [[0.0] * region_count for _ in range(region_count)]
        for r in range(region_count):
            self.median_s[r][r] = rng.uniform(*INTRA_MEDIAN_S)
            for q in range(r + 1, region_count):
                m = rng.uniform(*INTER_MEDIAN_S)
                self.median_s[r][q] = m
                self.median_s[q][r] = m
        self._intra_jitter = _jitter_table(rng, INTRA_SIGMA)
        self._inter_jitter = _jitter_table(rng, INTER_SIGMA)
        # Partition group of each node index; empty when the network is whole.
        self.partitioned = False
        self._group: list[int] = []
        self._size = 0

    def grow(self, node_count: int) -> None:
        """Make room for node indexes up to `node_count`; new nodes join group 0."""
        self._size = node_count
        if self.partitioned and len(self._group) < node_count:
            self._group.extend([0] * (node_count - len(self._group)))

    def copies(self) -> int:
        """How many copies of the next datagram arrive: 0 (lost), 1, or 2 (duplicated)."""
        u = self.rng.random()
        if u < self.loss:
            return 0
        if u < self._dup_edge:
            return 2
        return 1

    def delay_s(self, src_region: int, dst_region: int) -> float:
        """One datagram's one-way delay between two regions (the same region: the LAN)."""
        k = self.rng.getrandbits(_JITTER_BITS)
        if src_region == dst_region:
            return self.median_s[src_region][src_region] * self._intra_jitter[k]
        return self.median_s[src_region][dst_region] * self._inter_jitter[k]

    def stream_delay_s(self, src_region: int, dst_region: int, size_bytes: int, *, trips: int) -> float:
        """Delay of a reliable stream exchange: `trips` one-way trips, transfer, retransmits."""
        delay_s = 0.0
        for _ in range(trips):
            delay_s += self.delay_s(src_region, dst_region)
        rate = INTRA_BYTES_PER_S if src_region == dst_region else INTER_BYTES_PER_S
        delay_s += size_bytes / rate
        if self.loss > 0.0:
            rto_s = max(TCP_RTO_MIN_S, 4.0 * self.median_s[src_region][dst_region])
            segments = trips + size_bytes // 1400
            for _ in range(min(segments, 64)):
                if self.rng.random() < self.loss:
                    delay_s += rto_s
        return delay_s

    def segment_s(self, src_region: int, dst_region: int, rng: random.Random, rto_s: float) -> float:
        """One TCP segment's one-way delay, sent again after rto_s while lost; drawn from `rng`."""
        table = self._intra_jitter if src_region == dst_region else self._inter_jitter
        delay_s = self.median_s[src_region][dst_region] * table[rng.getrandbits(_JITTER_BITS)]
        while self.loss > 0.0 and rng.random() < self.loss:
            delay_s += rto_s
            rto_s *= 2
        return delay_s

    def handshake_s(self, src_region: int, dst_region: int, rng: random.Random, syn_rto_s: float) -> float:
        """How long a TCP handshake's answer (SYN-ACK or reset) takes to come back.

        Drawn from `rng`, not the network's own: connection checks then leave every
        datagram's fate and delay as they were. A lost segment is sent again after
        syn_rto_s (TCP's initial retransmission timeout).
        """
        table = self._intra_jitter if src_region == dst_region else self._inter_jitter
        median_s = self.median_s[src_region][dst_region]
        rtt_s = median_s * (table[rng.getrandbits(_JITTER_BITS)] + table[rng.getrandbits(_JITTER_BITS)])
        if self.loss > 0.0:
            for _ in range(2):  # the SYN, then its answer
                if rng.random() < self.loss:
                    rtt_s += syn_rto_s
        return rtt_s

    # -- partitions ------------------------------------------------------------------

    def set_loss(self, loss: float) -> None:
        """Change the loss on every link from now on (a loss burst, sim/swarm.py)."""
        if not 0.0 <= loss < 1.0 - (self._dup_edge - self.loss):
            raise ValueError(f"loss must be in [0, 1 - duplicate), got {loss}")
        self._dup_edge += loss - self.loss
        self.loss = loss

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Split the network: nodes in different groups cannot reach each other.

        Nodes in no group form one more group of their own.
        """
        rest = len(groups)
        self._group = [rest] * self._size
        for g, members in enumerate(groups):
            for idx in members:
                self._group[idx] = g
        self.partitioned = True

    def heal(self) -> None:
        """Make the network whole again."""
        self.partitioned = False
        self._group = []

    def blocked(self, a: int, b: int) -> bool:
        """True when a partition separates node indexes `a` and `b`."""
        if not self.partitioned:
            return False
        return self._group[a] != self._group[b]

    def group_of(self, idx: int) -> int:
        """The partition group of node `idx` (0 when the network is whole)."""
        return self._group[idx] if self.partitioned else 0
