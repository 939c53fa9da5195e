"""Membership timing profiles and the formulas that scale them with pool size.

Every knob of the membership protocol lives in one frozen object, with the unit
last in each name. The three named profiles follow HashiCorp memberlist's
LAN/WAN/Local configs; where we deviate, the comment says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

# Bytes the envelope adds to every datagram and stream frame (gossip/envelope.py):
# one version byte, a 24-byte nonce and a 16-byte Poly1305 tag.
ENVELOPE_OVERHEAD_BYTES = 41
# What an introducing pairwise frame adds to that: the sender's Ed25519 public key.
# A node with authenticated members leaves this much room in every packet, so any
# packet can introduce its sender to a peer that does not know its key yet.
INTRO_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """Timing and size limits of one SWIM pool."""

    name: str
    probe_interval_s: float
    probe_timeout_s: float
    gossip_interval_s: float
    gossip_nodes: int
    indirect_checks: int
    retransmit_mult: int
    suspicion_mult: int
    suspicion_max_timeout_mult: int
    push_pull_interval_s: float
    stream_timeout_s: float
    gossip_to_the_dead_s: float
    reconnect_interval_s: float  # how often to try a push-pull with a dead member (Serf's reconnect)
    awareness_max_multiplier: int
    # Connection checks (docs/design.md, "Refused connections"). When a direct probe
    # gets no ack, the prober (and each indirect helper) tries a TCP connection to the
    # target's gossip port, giving up after conn_check_timeout_s (it must end within
    # the probe's interval to count). A suspicion whose refusals were seen by
    # refusers_needed members (fewer in a smaller pool) is confirmed dead
    # refused_dead_after_s after it started; one whose target completed a handshake
    # (a frozen process) is not declared dead before stalled_dead_after_s.
    conn_checks: bool = True
    conn_check_timeout_s: float = 0.25
    refusers_needed: int = 2
    refused_dead_after_s: float = 1.0
    stalled_dead_after_s: float = 15.0
    # Watched connections (docs/design.md, "Watched connections"): each member holds an
    # idle TCP connection to watch_count ring successors, and probes one at once when
    # its host closes that connection (a process that died); an ended watch is opened
    # again after watch_retry_s. 0 turns them off.
    watch_count: int = 0
    watch_retry_s: float = 5.0
    # Limits: everything is bounded.
    packet_max_bytes: int = 1400
    broadcast_queue_max: int = 1024
    members_max: int = 4096
    stream_max_bytes: int = 4 * 1024 * 1024
    meta_max_bytes: int = 512
    user_payload_max_bytes: int = 1024
    # Region-scoped records (inventory, placement; docs/state.md "Region records").
    # The author sends a new record of its own straight to every live member of
    # its region pool (False: to region_record_push random members instead).
    region_record_push_all: bool = True
    region_record_push: int = 3
    # On first receipt from a peer, forward it to this many random members.
    region_record_relay: int = 0
    # Piggybacked transmissions of a region record per node (0: not piggybacked).
    region_record_retransmit: int = 0
    # An urgent one (a meaningful change, not a periodic refresh), with push_all, the
    # author sends to every live member once more this long after (0: never): a
    # member that lost the first datagram rarely loses both.
    region_record_repeat_s: float = 1.0

    @property
    def packet_plaintext_max_bytes(self) -> int:
        """Budget for one plaintext packet so the sealed datagram fits packet_max_bytes."""
        return self.packet_max_bytes - ENVELOPE_OVERHEAD_BYTES

    def with_(self, **changes: object) -> MembershipConfig:
        """A copy with some fields changed (for tests and `--profile` overrides)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def retransmit_limit(retransmit_mult: int, pool_size: int) -> int:
    """How many times each node transmits one broadcast: mult x ceil(log10(n + 1))."""
    return retransmit_mult * math.ceil(math.log10(pool_size + 1))


def suspicion_timeout_s(suspicion_mult: int, pool_size: int, probe_interval_s: float) -> float:
    """Minimum suspicion timeout: mult x max(1, log10(n)) x probe interval (memberlist util.go)."""
    node_scale = max(1.0, math.log10(max(1.0, float(pool_size))))
    return suspicion_mult * node_scale * probe_interval_s


# Region pools: a site's LAN. memberlist's LAN profile with two changes, both
# for faster detection at the same false-positive risk:
# - probe every 0.5 s (memberlist: 1 s). With round-robin probing, the wait until
#   some member first probes a crashed node is the minimum over all probers; its
#   p99 halves with the interval (about 2.3 s in a pool of 100 instead of 4.6 s).
# - suspicion_mult 6 (memberlist: 4), so that the suspicion timeout, which the
#   formula ties to the probe interval, keeps its length: 6 x log10(100) x 0.5 s
#   = 6 s minimum in a pool of 100 (memberlist: 8 s), 36 s maximum. 6 s still
#   exceeds the longest stall we must ride out (5 s) plus a refutation's trip,
#   and Lifeguard needs k = 4 independent confirmations to shrink a timer to
#   that minimum, so a lone wrong accuser leaves the suspect far longer.
LAN = MembershipConfig(
    name="lan",
    probe_interval_s=0.5,
    probe_timeout_s=0.25,
    gossip_interval_s=0.2,
    gossip_nodes=3,
    indirect_checks=3,
    retransmit_mult=4,
    suspicion_mult=6,
    suspicion_max_timeout_mult=6,
    push_pull_interval_s=30.0,
    stream_timeout_s=10.0,
    gossip_to_the_dead_s=30.0,
    reconnect_interval_s=10.0,
    awareness_max_multiplier=8,
    watch_count=2,
)

# The fleet pool: gateways of all regions over slower, lossier links.
WAN = MembershipConfig(
    name="wan",
    probe_interval_s=5.0,
    probe_timeout_s=3.0,
    gossip_interval_s=0.5,
    gossip_nodes=4,
    indirect_checks=3,
    retransmit_mult=4,
    suspicion_mult=6,
    suspicion_max_timeout_mult=6,
    push_pull_interval_s=60.0,
    stream_timeout_s=30.0,
    gossip_to_the_dead_s=60.0,
    reconnect_interval_s=30.0,
    awareness_max_multiplier=8,
    conn_check_timeout_s=1.5,
    refused_dead_after_s=5.0,
    stalled_dead_after_s=60.0,
)

# A single machine (loopback tests and the demo): fast and strict. memberlist's
# Local profile, but retransmit_mult 3 (memberlist: 2): the pools here are tiny,
# where two sends often both land on members that already know.
LOCAL = MembershipConfig(
    name="local",
    probe_interval_s=1.0,
    probe_timeout_s=0.2,
    gossip_interval_s=0.1,
    gossip_nodes=3,
    indirect_checks=3,
    retransmit_mult=3,
    suspicion_mult=3,
    suspicion_max_timeout_mult=6,
    push_pull_interval_s=15.0,
    stream_timeout_s=5.0,
    gossip_to_the_dead_s=15.0,
    reconnect_interval_s=5.0,
    awareness_max_multiplier=8,
    watch_count=2,
    conn_check_timeout_s=0.5,
)

PROFILES: dict[str, MembershipConfig] = {"lan": LAN, "wan": WAN, "local": LOCAL}


def profile(name: str) -> MembershipConfig:
    """The named profile, or a ValueError that lists the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of: lan, wan, local") from None
