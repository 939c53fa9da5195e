"""Deterministic fleet simulator running the real gossip cores on a virtual clock.

    python -m sim --nodes 1000 --regions 10 --scenario crash --seed 1 --duration 60 --loss 0.05 --json
    murmur sim ...                       (the same flags; mesh/cli/murmur.py calls sim.cli.register)
    sim.run.run_simulation(nodes, regions, scenario, seed, duration_s, loss=None, profile="lan",
                           encrypt=False) -> dict

Modules, one idea each:

- engine.py: one heap of (time_s, seq, kind, ...) tuples and the driver of every
  node (timers with lazy deletion, datagrams, streams, crash/restart/stall).
- slot.py: a node's driver state (NodeSlot) and the interfaces the engine drives.
- network.py: the seeded network model (LAN/WAN latency, loss, duplication,
  reordering by jitter, partitions).
- fleet.py: real composite nodes (node/core.py) on the engine (built in one place,
  Fleet._build_core); names, addresses, regions, warm start; creates, stops, restarts and stalls nodes
  and splits the network, telling its observers.
- observer.py: the hooks an observer of the fleet may override (Observer); a new
  observer is one `fleet.observe(...)` before the first node exists.
- views.py: what each node sees (pool views rebuilt from its events; what its core
  lists and holds), read by metrics, invariants and the admission watch alike.
- faults.py: crash, restart, stall, leave, join, partition/heal at virtual times.
- scenarios.py: steady, crash, loss, stall, partition, churn, desired, inventory,
  admission, cold-start, drawn from the seed.
- metrics.py, inventory.py, invariants.py, admission.py, coldstart.py (observers),
  report.py: what is measured (the inventory, admission and cold-start scenarios'
  own figures apart), what must hold, the JSON.
- run.py, cli.py: one run (builds the fleet, then registers its observers); the command line.

Imports go one way (an import-linter layers contract in pyproject.toml): slot,
network, report < engine < observer < views < fleet < metrics, inventory <
invariants < admission, coldstart < faults < scenarios < run < cli.

Choices, written down (the report's keys follow issue 2):

- Determinism: one random.Random(seed) derives, in a fixed order, the network's,
  the nodes' (one child per node), the faults' and the envelope nonces' RNGs.
  Nothing iterates a set of str; equal-time events run in scheduling order. The
  same arguments give the same JSON byte for byte, except wall_s and
  peak_rss_bytes; --encrypt changes only the cost (sealing uses its own RNG).
- Wire: every datagram and stream frame counts len(plaintext) + the envelope's
  overhead, at the sender (traffic is outbound bytes per node per second of
  uptime, over [fault time, end]). Streams are reliable: the request arrives
  after three one-way delays (handshake) plus transfer time and TCP
  retransmissions under loss, the reply after one more; an unreachable or
  silent peer costs the client its pool's stream_timeout_s, a crashed process
  a reset after one round trip.
- Warm start: every node restores its region's members (alive) and joins
  through a seed in its region and one in region 0, staggered over 1.5 s;
  gateways pick themselves by the core's own rule. warmup.converged_s is when
  every view and the fleet pool first converged; measurements start at the
  scenario's fault time (10 s), never at startup.
- Detection: per crash, first_suspect_s is the first suspicion (or death) by
  anyone; all_dead_s is when every node that held the crashed node alive at
  the crash (its region's members; the other gateways if it was one) holds it
  dead or left. A crash never detected by all counts as infinite: the
  percentiles it reaches are null, and `undetected` counts it.
- false_dead: distinct (observer, subject) pairs where a live observer declared
  dead (not left) a subject that was up, not stalled, in its current life (a
  notice about a restarted node's earlier incarnation or address is not false),
  not leaving gracefully (counted apart in leave_seen_dead), not separated
  from the observer by a partition (partition.dead_pairs), and not within one
  maximum suspicion timeout after a partition healed: then a pair split apart
  counts in partition.dead_pairs, and a pair on the same side in
  partition.echo_dead_pairs (a death notice from the other side arriving with
  the healing, accepted at the same incarnation until the subject refutes it).
- Dissemination: {p50, p99, max} over the per-node delays of the injected
  broadcast, among nodes up from injection to the end; max is "until every
  live node has it". rounds = seconds / region gossip_interval_s.
- Desired state (scenario desired): every node trusts one operator key,
  derived from the seed (sha256(b"murmur-sim-operator" + str(seed))), not from
  the RNGs. At 10 s a random live node accepts version 1 of the signed record
  desired/deployment/sim-deployment (scope fleet) through publish_record, at
  20 s (if the run lasts longer) another one version 2. Each is what `murmur
  deploy` signs (inference/desired.py) for a real, validated manifest: one
  replica per region of sim-model, every version a new artifact. The report's `desired` key (after
  the keys of issue 2; null in other scenarios, where `dissemination` is the
  broadcast's and stays null here) has the same {s_all, rounds_all,
  region_s_all, missing} as dissemination for version 1, measured from its
  RecordsAccepted events (holding a newer version counts as holding it), the
  same for each later version in `updates`, and `final_version_everywhere`:
  every live node holds the last version at the end. The records_agree
  invariant (once the last record had the region's settle time) compares every
  live node's fleet-only state digest.
- Inventory (scenario inventory; every other scenario keeps "n00001"-style
  ids): node n's Ed25519 key is sha256(b"murmur-sim-node" + "<seed>/<n>"), its
  id the key's id, and its core announces the key; the warm start restores
  region members with that metadata and learns their keys. Each node publishes
  its own signed inventory record (scope its region, payload
  inference/inventory.encode's) at a random time in the first 5 s, then every
  60 s, and 10% of the nodes once more on a meaningful change; all drawn from the
  fault RNG after the warm start. The report's `inventory` key (last; null
  elsewhere): published, records_per_node_expected, held_fraction (live
  same-region (observer, author) pairs where the observer holds the author's
  latest published version at the end) and missing (such pairs lacking it).
  The inventory_held invariant (lossless runs only, once the last record had
  the region's settle time) requires held_fraction 1. `freshness`: per published version, the time
  until every region peer live at its publication (and still up) held it or a
  newer version (`all_peers_s` {p50, p99, max}; null where some version never
  got there), the same per (version, peer) pair (`peer_s`), `incomplete`
  versions and `missing_fraction` of pairs still lacking it at the end, and
  `late`: versions that took longer than `bound_s` (two refresh periods, 120 s)
  or still lack peers past it. The inventory_fresh invariant requires late 0.
- Cold start (scenario cold-start; at least 2 regions): no warm start. The
  nodes are created with no restored view (same ids, addresses and regions as
  the warm start), and each joins at a random time in the first second through
  two seeds drawn (from the fleet's rng) among the nodes of other regions. The
  report's `cold_start` key (last; null elsewhere): `region_merged_s` {p50,
  p99, max} over regions of when every live member first listed every other
  alive (null where a region never got there, counted in `unmerged_regions`);
  `islands_at_end` (per region, groups of members listing each other alive,
  beyond one, summed), `split_regions_at_end`, and `foreign_region_members`
  (times a node listed a node of another region alive in its region pool).
  Invariants region_one_pool (end) and region_pool_own_region (all along).
  `warmup.converged_s` is then the cold fleet's convergence, fleet pool included.
- Convergence (warm-up, partition.heal_s and region_heal_s): every live node
  sees every live member of its region alive (suspect tolerated under loss or
  stalls) and, for "all", every region has 1-3 gateways that all see each
  other alive in the fleet pool. The time is that of the last change towards
  it, found by a 0.25 s poll over views rebuilt from MemberChanged events.
- Invariants: safety ones are checked all along; liveness ones only at the
  end of a quiet phase long enough for the pool's timing (VOPR's liveness
  mode), and `checked` lists exactly which ran. Every violation carries the
  command that reproduces it.
"""
