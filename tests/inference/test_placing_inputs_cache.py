"""nodes_of and reports_of with their decode cache (inference/placing_inputs.py): the same answer as
without it, statuses applied afresh, invalid payloads left out, the cache trimmed to what was read."""

from __future__ import annotations

import nacl.signing

from gossip.kinds import INVENTORY_KIND, REPLICAS_KIND
from gossip.records import Record, key_id, sign_record
from inference.inventory import Inventory, encode
from inference.placing_inputs import DecodeCache, nodes_of, reports_of
from inference.resources import NodeStatus

KEYS = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(3)]
IDS = [key_id(bytes(k.verify_key)) for k in KEYS]
GIB = 1 << 30


def inventory_record(i: int, memory_gib: int, version: int = 1) -> Record:
    inv = Inventory(
        cpu_count=4,
        load_1m=0.1,
        cpu_percent=1.0,
        memory_total_bytes=memory_gib * GIB,
        memory_available_bytes=GIB,
        disk_free_bytes=GIB,
        accelerators=("CPUExecutionProvider",),
        os="linux",
        arch="x86_64",
        python="3.11.9",
        labels={},
        region="r",
    )
    return sign_record(KEYS[i], INVENTORY_KIND, IDS[i], version, "region:r", encode(inv))


def test_the_cache_gives_the_same_nodes_and_applies_statuses_afresh() -> None:
    # Two nodes with the same device: the same payload, told apart by their ids.
    records = [inventory_record(0, 8), inventory_record(1, 8), inventory_record(2, 16)]
    bad = sign_record(KEYS[2], INVENTORY_KIND, IDS[2], 2, "region:r", b"\x00not an inventory")
    cache = DecodeCache()
    plain = nodes_of("r", IDS, records, {})
    assert nodes_of("r", IDS, records, {}, cache.inventories) == plain
    assert nodes_of("r", IDS, records, {}, cache.inventories) == plain
    assert [n.node_id for n in plain] == sorted(IDS)
    draining = nodes_of("r", IDS, records, {IDS[0]: NodeStatus.DRAINING}, cache.inventories)
    assert [n.status for n in draining if n.node_id == IDS[0]] == [NodeStatus.DRAINING]
    assert nodes_of("r", IDS, records, {}, cache.inventories) == plain
    # A newer record replaces the older in the cache; an invalid one is left out, and cached as such.
    got = nodes_of("r", IDS, [records[0], records[1], bad], {}, cache.inventories)
    assert [n.node_id for n in got] == sorted(IDS[:2])
    assert len(cache.inventories) == 3 and cache.inventories[(IDS[2], bad.payload)] is None


def test_the_report_cache_leaves_out_undecodable_reports() -> None:
    bad = sign_record(KEYS[0], REPLICAS_KIND, IDS[0], 1, "region:r", b"\x00junk")
    cache = DecodeCache()
    assert reports_of("r", IDS, [bad], cache.reports) == {}
    assert reports_of("r", IDS, [bad], cache.reports) == {}
    assert cache.reports == {bad.payload: None}
