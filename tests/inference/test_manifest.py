"""The deployment manifest: parsing, normalisation, canonical bytes, and every error path."""

from __future__ import annotations

import json

import pytest

from inference.manifest import (
    ManifestError,
    canonical_bytes,
    decode_payload,
    parse_manifest,
)

SHA = "ab" * 32
GOOD = f"""
name: vibration
model: {{name: vib-cnn, version: "1.4.0"}}
artifact: {{sha256: {SHA}, size_bytes: 1048576}}
replicas: {{north: 2, south: 1}}
requirements: {{min_memory_bytes: 512Mi, accelerator: cuda, labels: {{camera: "yes"}}}}
priority: 100
"""


def test_a_full_yaml_manifest_parses_and_normalises() -> None:
    d = parse_manifest(GOOD)
    assert d.name == "vibration"
    assert (d.model_name, d.model_version) == ("vib-cnn", "1.4.0")
    assert d.artifact_size_bytes == 1048576
    assert d.replicas.for_region("north") == 2 and d.replicas.for_region("east") == 0
    assert d.requirements.min_memory_bytes == 512 * 1024 * 1024
    assert d.requirements.accelerator == "cuda"
    assert d.requirements.labels == (("camera", "yes"),)
    assert d.priority == 100
    assert d.record_key == "deployment/vibration"


def test_json_is_accepted_and_the_canonical_form_is_a_fixed_point() -> None:
    d = parse_manifest(GOOD)
    payload = canonical_bytes(d)
    assert decode_payload(payload) == d
    assert canonical_bytes(parse_manifest(payload.decode())) == payload
    assert json.loads(payload)["requirements"]["min_memory_bytes"] == 536870912
    # Key order and layout of the input do not matter.
    doc = json.loads(payload)
    assert canonical_bytes(parse_manifest(json.dumps(dict(reversed(list(doc.items())))))) == payload


def test_replica_forms_and_defaults() -> None:
    base = f"name: a\nmodel: {{name: m, version: v1}}\nartifact: {{sha256: {SHA}, size_bytes: 1}}\n"
    per_region = parse_manifest(base + "replicas: 3\n")
    assert per_region.replicas.for_region("anything") == 3
    assert per_region.priority == 0 and per_region.requirements.min_memory_bytes == 0
    selector = parse_manifest(base + "replicas: {per_region: 2, regions: ['store-*', depot]}\n")
    assert selector.replicas.for_region("store-12") == 2
    assert selector.replicas.for_region("depot") == 2
    assert selector.replicas.for_region("office") == 0
    assert decode_payload(canonical_bytes(selector)) == selector


def _with(field_yaml: str, drop: str | None = None) -> str:
    fields = {
        "name": "name: vibration",
        "model": "model: {name: vib-cnn, version: '1'}",
        "artifact": f"artifact: {{sha256: {SHA}, size_bytes: 10}}",
        "replicas": "replicas: 1",
    }
    if drop:
        del fields[drop]
    key = field_yaml.split(":", 1)[0]
    fields[key] = field_yaml
    return "\n".join(v for v in fields.values() if v)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_with("replicas: {north: two}"), "replicas.north: must be an integer >= 0, got 'two'"),
        (_with("replicas: {north: -1}"), "replicas.north: must be an integer >= 0, got -1"),
        (_with("replicas: yes"), "replicas: must be an integer >= 0"),
        (_with("replicas: {North: 1}"), "replicas.North: not a region name"),
        (_with("replicas: {per_region: 1}"), "replicas.regions: required field is missing"),
        (_with("replicas: {per_region: 1, regions: []}"), "replicas.regions: must be a list of 1 to"),
        (_with("replicas: {per_region: 1, regions: [A]}"), "replicas.regions[0]: 'A' is not valid"),
        (_with("name: Vibration"), "name: 'Vibration' is not valid"),
        (_with("name: 5"), "name: must be a string, got 5"),
        (_with("", drop="name"), "name: required field is missing"),
        (
            _with("model: {name: m, version: 1.0}"),
            'model.version: must be a string, got 1.0 (quote it: "1.0")',
        ),
        (_with("model: {name: m}"), "model.version: required field is missing"),
        (_with("model: {name: m, version: v, extra: 1}"), "model.extra: unknown field"),
        (_with("model: m"), "model: must be a mapping, got a string"),
        (_with("artifact: {sha256: abc, size_bytes: 1}"), "artifact.sha256: 'abc' is not valid"),
        (_with(f"artifact: {{sha256: {SHA}, size_bytes: 0}}"), "artifact.size_bytes: must be an integer"),
        (_with(f"artifact: {{sha256: {SHA}, size_bytes: '1'}}"), "artifact.size_bytes: must be an integer"),
        (_with("artifact: {file: model.onnx}"), "artifact.file: a local file is hashed by the CLI"),
        (_with("requirements: {min_memory_bytes: 5Zi}"), "requirements.min_memory_bytes: must be an integer"),
        (_with("requirements: {min_memory_bytes: -1}"), "requirements.min_memory_bytes: must be an integer"),
        (_with("requirements: {gpu: 1}"), "requirements.gpu: unknown field; allowed here: min_memory_bytes"),
        (_with("requirements: {labels: {camera: yes}}"), "requirements.labels.camera: must be a string"),
        (_with("requirements: {labels: [a]}"), "requirements.labels: must be a mapping"),
        (_with("requirements: {accelerator: 3}"), "requirements.accelerator: must be a string"),
        (_with("priority: high"), "priority: must be an integer >= 0, got 'high'"),
        (_with("priority: 1000001"), "priority: must be at most 1000000, got 1000001"),
        (_with("priority: true"), "priority: must be an integer >= 0, got True"),
        (_with("colour: red"), "colour: unknown field; allowed here: name, model"),
        ("- just\n- a list\n", "manifest: must be a mapping, got a list"),
        ("name: [unclosed\n", "manifest: not valid YAML or JSON at line"),
        ("", "manifest: must be a mapping, got nothing (null)"),
        # A value must match whole: `$` alone would let a trailing newline through.
        (_with('name: "vibration\\n"'), "name: 'vibration\\n' is not valid"),
        (_with(f'artifact: {{sha256: "{SHA}\\n", size_bytes: 1}}'), "artifact.sha256: "),
        (_with('replicas: {"north\\n": 1}'), "replicas.north\n: not a region name"),
        (_with('requirements: {labels: {"camera\\n": "yes"}}'), "requirements.labels.camera\n: not a label"),
        (_with('requirements: {min_memory_bytes: "512Mi\\n"}'), "requirements.min_memory_bytes: must be"),
    ],
)
def test_each_error_names_the_field_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text)
    assert str(info.value).startswith(message), str(info.value)


def test_oversized_text_and_payload_are_refused() -> None:
    with pytest.raises(ManifestError, match=r"manifest: .* over the limit of 65536 bytes"):
        parse_manifest("a" * 70_000)
    labels = ", ".join(f"k{i}: '{'v' * 60}'" for i in range(32))
    text = _with("replicas: {" + ", ".join(f"r{i}: 1" for i in range(256)) + "}")
    text += f"\nrequirements: {{labels: {{{labels}}}}}"
    big = parse_manifest(text)  # fits: 256 regions and 32 labels
    assert len(canonical_bytes(big)) <= 16 * 1024
    text = _with("replicas: {" + ", ".join(f"r{i:03d}-{'x' * 55}: 1" for i in range(256)) + "}")
    text += f"\nrequirements: {{labels: {{{labels}}}}}"
    with pytest.raises(ManifestError, match=r"manifest: its canonical form is .* bytes, over the limit"):
        parse_manifest(text)
