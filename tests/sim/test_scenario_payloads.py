"""The simulator publishes the records a real node and a real operator would: the
inventory schema of inference/inventory.py and deployments of inference/manifest.py."""

from __future__ import annotations

import dataclasses
import random

from gossip.kinds import DESIRED_KIND, INVENTORY_KIND
from gossip.records import verify_record
from inference.desired import sign_deployment
from inference.inventory import (
    Inventory,
    changed_meaningfully,
    decode,
    encode,
    inventory_scope,
)
from inference.manifest import canonical_bytes, decode_payload, desired_key, parse_manifest
from sim.scenarios import DESIRED_NAME, desired_deployment, desired_record, operator_key, schedule
from tests.sim.test_simulation import _fleet


def test_desired_records_are_what_murmur_deploy_signs_for_a_valid_manifest() -> None:
    key = operator_key(4)
    v1, v2 = desired_record(key, 1), desired_record(key, 2)
    for version, record in ((1, v1), (2, v2)):
        deployment = decode_payload(record.payload)  # a valid manifest, or ManifestError
        assert deployment == desired_deployment(version)
        assert parse_manifest(record.payload) == deployment and canonical_bytes(deployment) == record.payload
        assert record == sign_deployment(key, deployment, version)
        assert (record.kind, record.key, record.scope, record.version) == (
            DESIRED_KIND,
            desired_key(DESIRED_NAME),
            "fleet",
            version,
        )
        assert verify_record(record, bytes(key.verify_key))
        assert deployment.replicas.for_region("any-region") == 1
    # The update is a new build of the model: a new artifact, the same deployment slot.
    d1, d2 = decode_payload(v1.payload), decode_payload(v2.payload)
    assert d1.artifact_sha256 != d2.artifact_sha256 and d1.model_version != d2.model_version
    assert d1.name == d2.name


def test_inventory_records_are_the_inventory_schema_and_follow_its_republish_rule() -> None:
    fleet = _fleet(True)
    fleet.warm_start(8)
    plan = schedule(fleet, "inventory", 130.0, random.Random(5), 0.0)
    # `artifacts` is left out of a payload when none are held (simulated devices hold none).
    fields = {f.name for f in dataclasses.fields(Inventory)} - {"artifacts"}
    last: dict[str, Inventory] = {}
    urgent = 0
    assert plan.own_records
    for _at_s, idx, record, is_change in plan.own_records:
        slot = fleet.slots[idx]
        region = fleet.region_names[slot.region]
        scope = inventory_scope(region)
        assert (record.kind, record.key, record.scope) == (INVENTORY_KIND, slot.node_id, scope)
        doc = decode(record.payload)
        assert doc is not None and set(doc) == fields
        inv = Inventory(**{**doc, "accelerators": tuple(doc["accelerators"]), "models": tuple(doc["models"])})
        assert encode(inv) == record.payload and inv.region == region
        # A change is one a device would publish at once; a refresh is not.
        assert changed_meaningfully(last.get(record.key), inv) is (is_change or record.key not in last)
        last[record.key] = inv
        urgent += is_change
    assert urgent >= 1
