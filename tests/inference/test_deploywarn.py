"""inference/deploywarn.py: what a manifest asks that no live node offers, in words."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from inference.deploywarn import Offer, accelerator_name, deploy_warnings, offers, target_regions
from inference.manifest import parse_manifest
from inference.resources import provides_accelerator

SHA = "ab" * 32
CPU = Offer(accelerators=("CPUExecutionProvider",), labels=(("zone", "a"),))
GPU = Offer(accelerators=("CUDAExecutionProvider", "CPUExecutionProvider"), labels=(("camera", "yes"),))


def manifest(replicas: str, requirements: str = "{}") -> str:
    return (
        f"name: vib\nmodel: {{name: m, version: '1'}}\nartifact: {{sha256: {SHA}, size_bytes: 1}}\n"
        f"replicas: {replicas}\nrequirements: {requirements}\n"
    )


def warnings_of(replicas: str, requirements: str = "{}", **offers: list[Offer]) -> list[str]:
    return deploy_warnings(parse_manifest(manifest(replicas, requirements)), ["north", "south"], offers)


def test_a_manifest_that_fits_has_no_warning() -> None:
    assert warnings_of("2", north=[CPU]) == []
    assert warnings_of("{north: 1}", "{accelerator: cuda}", north=[GPU]) == []
    assert warnings_of("{per_region: 1, regions: ['nor*']}", "{labels: {zone: a}}", north=[CPU]) == []


def test_a_region_no_live_node_is_in_is_named() -> None:
    (warning,) = warnings_of("{store-17: 2, north: 1}")
    assert warning.startswith("replicas.store-17: no live node is in region 'store-17'")
    assert "regions with live nodes: north, south" in warning and "2 replica(s)" in warning
    assert warnings_of("{store-17: 0, north: 1}") == []  # asking for none is no problem


def test_a_selector_that_matches_no_region_is_named() -> None:
    (warning,) = warnings_of("{per_region: 1, regions: ['store-*', 'north']}")
    assert warning.startswith("replicas.regions: 'store-*' matches no region with live nodes")


def test_an_accelerator_no_node_of_a_target_region_offers_is_named() -> None:
    (warning,) = warnings_of("{north: 1}", "{accelerator: cuda}", north=[CPU, CPU])
    assert warning == (
        "requirements.accelerator: no live node of region 'north' offers 'cuda' (its 2 node(s) offer: cpu)"
    )
    # A region whose inventories are not known here (another region's) is not judged.
    assert warnings_of("{south: 1}", "{accelerator: cuda}", north=[CPU]) == []


def test_a_label_no_node_has_and_a_combination_no_single_node_has() -> None:
    (warning,) = warnings_of("{north: 1}", "{labels: {camera: 'yes'}}", north=[CPU])
    assert warning.startswith("requirements.labels.camera: no live node of region 'north' has the label")
    assert "murmur agent --label camera=yes" in warning
    (together,) = warnings_of("{north: 1}", "{accelerator: cuda, labels: {zone: a}}", north=[CPU, GPU])
    assert "no single live node there offers the accelerator and every label together" in together


def test_accelerator_names_match_onnxruntime_providers() -> None:
    assert accelerator_name("CUDAExecutionProvider") == "cuda"
    assert accelerator_name("TensorrtExecutionProvider") == "tensorrt"


def test_the_warning_and_placement_match_accelerators_by_one_rule() -> None:
    # Any name placement accepts (inference/resources.py) draws no warning, and the reverse.
    for name in ("cuda", "CUDA", "CUDAExecutionProvider", "cudaexecutionprovider"):
        assert offers(GPU, name, ()) == provides_accelerator(GPU.accelerators, name) is True
    assert offers(GPU, "rocm", ()) == provides_accelerator(GPU.accelerators, "rocm") is False


@given(st.lists(st.sampled_from(["north", "south", "store-1", "store-2"]), unique=True))
def test_a_count_for_every_region_targets_every_live_region(live: list[str]) -> None:
    deployment = parse_manifest(manifest("1"))
    assert target_regions(deployment, live) == live
    assert deploy_warnings(deployment, live, {}) == []
