"""The manifest's optional `resources` and `spread` (issue 9): parsed, validated with the field's
path, and in the canonical form only when set, so older manifests keep their bytes."""

from __future__ import annotations

import json

import pytest

from inference.manifest import (
    ManifestError,
    Resources,
    canonical_bytes,
    decode_payload,
    parse_manifest,
    payload_problem,
)
from inference.resources import reservation
from tests.inference.test_manifest import GOOD, SHA

# The canonical bytes of GOOD as they were before `resources` and `spread` existed: a signed
# `desired` payload from then must still be exactly what canonical_bytes gives today.
GOOD_CANONICAL = (
    b'{"artifact":{"sha256":"' + SHA.encode() + b'","size_bytes":1048576},'
    b'"model":{"name":"vib-cnn","version":"1.4.0"},"name":"vibration","priority":100,'
    b'"replicas":{"north":2,"south":1},'
    b'"requirements":{"accelerator":"cuda","labels":{"camera":"yes"},"min_memory_bytes":536870912}}'
)
BASE = (
    f"name: a\nmodel: {{name: m, version: v1}}\nartifact: {{sha256: {SHA}, size_bytes: 1000}}\nreplicas: 2\n"
)


def test_a_manifest_without_the_new_fields_keeps_its_canonical_bytes() -> None:
    deployment = parse_manifest(GOOD)
    assert canonical_bytes(deployment) == GOOD_CANONICAL
    assert "resources" not in deployment.to_doc() and "spread" not in deployment.to_doc()
    assert deployment.resources == Resources() and deployment.spread_label is None


def test_resources_and_spread_parse_and_round_trip() -> None:
    d = parse_manifest(
        BASE + "resources: {memory_bytes: 300Mi, cpu_millicores: 500}\nspread: {label: zone}\n"
    )
    assert d.resources == Resources(memory_bytes=300 << 20, cpu_millicores=500)
    assert d.spread_label == "zone"
    doc = json.loads(canonical_bytes(d))
    assert doc["resources"] == {"memory_bytes": 300 << 20, "cpu_millicores": 500}
    assert doc["spread"] == {"label": "zone"}
    assert decode_payload(canonical_bytes(d)) == d
    assert canonical_bytes(parse_manifest(canonical_bytes(d).decode())) == canonical_bytes(d)


def test_only_the_resource_fields_set_are_emitted() -> None:
    memory_only = parse_manifest(BASE + "resources: {memory_bytes: 1Gi}\n")
    assert json.loads(canonical_bytes(memory_only))["resources"] == {"memory_bytes": 1 << 30}
    assert reservation(memory_only).cpu_millicores == 250  # the estimate fills the rest
    cpu_only = parse_manifest(BASE + "resources: {cpu_millicores: 2000}\n")
    assert json.loads(canonical_bytes(cpu_only))["resources"] == {"cpu_millicores": 2000}
    assert reservation(cpu_only).memory_bytes == 2 * 1000 + (64 << 20)
    # An empty mapping says nothing: the canonical form is the one without it.
    assert canonical_bytes(parse_manifest(BASE + "resources: {}\n")) == canonical_bytes(parse_manifest(BASE))


def test_a_payload_with_an_empty_resources_mapping_is_not_canonical() -> None:
    payload = canonical_bytes(parse_manifest(BASE))
    padded = payload[:-1] + b',"resources":{}}'
    assert payload_problem(payload) is None
    assert payload_problem(padded) == "manifest: payload is not the canonical form of its manifest"


def test_the_estimate_when_the_manifest_states_nothing() -> None:
    d = parse_manifest(BASE)
    assert reservation(d).memory_bytes == 2 * 1000 + 64 * 1024 * 1024
    assert reservation(d).cpu_millicores == 250


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("resources: {memory_bytes: 0}", "resources.memory_bytes: must be an integer >= 1, got 0"),
        ("resources: {memory_bytes: '0Mi'}", "resources.memory_bytes: must be at least 1 byte, got '0Mi'"),
        ("resources: {memory_bytes: lots}", "resources.memory_bytes: must be an integer number of bytes"),
        ("resources: {memory_bytes: 5Pi}", "resources.memory_bytes: must be an integer number of bytes"),
        ("resources: {memory_bytes: 2000Ti}", "resources.memory_bytes: '2000Ti' is over the limit"),
        ("resources: {cpu_millicores: 0}", "resources.cpu_millicores: must be an integer >= 1, got 0"),
        ("resources: {cpu_millicores: 0.5}", "resources.cpu_millicores: must be an integer >= 1, got 0.5"),
        ("resources: {cpu_millicores: 2000000}", "resources.cpu_millicores: must be at most 1048576"),
        ("resources: {cpu: 1}", "resources.cpu: unknown field; allowed here: memory_bytes, cpu_millicores"),
        ("resources: 1Gi", "resources: must be a mapping, got a string"),
        ("spread: zone", "spread: must be a mapping, got a string"),
        ("spread: {}", "spread.label: required field is missing"),
        ("spread: {label: 3}", "spread.label: must be a string, got 3"),
        ("spread: {label: 'a b'}", "spread.label: 'a b' is not valid; use a node label name"),
        ("spread: {label: zone, max_skew: 1}", "spread.max_skew: unknown field; allowed here: label"),
    ],
)
def test_each_new_error_names_the_field(extra: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(BASE + extra + "\n")
    assert str(info.value).startswith(message), str(info.value)
