"""Scenarios: which faults a run injects, when, and what it measures.

Every fault parameter is drawn from the run's fault RNG (derived from the
seed), so one seed reproduces the whole schedule. Faults start at
FAULT_AT_S, after a warm start has had time to settle, and stop early enough
(QUIET_TAIL_S before the end) for a liveness phase, where the duration allows.

- steady: no faults; one fleet-wide broadcast at FAULT_AT_S from a random node.
- crash: 1% of the nodes (at least one) crash at FAULT_AT_S (plus the broadcast),
  their hosts lost with them (power, network): nothing answers at their addresses.
- process-crash: as crash, but only the processes die (an OOM kill, a crash, an
  upgrade) on hosts that stay up and refuse connections to their ports.
- loss: steady, with loss on every link (default 0.10).
- stall: 1% of the nodes (at least one) stall for 1-10 s at random times, over and
  over (SIGSTOP-like freezes: their hosts still complete handshakes).
- partition: at FAULT_AT_S the fleet splits in two halves, across and inside
  regions (half of every region on each side), for PARTITION_S; then it heals.
- churn: nodes leave gracefully while new or restarted ones join, continuously.
- desired: no faults; at FAULT_AT_S a random node accepts an operator's signed
  `desired` record (version 1), and at DESIRED_UPDATE_AT_S (if the run lasts
  that long) another random node accepts its update (version 2). Each is the
  record `murmur deploy` signs for a real manifest (desired_deployment); the
  operator key is derived from the seed (operator_key).
- inventory: steady (the same broadcast), but every node has its own key and
  publishes a signed `inventory` record (scope its region; inference/inventory.py's
  schema and payload, as a device's agent publishes it) at a random time in
  the first INVENTORY_FIRST_S, republishes it every INVENTORY_REFRESH_S, and
  10% of the nodes publish once more on a meaningful change at a random time.
- admission: every node has its own key and joined with an invite (admission
  mode, docs/trust.md). Between FAULT_AT_S and FAULT_AT_S + ADMISSION_WINDOW_S,
  0.5% of the fleet joins as new devices with a valid invite and as many (at
  least 3) try to join with a forged, expired or other-cluster invite; at
  REVOKE_AT_S the operator revokes 0.2% of the nodes (at least one) at a random
  node. sim/admission.py measures who got in, who never did, who was thrown out.
- cold-start: no warm start. Every node starts cold (no restored view) within
  COLD_START_WINDOW_S, seeded only at COLD_START_SEEDS nodes of other regions
  (drawn from the seed), as a site after a power cut behind a switch that drops
  multicast; no faults after. Every region must end as one pool
  (sim/coldstart.py measures how long that takes and the islands left).
- leader-crash: at FAULT_AT_S the node that leads each region (holding a lease)
  crashes, its host lost with it; sim/leaders.py measures how long until another
  node of that region holds a lease (leaders.election_s).
- key-rotation: every node has its own key (admission mode) and hosts the
  network-key core; at keyrotation.ROTATE_AT_S the operator rotates the network
  key at a random node; with 3 regions or more the last region is offline
  (partitioned from the others) from OFFLINE_FROM_S to OFFLINE_UNTIL_S.
  sim/keyrotation.py measures how long until every live member holds the key.
- key-rotation-staged: the same fleet and offline region; the operator changes
  the key in stages instead (install at ROTATE_AT_S, use at USE_AT_S, remove the
  old key at REMOVE_AT_S, as `murmur keys install|use|remove` do).
- swarm: a random fault schedule drawn from the seed (sim/swarm.py): crashes and
  restarts, partitions, loss bursts, stalls, leader crashes; `murmur sim --swarm`
  runs it over many seeds.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import nacl.signing

from gossip.kinds import INVENTORY_KIND, REVOCATION_KIND
from gossip.records import Record, sign_record
from inference.desired import sign_deployment
from inference.inventory import INVENTORY_REFRESH_S, Inventory, encode, inventory_scope
from inference.manifest import Deployment, manifest_from_doc
from sim import faults, swarm
from sim.admission import INTRUDER_KINDS
from sim.catalog import SCENARIOS
from sim.fleet import Fleet
from sim.keyrotation import OFFLINE_FROM_S, OFFLINE_MIN_REGIONS, OFFLINE_UNTIL_S

DEFAULT_LOSS = {"loss": 0.10}
FAULT_AT_S = 10.0
PARTITION_S = 30.0
QUIET_TAIL_S = 15.0
FAULTY_FRACTION = 0.01
STALL_S = (1.0, 10.0)
STALL_GAP_S = (2.0, 10.0)
# Churn: one leave and one join every 1 / rate seconds on average.
CHURN_RATE_PER_NODE_S = 0.001
CHURN_RATE_MIN_PER_S = 0.2
# Desired state: the operator's deployment, and when its update (version 2) is published.
DESIRED_NAME = "sim-deployment"
DESIRED_MODEL = "sim-model"
DESIRED_ARTIFACT_SIZE_BYTES = 4 << 20
DESIRED_UPDATE_AT_S = 20.0
OPERATOR_KEY_DOMAIN = b"murmur-sim-operator"
# Inventory (inference/inventory.py's rule): first record within INVENTORY_FIRST_S, then every
# INVENTORY_REFRESH_S; INVENTORY_CHANGE_FRACTION of the nodes also publish on a meaningful change.
INVENTORY_FIRST_S = 5.0
INVENTORY_CHANGE_FRACTION = 0.10
# The freshness invariant: every published version is held by every live region peer
# (or superseded there by a newer one) within two refresh periods.
INVENTORY_FRESH_BOUND_S = 2 * INVENTORY_REFRESH_S
GIB = 1 << 30
# Admission: newcomers arrive over this window after FAULT_AT_S; revocations at REVOKE_AT_S.
ADMISSION_WINDOW_S = 10.0
ADMISSION_JOINER_FRACTION = 0.005
ADMISSION_REVOKED_FRACTION = 0.002
REVOKE_AT_S = FAULT_AT_S + 15.0
# Cold start: every node joins within this window, through this many seeds of other regions.
COLD_START_WINDOW_S = 1.0
COLD_START_SEEDS = 2


@dataclass(frozen=True, slots=True)
class Plan:
    """What a scheduled scenario will do."""

    name: str
    fault_at_s: float
    # Faults are over from here on (the liveness phase).
    quiet_since_s: float
    broadcast_at_s: float | None
    heal_at_s: float | None
    lossy: bool
    # Signed records a random live node publishes, with when: (time, record).
    records: tuple[tuple[float, Record], ...] = ()
    # Records each node publishes itself, in time order: (time, node index, record, urgent).
    # urgent: a meaningful change, not a periodic refresh (publish_record's keyword).
    own_records: tuple[tuple[float, int, Record, bool], ...] = ()


def operator_key(seed: int) -> nacl.signing.SigningKey:
    """The simulated operator's Ed25519 key, derived from the seed (no RNG draw)."""
    return nacl.signing.SigningKey(hashlib.sha256(OPERATOR_KEY_DOMAIN + str(seed).encode()).digest())


def desired_deployment(version: int) -> Deployment:
    """Version `version` of the simulated deployment: one replica per region of a model
    whose every version is a new build (a new artifact), validated as the API validates
    an operator's manifest."""
    artifact_sha256 = hashlib.sha256(f"{DESIRED_MODEL}/{version}".encode()).hexdigest()
    return manifest_from_doc(
        {
            "name": DESIRED_NAME,
            "model": {"name": DESIRED_MODEL, "version": str(version)},
            "artifact": {"sha256": artifact_sha256, "size_bytes": DESIRED_ARTIFACT_SIZE_BYTES},
            "replicas": 1,
        }
    )


def desired_record(key: nacl.signing.SigningKey, version: int) -> Record:
    """Record version `version` of the simulated deployment, as `murmur deploy` signs it."""
    return sign_deployment(key, desired_deployment(version), version)


def _inventories(
    fleet: Fleet, duration_s: float, rng: random.Random
) -> list[tuple[float, int, Record, bool]]:
    """Every node's inventory records over the run, signed with its key, in time order.

    Drawn in node order from rng: the device (cores, memory, disk, arch, a label),
    the first publish time, whether (and when) it changes meaningfully; each
    refresh moves load and free memory a little, a change moves free memory by
    a quarter of the total and load by 1.5 (inference/inventory.should_publish's thresholds).
    """
    n = len(fleet.slots)
    changers = set(rng.sample(range(n), round(INVENTORY_CHANGE_FRACTION * n)))
    change_end_s = max(INVENTORY_FIRST_S, duration_s - QUIET_TAIL_S)
    out: list[tuple[float, int, Record, bool]] = []
    for idx in range(n):
        slot = fleet.slots[idx]
        key = fleet.signing_keys[slot.node_id]
        region = fleet.region_names[slot.region]
        cpus = rng.choice((2, 4, 8, 16))
        total = rng.choice((4, 8, 16, 32)) * GIB
        disk = rng.randrange(20 * GIB, 500 * GIB)
        arch = rng.choice(("x86_64", "aarch64"))
        site = f"site-{rng.randrange(100):02d}"
        t0 = rng.uniform(0.0, INVENTORY_FIRST_S)
        times: list[tuple[float, bool]] = []
        while t0 + len(times) * INVENTORY_REFRESH_S < duration_s:
            times.append((t0 + len(times) * INVENTORY_REFRESH_S, False))
        if idx in changers:
            times.append((rng.uniform(t0, change_end_s), True))
        times.sort()
        load = rng.uniform(0.0, cpus / 4)
        avail = rng.uniform(0.4, 0.8) * total
        for version, (at_s, change) in enumerate(times, start=1):
            if change:
                avail = max(0.05 * total, avail - 0.25 * total)
                load += 1.5
            else:
                avail = min(0.95 * total, max(0.05 * total, avail + rng.uniform(-0.02, 0.02) * total))
                load = max(0.0, load + rng.uniform(-0.3, 0.3))
            disk = max(0, disk - rng.randrange(0, 64 << 20))
            inv = Inventory(
                cpu_count=cpus,
                load_1m=round(load, 2),
                cpu_percent=round(min(100.0, 100.0 * load / cpus), 1),
                memory_total_bytes=total,
                memory_available_bytes=int(avail),
                disk_free_bytes=disk,
                accelerators=("CPUExecutionProvider",),
                os="linux",
                arch=arch,
                python="3.11.9",
                labels={"site": site},
                region=region,
            )
            scope = inventory_scope(region)
            record = sign_record(key, INVENTORY_KIND, slot.node_id, version, scope, encode(inv))
            out.append((at_s, idx, record, change))
    out.sort(key=lambda e: (e[0], e[1]))
    return out


def offline_region(region_count: int) -> int | None:
    """The key-rotation scenario's offline region: the last one, with 3 regions or more."""
    return region_count - 1 if region_count >= OFFLINE_MIN_REGIONS else None


def default_loss(scenario: str) -> float:
    """The loss a scenario uses when --loss is not given."""
    return DEFAULT_LOSS.get(scenario, 0.0)


def schedule(
    fleet: Fleet,
    scenario: str,
    duration_s: float,
    rng: random.Random,
    loss: float,
    operator: nacl.signing.SigningKey | None = None,
) -> Plan:
    """Schedule a scenario's faults on the fleet's engine; returns its plan.

    `operator` signs the desired scenario's records (required for it).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
    n = len(fleet.slots)
    faulty = max(1, round(FAULTY_FRACTION * n))
    faults_end_s = max(FAULT_AT_S + 10.0, duration_s - QUIET_TAIL_S)
    lossy = loss > 0.0
    if scenario in ("steady", "loss"):
        return Plan(scenario, FAULT_AT_S, 0.0, FAULT_AT_S, None, lossy)
    if scenario == "cold-start":
        # The start itself is the fault (run.py starts the fleet cold); quiet once all joined.
        return Plan(scenario, FAULT_AT_S, COLD_START_WINDOW_S, None, None, lossy)
    if scenario == "inventory":
        if not fleet.node_keys:
            raise ValueError("the inventory scenario needs a fleet with node keys")
        own = tuple(_inventories(fleet, duration_s, rng))
        return Plan(scenario, FAULT_AT_S, 0.0, FAULT_AT_S, None, lossy, own_records=own)
    if scenario == "admission":
        if operator is None or fleet.watch is None or not fleet.node_keys:
            raise ValueError("the admission scenario needs a keyed fleet, its watch and an operator key")
        return _admission(fleet, duration_s, rng, lossy, operator)
    if scenario in ("key-rotation", "key-rotation-staged"):
        if not fleet.node_keys or fleet.hosted is None:
            raise ValueError("the key-rotation scenario needs a keyed fleet hosting the key core")
        offline = offline_region(fleet.region_count)
        if offline is None:
            return Plan(scenario, FAULT_AT_S, 0.0, None, None, lossy)
        away = fleet.by_region[offline]
        rest = [i for r in range(fleet.region_count) if r != offline for i in fleet.by_region[r]]
        faults.partition_at(fleet, OFFLINE_FROM_S, [sorted(rest), sorted(away)], OFFLINE_UNTIL_S)
        return Plan(scenario, FAULT_AT_S, OFFLINE_UNTIL_S, None, OFFLINE_UNTIL_S, lossy)
    if scenario == "desired":
        if operator is None:
            raise ValueError("the desired scenario needs an operator key")
        records = [(FAULT_AT_S, desired_record(operator, 1))]
        if duration_s > DESIRED_UPDATE_AT_S:
            records.append((DESIRED_UPDATE_AT_S, desired_record(operator, 2)))
        return Plan(scenario, FAULT_AT_S, 0.0, None, None, lossy, tuple(records))
    if scenario in ("crash", "process-crash"):
        host_lost = scenario == "crash"
        for idx in sorted(rng.sample(range(n), faulty)):
            faults.crash_at(fleet, FAULT_AT_S, idx, host_lost=host_lost)
        return Plan(scenario, FAULT_AT_S, FAULT_AT_S, FAULT_AT_S, None, lossy)
    if scenario == "swarm":
        quiet_s, heal_s = swarm.schedule(fleet, FAULT_AT_S, faults_end_s, rng)
        return Plan(scenario, FAULT_AT_S, quiet_s, None, heal_s, True)
    if scenario == "leader-crash":

        def crash_leaders(now: float) -> None:
            for idx in fleet.leaders(now):
                fleet.fault_counts["crashes"] += 1
                fleet.crash(idx, host_lost=True)

        fleet.engine.call_at(FAULT_AT_S, crash_leaders)
        return Plan(scenario, FAULT_AT_S, FAULT_AT_S, FAULT_AT_S, None, lossy)
    if scenario == "stall":
        last_end_s = FAULT_AT_S
        for idx in sorted(rng.sample(range(n), faulty)):
            t = FAULT_AT_S + rng.uniform(0.0, STALL_GAP_S[1])
            while True:
                d = rng.uniform(*STALL_S)
                if t + d > faults_end_s:
                    break
                faults.stall_at(fleet, t, idx, d)
                last_end_s = max(last_end_s, t + d)
                t += d + rng.uniform(*STALL_GAP_S)
        return Plan(scenario, FAULT_AT_S, last_end_s, FAULT_AT_S, None, True)
    if scenario == "partition":
        sides: list[list[int]] = [[], []]
        for region in range(fleet.region_count):
            members = list(fleet.by_region[region])
            rng.shuffle(members)
            half = len(members) // 2
            # Alternate which side gets the odd node so the halves stay even overall.
            first = region % 2
            sides[first].extend(members[:half])
            sides[1 - first].extend(members[half:])
        heal_at_s = FAULT_AT_S + PARTITION_S
        faults.partition_at(fleet, FAULT_AT_S, [sorted(s) for s in sides], heal_at_s)
        return Plan(scenario, FAULT_AT_S, heal_at_s, None, heal_at_s, lossy)
    return _churn(fleet, faults_end_s, rng, lossy)


def _churn(fleet: Fleet, faults_end_s: float, rng: random.Random, lossy: bool) -> Plan:
    """One graceful leave and one join (a reboot of a node that left, or a new device) at a time."""
    n = len(fleet.slots)
    rate_per_s = max(CHURN_RATE_MIN_PER_S, CHURN_RATE_PER_NODE_S * n)
    # Every join (and a restart's linger) completes before the quiet tail.
    churn_end_s = faults_end_s - faults.LEAVE_LINGER_S
    # Up nodes (by index, in order) and when each may leave; stopped nodes and when they stopped.
    up_from_s: dict[int, float] = dict.fromkeys(range(n), 0.0)
    down_since_s: dict[int, float] = {}
    region_sizes = [len(members) for members in fleet.by_region]
    t = FAULT_AT_S + rng.expovariate(rate_per_s)
    last_s = FAULT_AT_S
    while t < churn_end_s:
        # Leave: any node up for a while, but never the last two of its region.
        candidates = [
            i for i, since in up_from_s.items() if since <= t and region_sizes[fleet.slots[i].region] > 2
        ]
        if candidates:
            idx = rng.choice(candidates)
            del up_from_s[idx]
            region_sizes[fleet.slots[idx].region] -= 1
            faults.leave_at(fleet, t, idx)
            down_since_s[idx] = t + faults.LEAVE_LINGER_S
        # Join: half the time a node that left comes back (a reboot), otherwise a new device.
        t_join = t + rng.uniform(0.0, min(1.0 / rate_per_s, churn_end_s - t))
        ready = [i for i, since in down_since_s.items() if since < t_join]
        if ready and rng.random() < 0.5:
            back = rng.choice(ready)
            del down_since_s[back]
            up_from_s[back] = t_join + QUIET_TAIL_S
            region_sizes[fleet.slots[back].region] += 1
            faults.restart_at(fleet, t_join, back, new_addr=rng.random() < 0.5)
        else:
            region = rng.randrange(fleet.region_count)
            region_sizes[region] += 1
            faults.join_new_at(fleet, t_join, region)
        last_s = max(last_s, t_join)
        t += rng.expovariate(rate_per_s)
    return Plan("churn", FAULT_AT_S, last_s, None, None, lossy)


def _admission(
    fleet: Fleet, duration_s: float, rng: random.Random, lossy: bool, operator: nacl.signing.SigningKey
) -> Plan:
    """Invited joiners, intruders, and revocations (see the module docstring)."""
    watch = fleet.watch
    assert watch is not None
    n = len(fleet.slots)
    newcomers = max(3, round(ADMISSION_JOINER_FRACTION * n))
    last_s = FAULT_AT_S
    for k in range(2 * newcomers):
        at_s = FAULT_AT_S + rng.uniform(0.0, ADMISSION_WINDOW_S)
        region = rng.randrange(fleet.region_count)
        last_s = max(last_s, at_s)
        if k % 2 == 0:
            faults.join_new_at(fleet, at_s, region, then=watch.joiner)
        else:
            kind = INTRUDER_KINDS[(k // 2) % len(INTRUDER_KINDS)]

            def noted(node_id: str, _now: float, kind: str = kind) -> None:
                watch.intruder(node_id, kind)

            faults.join_new_at(fleet, at_s, region, intruder=kind, then=noted)
    records: list[tuple[float, Record]] = []
    if duration_s > REVOKE_AT_S:
        for idx in sorted(rng.sample(range(n), max(1, round(ADMISSION_REVOKED_FRACTION * n)))):
            node_id = fleet.slots[idx].node_id

            def revoking(now: float, node_id: str = node_id) -> None:
                fleet.revoked_ids.add(node_id)
                watch.revoking(node_id, now)

            fleet.engine.call_at(REVOKE_AT_S, revoking)
            records.append(
                (REVOKE_AT_S, sign_record(operator, REVOCATION_KIND, node_id, 1, "fleet", b"sim: revoked"))
            )
        last_s = REVOKE_AT_S
    return Plan("admission", FAULT_AT_S, last_s, None, None, lossy, tuple(records))
