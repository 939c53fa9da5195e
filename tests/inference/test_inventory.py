"""inference/inventory.py: the inventory record's payload and the republish rules (pure)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from inference.inventory import (
    DISK_CHANGE_FRACTION,
    INVENTORY_REFRESH_S,
    LOAD_CHANGE,
    MEMORY_CHANGE_FRACTION,
    Inventory,
    decode,
    encode,
    inventory_scope,
    should_publish,
)

GIB = 2**30
BASE = Inventory(
    cpu_count=4,
    load_1m=0.5,
    cpu_percent=10.0,
    memory_total_bytes=8 * GIB,
    memory_available_bytes=4 * GIB,
    disk_free_bytes=100 * GIB,
    accelerators=("CPUExecutionProvider",),
    os="linux",
    arch="x86_64",
    python="3.11.0",
    labels={"zone": "a"},
    region="north",
)


def changed(**fields: object) -> Inventory:
    return dataclasses.replace(BASE, **fields)  # type: ignore[arg-type]


# --- should_publish -----------------------------------------------------------------------------


def test_first_inventory_is_always_published() -> None:
    assert should_publish(None, BASE, 0.0, 0.0)


def test_unchanged_inventory_waits_for_the_refresh() -> None:
    assert not should_publish(BASE, BASE, 100.0, 100.0 + INVENTORY_REFRESH_S - 0.1)
    assert should_publish(BASE, BASE, 100.0, 100.0 + INVENTORY_REFRESH_S)


def test_memory_threshold_is_a_fraction_of_total() -> None:
    step = math.ceil(MEMORY_CHANGE_FRACTION * BASE.memory_total_bytes)
    for sign in (1, -1):
        assert not should_publish(BASE, changed(memory_available_bytes=4 * GIB + sign * (step - 1)), 0, 1)
        assert should_publish(BASE, changed(memory_available_bytes=4 * GIB + sign * step), 0, 1)


def test_disk_threshold_is_a_fraction_of_free_disk() -> None:
    step = math.ceil(DISK_CHANGE_FRACTION * BASE.disk_free_bytes)
    for sign in (1, -1):
        assert not should_publish(BASE, changed(disk_free_bytes=100 * GIB + sign * (step - 1)), 0, 1)
        assert should_publish(BASE, changed(disk_free_bytes=100 * GIB + sign * step), 0, 1)


def test_load_threshold() -> None:
    assert not should_publish(BASE, changed(load_1m=BASE.load_1m + LOAD_CHANGE - 0.01), 0, 1)
    assert should_publish(BASE, changed(load_1m=BASE.load_1m + LOAD_CHANGE), 0, 1)
    assert should_publish(BASE, changed(load_1m=BASE.load_1m + LOAD_CHANGE + 1), 0, 1)
    assert not should_publish(BASE, changed(cpu_percent=99.0), 0, 1)  # cpu percent alone: too noisy


@pytest.mark.parametrize(
    "fields",
    [
        {"cpu_count": 8},
        {"accelerators": ("CUDAExecutionProvider", "CPUExecutionProvider")},
        {"accelerators": ()},
        {"labels": {"zone": "b"}},
        {"labels": {"zone": "a", "rack": "3"}},
        {"models": ("vib-cnn",)},
    ],
)
def test_discrete_changes_publish_at_once(fields: dict[str, object]) -> None:
    assert should_publish(BASE, changed(**fields), 0, 1)


# --- the payload --------------------------------------------------------------------------------


def test_encode_is_canonical_json() -> None:
    data = encode(BASE)
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    doc = json.loads(data)
    assert doc["accelerators"] == ["CPUExecutionProvider"] and doc["models"] == []
    assert doc["labels"] == {"zone": "a"} and doc["cpu_count"] == 4
    assert encode(changed(labels={"b": "1", "a": "2"})) == encode(changed(labels={"a": "2", "b": "1"}))


def test_encode_keeps_its_wire_bytes() -> None:
    """The payload peers and the simulator already hold: a schema change must be a deliberate one."""
    assert encode(BASE) == (
        b'{"accelerators":["CPUExecutionProvider"],"arch":"x86_64","cpu_count":4,"cpu_percent":10.0,'
        b'"disk_free_bytes":107374182400,"labels":{"zone":"a"},"load_1m":0.5,"memory_available_bytes":'
        b'4294967296,"memory_total_bytes":8589934592,"models":[],"os":"linux","python":"3.11.0",'
        b'"region":"north"}'
    )
    assert inventory_scope("north") == "region:north"


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_decode_refuses_what_is_not_a_json_object(payload: bytes) -> None:
    assert decode(payload) is None


def test_decode_reads_back_encode() -> None:
    doc = decode(encode(BASE))
    assert doc is not None and doc["labels"] == {"zone": "a"} and doc["memory_total_bytes"] == 8 * GIB


def test_held_artifacts_are_listed_only_when_some_are_held_and_checked() -> None:
    from inference.inventory import ARTIFACTS_LISTED_MAX, holds, payload_problem

    sha = "ab" * 32
    assert b"artifacts" not in encode(BASE)  # the payload nodes without artifacts had
    doc = decode(encode(changed(artifacts=(sha,))))
    assert doc is not None and holds(doc, sha) and not holds(doc, "cd" * 32)
    assert should_publish(BASE, changed(artifacts=(sha,)), 0.0, 1.0)
    too_many = json.loads(encode(BASE))
    too_many["artifacts"] = [f"{i:064x}" for i in range(ARTIFACTS_LISTED_MAX + 1)]
    problem = payload_problem(json.dumps(too_many).encode())
    assert problem is not None and "inventory.artifacts" in problem
    for bad in (["not-a-sha"], "ab" * 32, [1], [sha.upper()]):
        wrong = {**json.loads(encode(BASE)), "artifacts": bad}
        assert decode(json.dumps(wrong).encode()) is None
