"""The key-rotation scenario's watch: how long until every live member holds the new network key.

Every node of a keyed fleet (admission mode) hosts the network-key core
(node/netkeys.py). At ROTATE_AT_S the operator rotates at one random live node
(as `murmur keys rotate` does through that node's API): the node takes the key
and publishes the operator-signed `netkey` record; the key then spreads member
to member, sealed to each receiver. With 3 regions or more, the last region is
offline (cut off from every other region, its own links working) from
OFFLINE_FROM_S to OFFLINE_UNTIL_S, across the rotation: it shows what a site
that was away gets when it comes back.

The watch applies the cores' key events to a keyring per node, as the agent
applies them to its Keyring and its data dir (install, use, retire), and hands
a restarted node the keys it kept. What it reports (`key_rotation` in the JSON):
seconds from the rotation until each reachable live member installed the key
(p50/p99/max, and when the last one did), the offline region's members measured
from the heal, members still without it at the end, how many seal with the new
key and dropped the old ones, and the messages and bytes the spread cost.
Invariant `every_member_holds_the_new_key`: every reachable live member holds
it at the end, and the offline region's members too once the run lasts
OFFLINE_SETTLE_S past the heal (the record crosses back at the fleet pool's
anti-entropy pace).

The staged variant (`--scenario key-rotation-staged`) changes the key as an
operator of `murmur keys install|use|remove` does: at ROTATE_AT_S an install at
a random reachable node, at USE_AT_S a use, at REMOVE_AT_S a remove of the old
key, each at a random reachable node that holds the new key (the one the CLI
asks must hold every key its record lists). It reports, under `staged`, how long
after the use each member sealed with the new key and after the remove dropped
the old one; invariant `every_member_holds_only_the_new_key`: every reachable
live member ends sealing with the new key and holding no other (the offline
region too once the run lasts OFFLINE_SETTLE_S past the heal).

Delivery is not changed by the keys: the simulator seals every frame with one
shared key or none (sim/engine.py). Once members seal datagrams to each other
pairwise (issue 8), the network key only seals joins, so a member that lacks
the newest key for a while loses joins through it, not gossip.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import nacl.signing

from gossip.events import Event
from gossip.kinds import NETKEY_KIND
from gossip.netkey import NETKEY_SLOT, NetKeyNotice, encode_notice, network_key_id
from gossip.node import GossipNode
from gossip.records import Record, sign_record
from node.hosted import HostedCore
from node.netkeys import (
    GossipPeers,
    NetKeyConfig,
    NetKeyCore,
    NetworkKeyInstalled,
    NetworkKeyInUse,
    NetworkKeysRetired,
)
from sim.fleet import Fleet
from sim.invariants import Invariants
from sim.observer import Observer
from sim.report import TIME_DIGITS, stats
from sim.slot import NodeSlot

ROTATE_AT_S = 10.0
USE_AT_S = 20.0  # the staged variant: an operator's `keys use`, once `keys list` shows the key held
REMOVE_AT_S = 30.0
ROTATION_EPOCH = 1
ROTATION_GRACE_S = 30
OFFLINE_FROM_S = 5.0
OFFLINE_UNTIL_S = 30.0
OFFLINE_MIN_REGIONS = 3
# The offline region gets the record back at the fleet pool's anti-entropy pace (push-pull every
# 60 s in the wan profile): the invariant holds it to the key only once a run lasts this long after.
OFFLINE_SETTLE_S = 90.0
NETKEY_RNG_DOMAIN = "murmur-sim-netkey"


def staged_records(operator: nacl.signing.SigningKey, old_key: bytes, new_key: bytes) -> list[Record]:
    """The operator's install, use and remove records (as `murmur keys install|use|remove` sign them)."""
    old, new = network_key_id(old_key), network_key_id(new_key)
    notices = [
        NetKeyNotice(1, old, 0, "install", stage="install", keys=((old, 0), (new, 1))),
        NetKeyNotice(2, new, 0, "use", stage="use", keys=((old, 0), (new, 1))),
        NetKeyNotice(3, new, 0, "remove", stage="remove", keys=((new, 1),)),
    ]
    return [
        sign_record(operator, NETKEY_KIND, NETKEY_SLOT, n.epoch, "fleet", encode_notice(n)) for n in notices
    ]


def rotation_record(operator: nacl.signing.SigningKey, new_key: bytes) -> Record:
    """The operator's `netkey` record for the scenario's rotation (as `murmur keys rotate` signs it)."""
    notice = NetKeyNotice(ROTATION_EPOCH, network_key_id(new_key), ROTATION_GRACE_S, "manual")
    return sign_record(operator, NETKEY_KIND, NETKEY_SLOT, ROTATION_EPOCH, "fleet", encode_notice(notice))


class KeyRotationWatch(Observer):
    """Hosts a key core on every node, applies their events, and reports the spread."""

    def __init__(
        self, fleet: Fleet, network_key: bytes, new_key: bytes, *, offline_region: int | None
    ) -> None:
        self.fleet = fleet
        self.old_key = network_key
        self.new_key = new_key
        self.new_id = network_key_id(new_key)
        self.offline_region = offline_region
        self.config = NetKeyConfig()
        # Each node's keyring as its driver keeps it: key ids, primary first (restarts reuse it).
        self.keyrings: dict[str, list[bytes]] = {}
        self._first_keys = [network_key]
        self.rotated_at_s: float | None = None
        self.origin = ""
        self.held_at_s: dict[str, float] = {}  # node id -> when it installed the new key
        self.in_use: set[str] = set()
        self.retired: set[str] = set()
        self.in_use_at_s: dict[str, float] = {}  # node id -> when it sealed with the new key
        self.old_dropped_at_s: dict[str, float] = {}  # node id -> when it removed the old key
        self.stages_at_s: dict[str, float] = {}  # install, use, remove -> when the operator sent it
        self._cores: dict[str, NetKeyCore] = {}
        fleet.hosted = self._hosted

    def _hosted(self, node_id: str, gossip: GossipNode) -> Sequence[HostedCore]:
        keys = self.keyrings.setdefault(node_id, list(self._first_keys))
        key = self.fleet.signing_keys[node_id]
        # Its own RNG, seeded apart from the fleet's streams (a string seed hashes the same everywhere).
        rng = random.Random(f"{NETKEY_RNG_DOMAIN}/{self.fleet.seed}/{node_id}")
        core = NetKeyCore(
            node_id,
            rng,
            node_key=key,
            peers=GossipPeers(gossip),
            keys=list(keys),
            now=self.fleet.now,
            config=self.config,
        )
        self._cores[node_id] = core
        return [core]

    # -- the rotation --------------------------------------------------------------------

    def rotate_at(self, at_s: float, rng: random.Random, record: Record) -> None:
        """At at_s, a random live reachable node takes the key and publishes the record."""

        def rotate(now: float) -> None:
            fleet = self.fleet
            candidates = [
                i
                for i in fleet.live()
                if not fleet.slots[i].stalled and fleet.slots[i].region != self.offline_region
            ]
            origin = rng.choice(candidates)
            self.origin = fleet.slots[origin].node_id
            self.rotated_at_s = now

            def accept(core: Any, t: float) -> None:
                keys = self._cores[self.origin]
                problem = core.command(t, lambda at: keys.rotate(at, self.new_key, record))
                assert problem is None, problem
                core.publish_record(t, record)

            fleet.engine.call_node_at(now, origin, accept)

        self.fleet.engine.call_at(at_s, rotate)

    def stages_at(self, rng: random.Random, records: Sequence[Record]) -> None:
        """install, use, remove at ROTATE_AT_S, USE_AT_S, REMOVE_AT_S, each at a random reachable node
        that can follow it (the install's holds the old key, the others hold the new one)."""
        for name, at_s, record in zip(
            ("install", "use", "remove"), (ROTATE_AT_S, USE_AT_S, REMOVE_AT_S), records, strict=True
        ):
            self.fleet.engine.call_at(at_s, self._stage(name, rng, record))

    def _stage(self, name: str, rng: random.Random, record: Record) -> Callable[[float], None]:
        def stage(now: float) -> None:
            fleet = self.fleet
            candidates = [
                i
                for i in fleet.live()
                if not fleet.slots[i].stalled
                and fleet.slots[i].region != self.offline_region
                and (name == "install" or fleet.slots[i].node_id in self.held_at_s)
            ]
            if not candidates:
                return  # nobody holds the new key: the operator's `keys list` would say so
            origin = rng.choice(candidates)
            node_id = fleet.slots[origin].node_id
            self.stages_at_s[name] = now
            if name == "install":
                self.origin, self.rotated_at_s = node_id, now
            key = self.new_key if name == "install" else None

            def accept(core: Any, t: float) -> None:
                keys = self._cores[node_id]
                problem = core.command(t, lambda at: keys.apply(at, record, key))
                assert problem is None, problem
                core.publish_record(t, record)

            fleet.engine.call_node_at(now, origin, accept)

        return stage

    # -- the cores' events -------------------------------------------------------------------

    def on_event(self, now: float, slot: NodeSlot, event: Event) -> None:
        t = type(event)
        if t is NetworkKeyInstalled:
            assert isinstance(event, NetworkKeyInstalled)
            ring = self.keyrings.setdefault(slot.node_id, [])
            if event.key not in ring:
                ring.append(event.key)
            if event.key_id == self.new_id:
                self.held_at_s.setdefault(slot.node_id, now)
        elif t is NetworkKeyInUse:
            assert isinstance(event, NetworkKeyInUse)
            ring = self.keyrings.setdefault(slot.node_id, [])
            ring.remove(event.key)
            ring.insert(0, event.key)
            if event.key_id == self.new_id:
                self.in_use.add(slot.node_id)
                self.in_use_at_s.setdefault(slot.node_id, now)
        elif t is NetworkKeysRetired:
            assert isinstance(event, NetworkKeysRetired)
            ring = self.keyrings.setdefault(slot.node_id, [])
            for key in event.keys:
                if key in ring:
                    ring.remove(key)
            self.retired.add(slot.node_id)
            if self.old_key in event.keys:
                self.old_dropped_at_s.setdefault(slot.node_id, now)

    # -- the end ---------------------------------------------------------------------------------

    def _members(self, offline: bool) -> list[str]:
        fleet = self.fleet
        return [
            fleet.slots[i].node_id
            for i in fleet.live()
            if (fleet.slots[i].region == self.offline_region) == offline
        ]

    def check_end(self, invariants: Invariants, now: float) -> None:
        invariants.check("every_member_holds_the_new_key")
        members = self._members(False)
        if now >= OFFLINE_UNTIL_S + OFFLINE_SETTLE_S:
            members += self._members(True)
        missing = [n for n in members if n not in self.held_at_s]
        for node_id in missing[:10]:
            invariants.violation(now, "every_member_holds_the_new_key", f"{node_id} never got the new key")
        if "remove" not in self.stages_at_s:
            return
        invariants.check("every_member_holds_only_the_new_key")
        wrong = [n for n in members if self.keyrings.get(n) != [self.new_key]]
        for node_id in wrong[:10]:
            ring = [network_key_id(k) for k in self.keyrings.get(node_id, [])]
            invariants.violation(
                now, "every_member_holds_only_the_new_key", f"{node_id} holds {ring} (primary first)"
            )

    def report(self) -> dict[str, Any]:
        rotated = self.rotated_at_s
        if rotated is None:
            return {"rotated_at_s": None}
        reachable = self._members(False)
        hold = [self.held_at_s[n] - rotated if n in self.held_at_s else math.inf for n in reachable]
        held_times = [self.held_at_s[n] for n in reachable if n in self.held_at_s]
        counters: dict[str, int] = {}
        for core in self._cores.values():
            for k, v in core.counters.items():
                counters[k] = counters.get(k, 0) + v
        live = reachable + self._members(True)
        messages = counters.get("requests_sent", 0) + counters.get("offers_sent", 0)
        out: dict[str, Any] = {
            "rotated_at_s": rotated,
            "origin": self.origin,
            "members": len(reachable),
            "hold_s": stats(hold),
            "last_member_at_s": round(max(held_times), TIME_DIGITS) if len(held_times) == len(hold) else None,
            "missing_at_end": sum(1 for n in live if n not in self.held_at_s),
            "sealing_with_new_key": sum(1 for n in live if n in self.in_use),
            "old_keys_dropped": sum(1 for n in live if n in self.retired),
            "messages": messages,
            "bytes": counters.get("sent_bytes", 0),
            "bytes_per_member": round(counters.get("sent_bytes", 0) / max(1, len(live)), 1),
            "requests": counters.get("requests_sent", 0),
            "offers": counters.get("offers_sent", 0),
            "duplicate_offers": counters.get("offer_duplicate", 0),
            "drops": {k: v for k, v in sorted(counters.items()) if k.startswith("drop_")},
            "offline_region": None,
        }
        if self.stages_at_s:
            use_at, remove_at = self.stages_at_s.get("use"), self.stages_at_s.get("remove")
            out["staged"] = {
                "stages_at_s": dict(self.stages_at_s),
                "sealing_after_use_s": stats(
                    [self.in_use_at_s.get(n, math.inf) - use_at for n in reachable]
                    if use_at is not None
                    else []
                ),
                "old_dropped_after_remove_s": stats(
                    [self.old_dropped_at_s.get(n, math.inf) - remove_at for n in reachable]
                    if remove_at is not None
                    else []
                ),
                "holding_only_the_new_key": sum(1 for n in live if self.keyrings.get(n) == [self.new_key]),
            }
        if self.offline_region is not None:
            away = self._members(True)
            after = [self.held_at_s[n] - OFFLINE_UNTIL_S if n in self.held_at_s else math.inf for n in away]
            out["offline_region"] = {
                "region": self.fleet.region_names[self.offline_region],
                "offline_s": [OFFLINE_FROM_S, OFFLINE_UNTIL_S],
                "members": len(away),
                "hold_after_heal_s": stats(after),
                "held_before_heal": sum(1 for n in away if self.held_at_s.get(n, math.inf) < OFFLINE_UNTIL_S),
            }
        return out
