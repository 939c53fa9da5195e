"""Untrusted manifest text: the loader's limits (issue 8, finding 4) and errors that never print a
whole value."""

from __future__ import annotations

import itertools
import json

import pytest

from inference.documents import DocumentError, DocumentLimits, json_depth, load_json, load_yaml
from inference.manifest import ManifestError, decode_payload, manifest_from_doc, parse_manifest

SHA = "ab" * 32
GOOD = f"""
name: vibration
model: {{name: vib-cnn, version: "1.4.0"}}
artifact: {{sha256: {SHA}, size_bytes: 1048576}}
replicas: 2
"""


def _alias_bomb(levels: int = 9) -> str:
    """The finding's bomb: nine levels of nine aliases, 9**9 strings from under 400 bytes."""
    names = "abcdefghi"[:levels]
    parts = ["&a [" + ", ".join(["lol"] * 9) + "]"]
    for prev, cur in itertools.pairwise(names):
        parts.append(f"&{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "name: [" + ", ".join(parts) + "]\n"


ALIAS_BOMB = _alias_bomb()


def _message(text: str) -> str:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text)
    return str(info.value)


def test_an_alias_bomb_is_refused_at_its_first_anchor() -> None:
    # Before: 13.5 s and 450 MB (the error message printed the expanded value), peers declared
    # the node dead.
    assert len(ALIAS_BOMB) < 400
    assert _message(ALIAS_BOMB) == "name[0]: anchors (&name) are not accepted (line 1, column 8)"


def test_an_alias_is_refused_on_its_own() -> None:
    with pytest.raises(DocumentError) as info:
        load_yaml("a: 1\nb: [1, *x]\n")
    assert (info.value.path, info.value.detail) == (
        "b[1]",
        "aliases (*name) are not accepted (line 2, column 8)",
    )


@pytest.mark.parametrize(
    "text",
    [
        "name: " + "[" * 20_000,  # the finding: a 500 and a 2.7 s stall before
        "name: " + "{a: " * 5_000,
        '{"name": ' + "[" * 5_000 + "]" * 5_000 + "}",
    ],
)
def test_deep_flow_nesting_is_refused(text: str) -> None:
    assert "nested deeper than 16 levels" in _message(text)


def test_deep_block_nesting_is_refused() -> None:
    text = "".join(" " * i + "a:\n" for i in range(40))
    assert "nested deeper than 16 levels" in _message(text)


@pytest.mark.parametrize(
    ("value", "chars"),
    [
        ("9" * 5_000, 5_000),  # the finding: int() refuses over 4,300 digits, and that was a 500
        ("9" * 100, 100),
        ("0x" + "f" * 500, 502),  # hex has no digit limit in int(); printing it had (a 500 too)
        (":".join(["59"] * 100), 299),  # base 60
        ("1" + "_0" * 40, 81),
    ],
)
def test_a_long_integer_is_refused_before_int_naming_its_field(value: str, chars: int) -> None:
    message = _message(GOOD + f"priority: {value}\n")
    if chars > 1024:
        assert message.startswith(f"priority: a value of {chars} characters is over the limit of 1024")
    else:
        assert message.startswith(f"priority: an integer of {chars} characters is over the limit of 32")


def test_paths_name_list_items_and_nested_keys() -> None:
    text = GOOD.replace("replicas: 2", f"replicas: {{per_region: 1, regions: [a, b, {'9' * 40}]}}")
    assert _message(text).startswith("replicas.regions[2]: an integer of 40 characters")


def test_long_scalars_and_many_values_are_refused() -> None:
    assert _message(GOOD.replace("vibration", "v" * 2000)).startswith("name: a value of 2000 characters")
    many = "[" + ", ".join(["1"] * 5000) + "]"
    assert "more than 4096 values" in _message(GOOD + f"labels: {many}\n")


def test_a_large_valid_manifest_is_within_the_limits() -> None:
    labels = ", ".join(f"k{i}: '{'v' * 60}'" for i in range(32))
    regions = ", ".join(f"r{i}: 1" for i in range(256))
    text = GOOD.replace("replicas: 2", f"replicas: {{{regions}}}")
    text += f"requirements: {{min_memory_bytes: 1Gi, labels: {{{labels}}}}}\npriority: 1000000\n"
    assert len(parse_manifest(text).replicas.by_region) == 256


def test_errors_never_print_a_whole_value() -> None:
    # A structure that shares itself (what an alias makes) has a repr of 2**20 leaves; the message
    # must describe it, not print it.
    shared: list[object] = [0]
    for _ in range(20):
        shared = [shared, shared]
    doc = {"name": shared, "model": {}, "artifact": {}, "replicas": 1}
    with pytest.raises(ManifestError) as info:
        manifest_from_doc(doc)
    assert str(info.value) == "name: must be a string, got a list of 2 items"
    # An integer too long to print (str() refuses over 4,300 digits) is described.
    doc = json.loads(json.dumps({"name": "v", "model": {"name": "m", "version": "1"}}))
    doc.update(artifact={"sha256": SHA, "size_bytes": 1}, replicas=1, priority=1 << 20_000)
    with pytest.raises(ManifestError) as info:
        manifest_from_doc(doc)
    assert str(info.value) == "priority: must be at most 1000000, got an integer of 20001 bits"
    # Keys in a path are cut short.
    doc.update(priority=1, replicas={"r" * 5000: 1})
    with pytest.raises(ManifestError) as info:
        manifest_from_doc(doc)
    assert len(str(info.value)) < 200


def test_json_has_the_same_limits() -> None:
    with pytest.raises(DocumentError, match="nested 20000 deep, over the limit of 16"):
        load_json("[" * 20_000 + "]" * 20_000, DocumentLimits(text_max_bytes=1 << 20))
    with pytest.raises(DocumentError) as info:
        load_json('{"a": {"priority": ' + "9" * 5_000 + "}}")
    assert (info.value.path, info.value.detail) == (
        "a.priority",
        "an integer of 5000 characters is over the limit of 32",
    )
    with pytest.raises(DocumentError, match="NaN is not a number JSON allows"):
        load_json('{"a": NaN}')
    with pytest.raises(DocumentError, match="more than 4096 values"):
        load_json("[" + ",".join(["1"] * 5000) + "]")
    with pytest.raises(DocumentError, match="a string of 2000 characters"):
        load_json(json.dumps({"a": ["x" * 2000]}))
    with pytest.raises(DocumentError, match="not valid JSON at line 1"):
        load_json("{")
    with pytest.raises(DocumentError, match="bytes is over the limit of 65536 bytes"):
        load_json(" " * 70_000)


def test_json_paths_name_list_items_and_nested_keys() -> None:
    doc = {"inputs": [{"data": [1, 2.5, None, True]}, {"data": [0, {"k": "x" * 2000}]}]}
    with pytest.raises(DocumentError) as info:
        load_json(json.dumps(doc))
    assert info.value.path == "inputs[1].data[1].k"
    assert info.value.detail == "a string of 2000 characters is over the limit of 1024"


def test_json_values_are_counted_in_lists_of_numbers_and_mixed_lists_alike() -> None:
    limits = DocumentLimits(nodes_max=10)
    # 10 values: the outer list, two lists of 3 and a number
    assert load_json(json.dumps([[1, 2.0, None], [True, "5", 6], 7]), limits)
    assert load_json(json.dumps([[1, 2.0, None], [True, 5, 6], 7]), limits)
    for doc in ([[1, 2, 3, 4], [5, 6, 7], 8], [[1, 2, 3, 4], [5, "6", 7], 8], [[1, 2, 3], ["4", 5, 6], 7, 8]):
        with pytest.raises(DocumentError, match="more than 10 values"):
            load_json(json.dumps(doc), limits)


def test_json_depth_is_measured_when_the_brackets_could_reach_the_limit() -> None:
    limits = DocumentLimits(depth_max=16)
    assert load_json("[" * 16 + "]" * 16, limits) == load_json("[" * 16 + "]" * 16)
    with pytest.raises(DocumentError, match="nested 17 deep, over the limit of 16"):
        load_json("[" * 17 + "]" * 17, limits)
    with pytest.raises(DocumentError, match="nested 17 deep"):
        load_json('{"a": ' * 17 + "1" + "}" * 17, limits)


def test_json_depth_skips_strings() -> None:
    assert json_depth('{"a": "[[[[{{{{\\"[[["}') == 1
    assert json_depth('[[{"a": [1]}]]') == 4
    assert load_json('{"a": "' + "[" * 500 + '"}') == {"a": "[" * 500}


def test_a_desired_payload_is_decoded_within_limits() -> None:
    payload = b'{"priority": ' + b"9" * 5_000 + b"}"  # the finding's record: a 500 on every node
    with pytest.raises(ManifestError) as info:
        decode_payload(payload)
    assert str(info.value).startswith("priority: an integer of 5000 characters is over the limit of 32")
