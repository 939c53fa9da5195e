"""One simulation run: build the fleet from the seed, run the scenario, return the report."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from gossip.config import LOCAL, WAN
from gossip.config import profile as named_profile
from gossip.envelope import Keyring
from gossip.records import Record
from gossip.trust import StaticTrust
from inference.desired import sign_deployment
from sim import scenarios
from sim.admission import AdmissionWatch
from sim.catalog import SCENARIOS
from sim.coldstart import ColdStartWatch
from sim.fleet import SIM_CLUSTER_ID, Fleet, sim_invite
from sim.invariants import Invariants
from sim.inventory import InventoryWatch
from sim.keyrotation import ROTATE_AT_S, KeyRotationWatch, rotation_record, staged_records
from sim.leaders import LeaderWatch
from sim.metrics import Metrics
from sim.network import Network
from sim.placewatch import PlacementWatch
from sim.placing import deployment_set
from sim.report import TIME_DIGITS
from sim.timeline import Timeline

# Nodes join their seeds staggered over this window after the warm start.
JOIN_STAGGER_S = 1.5
# How often a convergence watch polls the (cached) views.
CONVERGENCE_POLL_S = 0.25
BROADCAST_PAYLOAD_BYTES = 32
# Scenarios whose nodes have node keys and admissions, as every real agent does:
# signed alive claims, pairwise frames, admission checks. The others model
# membership alone, and run faster.
KEYED_SCENARIOS = ("inventory", "admission", "cold-start", "key-rotation", "key-rotation-staged")
GC_GEN0_THRESHOLD = 50_000
# The deployment set every scenario places: its operator-signed desired records are accepted
# by a random live node (drawn from an RNG of its own) at this time.
DEPLOY_AT_S = 0.5
DEPLOY_RNG_DOMAIN = "murmur-sim-deploy"
# The key-rotation scenario's new network key: derived from the seed apart from the RNGs.
NEW_NETWORK_KEY_DOMAIN = b"murmur-sim-new-network-key"


def reproduce_command(
    nodes: int,
    regions: int,
    scenario: str,
    seed: int,
    duration_s: float,
    loss: float,
    profile: str,
    encrypt: bool,
) -> str:
    """The command line that reruns exactly this simulation."""
    cmd = (
        f"python -m sim --nodes {nodes} --regions {regions} --scenario {scenario} "
        f"--seed {seed} --duration {duration_s:g} --loss {loss:g} --profile {profile}"
    )
    return cmd + (" --encrypt" if encrypt else "")


def _peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _watch_convergence(
    fleet: Fleet,
    metrics: Metrics,
    start_s: float,
    end_s: float,
    pools: str,
    done: dict[str, float | None],
    key: str,
) -> None:
    """From start_s, poll until the pools converge; store when they did in done[key].

    The time stored is that of the last change towards convergence before the
    poll that found it, so the poll period does not blur the figure.
    """

    def poll(now: float) -> None:
        if metrics.converged(pools):
            done[key] = max(metrics.settled_at_s(pools), start_s)
            return
        if now + CONVERGENCE_POLL_S <= end_s:
            fleet.engine.call_at(now + CONVERGENCE_POLL_S, poll)

    fleet.engine.call_at(start_s, poll)


@contextlib.contextmanager
def _lean_gc() -> Iterator[None]:
    """Keep the cyclic GC off the long-lived fleet while the clock runs.

    Almost everything a running simulation allocates is short-lived and freed by
    reference counting; the fleet's cores live until the end. Freezing them and
    collecting the young generation less often saves the collector from walking
    the whole fleet over and over. The previous settings come back afterwards.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, thresholds[1], thresholds[2])
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _joiner(seeds: list[str]) -> Callable[[Any, float], None]:
    def join(core: Any, now: float) -> None:
        core.join(now, seeds)

    return join


def _publisher(fleet: Fleet, metrics: Metrics, rng: random.Random, record: Record) -> Callable[[float], None]:
    """At its time, a random live, unstalled node accepts the record (an operator command)."""

    def publish(now: float) -> None:
        candidates = [i for i in fleet.live() if not fleet.slots[i].stalled]
        origin = rng.choice(candidates)

        def accept(core: Any, t: float) -> None:
            metrics.start_record(t, origin, record, core.publish_record(t, record))

        fleet.engine.call_node_at(now, origin, accept)

    return publish


def _deployer(fleet: Fleet, rng: random.Random, record: Record) -> Callable[[float], None]:
    """At its time, a random live, unstalled node accepts an operator's desired record (unmeasured)."""

    def publish(now: float) -> None:
        origin = rng.choice([i for i in fleet.live() if not fleet.slots[i].stalled])
        fleet.engine.call_node_at(now, origin, lambda core, t: core.publish_record(t, record))

    return publish


def _own_publisher(
    inventory: InventoryWatch | None, idx: int, record: Record, urgent: bool
) -> Callable[[Any, float], None]:
    """Node idx publishes a record of its own (its inventory; urgent: a meaningful change)."""

    def publish(core: Any, t: float) -> None:
        accepted = core.publish_record(t, record, urgent=urgent)
        if inventory is not None:
            inventory.on_published(t, idx, record, accepted, urgent=urgent)

    return publish


def run_simulation(
    nodes: int,
    regions: int,
    scenario: str,
    seed: int,
    duration_s: float,
    loss: float | None = None,
    profile: str = "lan",
    encrypt: bool = False,
    series_out: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Simulate `nodes` real gossip cores in `regions` under `scenario`; return the JSON report.

    `loss` None takes the scenario's default (0.10 for "loss", else 0). The same
    arguments give the same report byte for byte, except wall_s and peak_rss_bytes.
    With `series_out`, the run also samples its time series (sim/timeline.py) and
    puts them there, for the pictures; the report stays the same.
    """
    wall_start = time.perf_counter()
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
    if nodes < 1 or regions < 1:
        raise ValueError(f"need at least one node and one region, got --nodes {nodes} --regions {regions}")
    if duration_s <= scenarios.FAULT_AT_S:
        raise ValueError(
            f"--duration {duration_s:g} is too short: faults and measurements start at "
            f"t={scenarios.FAULT_AT_S:g} s after the warm start; use at least 20"
        )
    if scenario == "cold-start" and regions < 2:
        raise ValueError("the cold-start scenario seeds nodes only in other regions: use --regions 2 or more")
    if loss is None:
        loss = scenarios.default_loss(scenario)
    region_config = named_profile(profile)
    fleet_config = LOCAL if profile == "local" else WAN

    # Every random choice comes from one seed, through child RNGs drawn in a fixed order.
    master = random.Random(seed)
    network_rng = random.Random(master.getrandbits(64))
    node_rng = random.Random(master.getrandbits(64))
    fault_rng = random.Random(master.getrandbits(64))
    nonce_rng = random.Random(master.getrandbits(64))
    network_key = master.randbytes(32)
    # The operator key is derived from the seed apart from the RNGs (see scenarios.operator_key).
    operator = scenarios.operator_key(seed)

    network = Network(network_rng, regions, loss=loss)
    fleet = Fleet(
        seed=seed,
        region_count=regions,
        network=network,
        region_config=region_config,
        fleet_config=fleet_config,
        rng=node_rng,
        sealer=Keyring([network_key]) if encrypt else None,
        nonce_rng=nonce_rng,
        trust=StaticTrust(operators=[bytes(operator.verify_key)], cluster_id=SIM_CLUSTER_ID),
        invite=sim_invite(operator, seed) if scenario in KEYED_SCENARIOS else None,
    )
    engine = fleet.engine
    # The fleet's observers, in the order they hear each event (after the fleet's own views).
    # Under loss (or stalls) a member is briefly suspect now and then: that still counts as seen.
    metrics = fleet.observe(Metrics(fleet, tolerate_suspect=loss > 0.0 or scenario == "stall"))
    invariants = fleet.observe(
        Invariants(
            fleet, seed, reproduce_command(nodes, regions, scenario, seed, duration_s, loss, profile, encrypt)
        )
    )
    leaders = fleet.observe(LeaderWatch(fleet, invariants, start_s=scenarios.FAULT_AT_S))
    # The inventory scenario's nodes publish their own inventory records (sim/scenarios.py).
    deployments = deployment_set()
    placing = fleet.observe(PlacementWatch(fleet, invariants, deployments, publish=scenario != "inventory"))
    watch = fleet.observe(AdmissionWatch(fleet)) if scenario == "admission" else None
    fleet.watch = watch
    inventory = fleet.observe(InventoryWatch(fleet)) if scenario == "inventory" else None
    # Only for the pictures: a run without them does no sampling at all.
    timeline = (
        fleet.observe(Timeline(fleet, deployments, end_s=duration_s)) if series_out is not None else None
    )
    rotation: KeyRotationWatch | None = None
    if scenario in ("key-rotation", "key-rotation-staged"):
        new_key = hashlib.sha256(NEW_NETWORK_KEY_DOMAIN + str(seed).encode()).digest()
        rotation = fleet.observe(
            KeyRotationWatch(fleet, network_key, new_key, offline_region=scenarios.offline_region(regions))
        )
    cold: ColdStartWatch | None = None
    if scenario == "cold-start":
        cold = fleet.observe(
            ColdStartWatch(
                fleet,
                tolerate_suspect=loss > 0.0,
                seeds_per_node=scenarios.COLD_START_SEEDS,
                window_s=scenarios.COLD_START_WINDOW_S,
            )
        )
        # Cold start: nobody knows anybody; every node joins within a small window through
        # seeds in other regions only, and must find its own region by itself.
        fleet.cold_start(nodes)
        for idx in range(nodes):
            seeds = fleet.seeds_elsewhere(idx, scenarios.COLD_START_SEEDS)
            engine.call_node_at(fault_rng.uniform(0.0, scenarios.COLD_START_WINDOW_S), idx, _joiner(seeds))
        cold.watch(0.0, duration_s, CONVERGENCE_POLL_S)
    else:
        # Warm start: a converged fleet, then every node joins through two seeds, staggered,
        # which is how the gateways find the fleet pool.
        fleet.warm_start(nodes)
        for idx in range(nodes):
            engine.call_node_at(fault_rng.uniform(0.0, JOIN_STAGGER_S), idx, _joiner(fleet.seeds_for(idx)))
    converged: dict[str, float | None] = {"warmup": None, "heal": None, "heal_region": None}
    _watch_convergence(fleet, metrics, 0.0, duration_s, "all", converged, "warmup")

    plan = scenarios.schedule(fleet, scenario, duration_s, fault_rng, loss, operator)
    if rotation is not None and scenario == "key-rotation-staged":
        rotation.stages_at(fault_rng, staged_records(operator, network_key, rotation.new_key))
    elif rotation is not None:
        rotation.rotate_at(ROTATE_AT_S, fault_rng, rotation_record(operator, rotation.new_key))
    engine.call_at(plan.fault_at_s, metrics.start_traffic_window)
    if plan.broadcast_at_s is not None:
        payload = fault_rng.randbytes(BROADCAST_PAYLOAD_BYTES)

        def inject(now: float) -> None:
            # Chosen at the time, among nodes that are up and not stalled (crashes of
            # this instant were scheduled first, so they have happened).
            candidates = [i for i in fleet.live() if not fleet.slots[i].stalled]
            origin = fault_rng.choice(candidates)

            def send(core: Any, t: float) -> None:
                metrics.start_broadcast(t, origin, core.broadcast(t, payload))

            engine.call_node_at(now, origin, send)

        engine.call_at(plan.broadcast_at_s, inject)
    for at_s, record in plan.records:
        engine.call_at(at_s, _publisher(fleet, metrics, fault_rng, record))
    deploy_rng = random.Random(f"{DEPLOY_RNG_DOMAIN}/{seed}")
    if scenario == "crash":
        # 1% of the nodes rarely hold a replica: crash a holder per region too (sim/placewatch.py).
        engine.call_at(plan.fault_at_s, lambda now: placing.crash_holders(now, deploy_rng, host_lost=True))
    for version, deployment in enumerate(deployments, start=1):
        engine.call_at(
            DEPLOY_AT_S, _deployer(fleet, deploy_rng, sign_deployment(operator, deployment, version))
        )
    if inventory is not None:
        inventory.expect(len(plan.own_records), scenarios.INVENTORY_FRESH_BOUND_S)
    for at_s, idx, record, urgent in plan.own_records:
        engine.call_node_at(at_s, idx, _own_publisher(inventory, idx, record, urgent))
    if plan.heal_at_s is not None and plan.heal_at_s < duration_s:
        _watch_convergence(fleet, metrics, plan.heal_at_s, duration_s, "all", converged, "heal")
        _watch_convergence(fleet, metrics, plan.heal_at_s, duration_s, "region", converged, "heal_region")

    with _lean_gc():
        engine.run_until(duration_s)
    invariants.check_end(
        metrics,
        duration_s,
        plan.quiet_since_s,
        lossy=plan.lossy,
        after_split=plan.heal_at_s is not None,
        inventory=inventory,
    )
    if watch is not None:
        watch.check_end(invariants, duration_s)
    if cold is not None:
        cold.check_end(invariants, duration_s)
    if rotation is not None:
        rotation.check_end(invariants, duration_s)

    if timeline is not None and series_out is not None:
        series_out.update(timeline.series(metrics, duration_s))
    heal_at_s = plan.heal_at_s
    heal_done = converged["heal"]
    heal_region_done = converged["heal_region"]
    warm_done = converged["warmup"]
    report: dict[str, Any] = {
        "seed": seed,
        "nodes": nodes,
        "regions": regions,
        "scenario": scenario,
        "profile": profile,
        "sim_s": duration_s,
        "wall_s": round(time.perf_counter() - wall_start, 3),
        "peak_rss_bytes": _peak_rss_bytes(),
        "detection": metrics.detection() if metrics.crashes else None,
        "false_dead": len(metrics.false_dead_pairs),
        "dissemination": metrics.dissemination(region_config.gossip_interval_s),
        "traffic": metrics.traffic(duration_s),
        "partition": (
            {
                "heal_s": round(heal_done - heal_at_s, TIME_DIGITS) if heal_done is not None else None,
                "region_heal_s": (
                    round(heal_region_done - heal_at_s, TIME_DIGITS) if heal_region_done is not None else None
                ),
                "split_s": scenarios.PARTITION_S,
                "dead_pairs": len(metrics.partition_dead_pairs),
                "echo_dead_pairs": len(metrics.echo_dead_pairs),
            }
            if heal_at_s is not None
            else None
        ),
        "invariants": {
            "checked": invariants.checked,
            "violations": invariants.violations,
            "violation_count": invariants.violation_count,
        },
        # After the keys of issue 2: the desired scenario's signed record (issue 3).
        "desired": metrics.desired(region_config.gossip_interval_s),
        "loss": loss,
        "encrypt": encrypt,
        "warmup": {
            "converged_s": round(warm_done, TIME_DIGITS) if warm_done is not None else None,
            "bytes_per_node_s": metrics.warmup_traffic(),
        },
        "faults": dict(fleet.fault_counts),
        "leave_seen_dead": len(metrics.leave_seen_dead_pairs),
        "wire": {
            # The timeline's samples are the pictures' doing, not the run's.
            "events": engine.events_processed - (timeline.polls if timeline is not None else 0),
            "duplicated": engine.duplicated,
            "dropped": dict(engine.drops),
        },
        # After everything else: the inventory scenario's own records (null in other scenarios).
        "inventory": inventory.report(duration_s) if inventory is not None else None,
        # The admission scenario's newcomers, intruders and revocations (null in other scenarios).
        "admission": watch.report() if watch is not None else None,
        # The cold-start scenario's regions, from many one-member pools to one each (null elsewhere).
        "cold_start": cold.report() if cold is not None else None,
        # After everything else: every region's leaders (sim/leaders.py).
        "leaders": leaders.report(duration_s),
        # After everything else: the deployment set's placement (sim/placewatch.py).
        "placement": placing.report(),
    }
    if rotation is not None:
        # Only in its own scenario, so the other scenarios' reports stay as they were.
        report["key_rotation"] = rotation.report()
    return report
