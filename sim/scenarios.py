"""Scenarios: which faults a run injects, when, and what it measures.

Every fault parameter is drawn from the run's fault RNG (derived from the
seed), so one seed reproduces the whole schedule. Faults start at
FAULT_AT_S, after a warm start has had time to settle, and stop early enough
(QUIET_TAIL_S before the end) for a liveness phase, where the duration allows.

- steady: no faults; one fleet-wide broadcast at FAULT_AT_S from a random node.
- crash: 1% of the nodes (at least one) crash at FAULT_AT_S (plus the broadcast).
- loss: steady, with loss on every link (default 0.10).
- stall: 1% of the nodes (at least one) stall for 1-5 s at random times, over and over.
- partition: at FAULT_AT_S the fleet splits in two halves, across and inside
  regions (half of every region on each side), for PARTITION_S; then it heals.
- churn: nodes leave gracefully while new or restarted ones join, continuously.
- desired: no faults; at FAULT_AT_S a random node accepts an operator's signed
  `desired` record (version 1), and at DESIRED_UPDATE_AT_S (if the run lasts
  that long) another random node accepts its update (version 2). The operator
  key is derived from the seed (operator_key).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

import nacl.signing

from gossip.records import Record, sign_record
from sim import faults
from sim.fleet import Fleet

SCENARIOS = ("steady", "crash", "loss", "stall", "partition", "churn", "desired")
DEFAULT_LOSS = {"loss": 0.10}
FAULT_AT_S = 10.0
PARTITION_S = 30.0
QUIET_TAIL_S = 15.0
FAULTY_FRACTION = 0.01
STALL_S = (1.0, 5.0)
STALL_GAP_S = (2.0, 10.0)
# Churn: one leave and one join every 1 / rate seconds on average.
CHURN_RATE_PER_NODE_S = 0.001
CHURN_RATE_MIN_PER_S = 0.2
# Desired state: the operator's record, and when its update (version 2) is published.
DESIRED_KIND = "desired"
DESIRED_KEY = "sim-deployment"
DESIRED_SCOPE = "fleet"
DESIRED_UPDATE_AT_S = 20.0
OPERATOR_KEY_DOMAIN = b"murmur-sim-operator"


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


def operator_key(seed: int) -> nacl.signing.SigningKey:
    """The simulated operator's Ed25519 key, derived from the seed (no RNG draw)."""
    return nacl.signing.SigningKey(hashlib.sha256(OPERATOR_KEY_DOMAIN + str(seed).encode()).digest())


def desired_record(key: nacl.signing.SigningKey, version: int) -> Record:
    """Version `version` of the simulated deployment, signed by the operator."""
    payload = {"model": "sim-model", "model_version": version, "replicas_per_region": 1}
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return sign_record(key, DESIRED_KIND, DESIRED_KEY, version, DESIRED_SCOPE, body)


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
    if scenario == "desired":
        if operator is None:
            raise ValueError("the desired scenario needs an operator key")
        records = [(FAULT_AT_S, desired_record(operator, 1))]
        if duration_s > DESIRED_UPDATE_AT_S:
            records.append((DESIRED_UPDATE_AT_S, desired_record(operator, 2)))
        return Plan(scenario, FAULT_AT_S, 0.0, None, None, lossy, tuple(records))
    if scenario == "crash":
        for idx in sorted(rng.sample(range(n), faulty)):
            faults.crash_at(fleet, FAULT_AT_S, idx)
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
