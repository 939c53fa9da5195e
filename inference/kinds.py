"""The record kinds of a running node, with the payload checks the gossip layer cannot know.

gossip/kinds.py says who may write each kind and where it lives; it may not import
the schemas defined here (gossip is the lowest layer). This table is DEFAULT_KINDS
with a `payload_check` for the kinds whose payload has a schema above gossip:
`desired` (a manifest in its canonical form, inference/manifest.py),
`inventory` (inference/inventory.py), `placement` (inference/placement_record.py),
`replicas` (inference/replica_states.py), `scheduling` and `rebalance`
(inference/operator_records.py).
The store runs the check once, when a record is accepted, after its signature: a
record whose payload fails is dropped and counted (`drop_bad_payload`), never
stored and never relayed, so one bad payload signed by a valid key cannot spread (docs/state.md, "Payloads").

Every driver passes this table down (GossipNode(kinds=...)): the agent
(mesh/service/launch.py) and the simulator (sim/fleet.py). `admission` and
`trust` payloads are checked by the store itself, `netkey` by DEFAULT_KINDS's own
check (its schema is gossip's, gossip/netkey.py); `revocation` carries free text
(a reason).
"""

from __future__ import annotations

from dataclasses import replace

from gossip.kinds import (
    DEFAULT_KINDS,
    DESIRED_KIND,
    INVENTORY_KIND,
    PLACEMENT_KIND,
    REBALANCE_KIND,
    REPLICAS_KIND,
    SCHEDULING_KIND,
    KindTable,
    PayloadCheck,
    kind_table,
)
from inference import inventory, manifest, operator_records, placement_record, replica_states

PAYLOAD_CHECKS: dict[str, PayloadCheck] = {
    DESIRED_KIND: manifest.payload_problem,
    INVENTORY_KIND: inventory.payload_problem,
    PLACEMENT_KIND: placement_record.payload_problem,
    REPLICAS_KIND: replica_states.payload_problem,
    SCHEDULING_KIND: operator_records.scheduling_problem,
    REBALANCE_KIND: operator_records.rebalance_problem,
}

CHECKED_KINDS: KindTable = kind_table(
    replace(policy, payload_check=PAYLOAD_CHECKS.get(policy.name, policy.payload_check))
    for policy in DEFAULT_KINDS.values()
)
"""DEFAULT_KINDS, with the payloads whose schema lives in inference/ checked on acceptance."""
