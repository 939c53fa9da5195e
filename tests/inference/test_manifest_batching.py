"""The manifest's optional `batching: {max_batch, max_delay_ms}` (issue 11): parsed, validated
with the field's path and bounds, and in the canonical form only when set, so a manifest
without it keeps its bytes (and a signed `desired` payload from before stays valid)."""

from __future__ import annotations

import json

import pytest

from inference.batching import MAX_BATCH_LIMIT, MAX_DELAY_LIMIT_MS, NO_BATCHING, BatchPolicy
from inference.manifest import (
    Batching,
    ManifestError,
    canonical_bytes,
    decode_payload,
    parse_manifest,
    payload_problem,
)
from tests.inference.test_manifest import GOOD
from tests.inference.test_manifest_resources import BASE, GOOD_CANONICAL


def test_a_manifest_without_batching_keeps_its_canonical_bytes() -> None:
    deployment = parse_manifest(GOOD)
    assert deployment.batching is None
    assert canonical_bytes(deployment) == GOOD_CANONICAL
    assert "batching" not in deployment.to_doc()


def test_batching_parses_round_trips_and_becomes_the_lane_policy() -> None:
    d = parse_manifest(BASE + "batching: {max_batch: 8, max_delay_ms: 2}\n")
    assert d.batching == Batching(max_batch=8, max_delay_ms=2)
    assert d.batching.policy() == BatchPolicy(max_batch=8, max_delay_s=0.002)
    payload = canonical_bytes(d)
    assert json.loads(payload)["batching"] == {"max_batch": 8, "max_delay_ms": 2}
    assert decode_payload(payload) == d and payload_problem(payload) is None
    assert canonical_bytes(parse_manifest(payload.decode())) == payload


def test_max_delay_ms_defaults_to_0_and_is_written_out() -> None:
    d = parse_manifest(BASE + "batching: {max_batch: 4}\n")
    assert d.batching == Batching(max_batch=4, max_delay_ms=0)
    assert json.loads(canonical_bytes(d))["batching"] == {"max_batch": 4, "max_delay_ms": 0}
    assert parse_manifest(BASE + "batching: {max_batch: 1}\n").batching is not None
    assert Batching(1).policy() == NO_BATCHING  # max_batch 1: each request on its own


def test_the_bounds_are_accepted() -> None:
    d = parse_manifest(
        BASE + f"batching: {{max_batch: {MAX_BATCH_LIMIT}, max_delay_ms: {MAX_DELAY_LIMIT_MS}}}\n"
    )
    assert d.batching == Batching(MAX_BATCH_LIMIT, MAX_DELAY_LIMIT_MS)


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ("batching: 8", r"^batching: must be a mapping, got an integer$"),
        ("batching: {}", r"^batching\.max_batch: required field is missing$"),
        ("batching: {max_delay_ms: 2}", r"^batching\.max_batch: required field is missing$"),
        (
            "batching: {max_batch: 8, delay: 2}",
            r"^batching\.delay: unknown field; allowed here: max_batch, max_delay_ms$",
        ),
        ("batching: {max_batch: 0}", r"^batching\.max_batch: must be an integer >= 1, got 0$"),
        ("batching: {max_batch: -3}", r"^batching\.max_batch: must be an integer >= 1, got -3$"),
        (
            f"batching: {{max_batch: {MAX_BATCH_LIMIT + 1}}}",
            rf"^batching\.max_batch: must be at most {MAX_BATCH_LIMIT}, ",
        ),
        ("batching: {max_batch: '8'}", r"^batching\.max_batch: must be an integer >= 1, got '8'$"),
        ("batching: {max_batch: 2.0}", r"^batching\.max_batch: must be an integer >= 1, got 2\.0$"),
        ("batching: {max_batch: true}", r"^batching\.max_batch: must be an integer >= 1, got True$"),
        (
            "batching: {max_batch: 8, max_delay_ms: -1}",
            r"^batching\.max_delay_ms: must be an integer >= 0, got -1$",
        ),
        (
            "batching: {max_batch: 8, max_delay_ms: 0.5}",
            r"^batching\.max_delay_ms: must be an integer >= 0, got 0\.5$",
        ),
        (
            f"batching: {{max_batch: 8, max_delay_ms: {MAX_DELAY_LIMIT_MS + 1}}}",
            rf"^batching\.max_delay_ms: must be at most {MAX_DELAY_LIMIT_MS}, ",
        ),
        ("batching: {max_batch: 8, max_delay_ms: 99999999999999999999}", r"^batching\.max_delay_ms: "),
        (
            "batching: {max_batch: [1, 2]}",
            r"^batching\.max_batch: must be an integer >= 1, got a list of 2 items$",
        ),
        ("batching: null", r"^batching: must be a mapping, got nothing \(null\)$"),
    ],
)
def test_a_bad_batching_section_is_refused_naming_the_field(section: str, error: str) -> None:
    with pytest.raises(ManifestError, match=error):
        parse_manifest(BASE + section + "\n")
