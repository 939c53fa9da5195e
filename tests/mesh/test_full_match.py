"""Every validated field is matched whole (issue 8, finding 6).

`re.match` with a pattern ending in `$` accepts a trailing newline, and `int()` accepts
surrounding whitespace, `+` and `_`: `name: "vib\\n"` was a 202. For each field a node or
the CLI validates, a valid value with characters outside its alphabet added before or
after it is refused.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
from collections.abc import Callable
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.records import key_id
from inference.inventory import Inventory, encode, payload_problem
from inference.manifest import (
    LABEL_KEY_PATTERN,
    NAME_PATTERN,
    REGION_GLOB_PATTERN,
    REGION_PATTERN,
    SHA256_PATTERN,
    TEXT_PATTERN,
    ManifestError,
    manifest_from_doc,
)
from mesh.cli import args as cli_args
from mesh.cli.client import CliError
from mesh.cli.trust import cmd_revoke
from mesh.netaddr import AddressError, split_hostport
from mesh.service.artifacts import ArtifactError, ArtifactStore
from mesh.trust.opsign import (
    KEY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RequestVerifier,
    SignatureRefused,
    request_signing_bytes,
)
from mesh.trust.records import check_trust_record, sign_revocation

# Characters no validated field allows, `$`'s newline first.
OUTSIDE = st.text(
    alphabet=st.sampled_from(["\n", "\r", " ", "\t", "\x00", "\x0b", "\x0c", "\x85", "\u2028", "\u3000"]),
    min_size=1,
    max_size=3,
)
SHA = "ab" * 32
KEY = nacl.signing.SigningKey(b"\x01" * 32)
KEY_ID = key_id(bytes(KEY.verify_key))
NOW = 1_800_000_000


@st.composite
def affixed(draw: st.DrawFn, valid: st.SearchStrategy[str]) -> str:
    """A valid value with characters from OUTSIDE before it, after it, or both."""
    value = draw(valid)
    where = draw(st.sampled_from(["suffix", "prefix", "both"]))
    prefix = draw(OUTSIDE) if where != "suffix" else ""
    suffix = draw(OUTSIDE) if where != "prefix" else ""
    return prefix + value + suffix


def _manifest(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "vibration",
        "model": {"name": "vib-cnn", "version": "1.4.0"},
        "artifact": {"sha256": SHA, "size_bytes": 1},
        "replicas": 1,
        "requirements": {},
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = doc
        for parent in parents:
            target = target[parent]
        target[last] = value
    return doc


# (field, a valid value, the manifest with that value in place)
MANIFEST_FIELDS: list[tuple[str, st.SearchStrategy[str], Callable[[str], dict[str, Any]]]] = [
    ("name", st.from_regex(NAME_PATTERN, fullmatch=True), lambda v: _manifest(name=v)),
    ("model.name", st.from_regex(TEXT_PATTERN, fullmatch=True), lambda v: _manifest(model__name=v)),
    ("model.version", st.from_regex(TEXT_PATTERN, fullmatch=True), lambda v: _manifest(model__version=v)),
    (
        "artifact.sha256",
        st.from_regex(SHA256_PATTERN, fullmatch=True),
        lambda v: _manifest(artifact__sha256=v),
    ),
    (
        "replicas.<region>",
        st.from_regex(REGION_PATTERN, fullmatch=True),
        lambda v: _manifest(replicas={v: 1}),
    ),
    (
        "replicas.regions",
        st.from_regex(REGION_GLOB_PATTERN, fullmatch=True),
        lambda v: _manifest(replicas={"per_region": 1, "regions": [v]}),
    ),
    (
        "requirements.accelerator",
        st.from_regex(TEXT_PATTERN, fullmatch=True),
        lambda v: _manifest(requirements__accelerator=v),
    ),
    (
        "requirements.labels.<key>",
        st.from_regex(LABEL_KEY_PATTERN, fullmatch=True),
        lambda v: _manifest(requirements__labels={v: "yes"}),
    ),
    (
        "requirements.min_memory_bytes",
        st.from_regex(r"[0-9]{1,6}(Ki|Mi|Gi|K|M|G)?", fullmatch=True),
        lambda v: _manifest(requirements__min_memory_bytes=v),
    ),
]


@pytest.mark.parametrize(("field", "valid", "build"), MANIFEST_FIELDS, ids=[f[0] for f in MANIFEST_FIELDS])
def test_manifest_fields_match_whole(
    field: str, valid: st.SearchStrategy[str], build: Callable[[str], dict[str, Any]]
) -> None:
    @settings(max_examples=60, deadline=None)
    @given(valid)
    def accepts(value: str) -> None:
        manifest_from_doc(build(value))

    @settings(max_examples=60, deadline=None)
    @given(affixed(valid))
    def refuses(value: str) -> None:
        with pytest.raises(ManifestError):
            manifest_from_doc(build(value))

    accepts()
    refuses()


INVENTORY = Inventory(
    2, 0.5, 1.0, 8, 4, 100, ("CPUExecutionProvider",), "linux", "x86_64", "3.11", {}, "north"
)


@settings(max_examples=60, deadline=None)
@given(affixed(st.from_regex(REGION_PATTERN, fullmatch=True)))
def test_inventory_region_matches_whole(region: str) -> None:
    payload = encode(Inventory(**{**_fields(INVENTORY), "region": region}))
    assert payload_problem(payload) == "inventory.region: not a region name"


@settings(max_examples=60, deadline=None)
@given(affixed(st.from_regex(LABEL_KEY_PATTERN, fullmatch=True)))
def test_inventory_label_keys_match_whole(key: str) -> None:
    payload = encode(Inventory(**{**_fields(INVENTORY), "labels": {key: "a"}}))
    assert payload_problem(payload) == "inventory.labels: a label name or value is not valid"


def _fields(inv: Inventory) -> dict[str, Any]:
    return {name: getattr(inv, name) for name in inv.__slots__}


@settings(max_examples=60, deadline=None)
@given(affixed(st.from_regex(REGION_PATTERN, fullmatch=True)))
def test_the_region_flag_matches_whole(region: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a region name"):
        cli_args.region(region)


@settings(max_examples=60, deadline=None)
@given(affixed(st.from_regex(LABEL_KEY_PATTERN, fullmatch=True)))
def test_the_label_flag_key_matches_whole(key: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a label"):
        cli_args.label(key + "=a")


NODE_IDS = st.from_regex(r"[0-9a-f]{16}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(affixed(NODE_IDS))
def test_a_revoked_node_id_matches_whole(node_id: str) -> None:
    # Signed correctly over the bad id: only the id's check can refuse it.
    record = sign_revocation(KEY, node_id, 5)
    problem = check_trust_record(record, kind="revocation", signer=KEY_ID, public_key=bytes(KEY.verify_key))
    assert problem is not None and "is not a node id" in problem
    with pytest.raises(CliError, match="is not a node id"):
        cmd_revoke(argparse.Namespace(node_id=node_id, reason=""))


def _headers(key_id_text: str, timestamp: str, nonce: str) -> dict[str, str]:
    # Signed over what the node verifies, str(int(header)) where int() reads it: so only the
    # header's own check can refuse it.
    try:
        signed_timestamp = str(int(timestamp))
    except ValueError:
        signed_timestamp = timestamp
    message = request_signing_bytes("POST", "/v1/deployments", signed_timestamp, nonce, b"{}")
    return {
        KEY_HEADER: key_id_text,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: base64.b64encode(KEY.sign(message).signature).decode(),
    }


def _verify(headers: dict[str, str]) -> str:
    verifier = RequestVerifier({KEY_ID: bytes(KEY.verify_key)}.get)
    return verifier.verify("POST", "/v1/deployments", headers, b"{}", NOW)


def test_a_well_formed_signed_request_is_accepted() -> None:
    assert _verify(_headers(KEY_ID, str(NOW), "0" * 32)) == KEY_ID


@settings(max_examples=60, deadline=None)
@given(affixed(st.from_regex(r"[0-9a-f]{32}", fullmatch=True)))
def test_the_request_nonce_matches_whole(nonce: str) -> None:
    with pytest.raises(SignatureRefused, match="must be 32 lowercase hex characters"):
        _verify(_headers(KEY_ID, str(NOW), nonce))


@settings(max_examples=60, deadline=None)
@given(affixed(st.just(str(NOW))) | st.sampled_from([f"+{NOW}", f"{NOW // 10}_{NOW % 10}", f"0x{NOW:x}"]))
def test_the_request_timestamp_is_digits_only(timestamp: str) -> None:
    # int() alone would read each of these as NOW (the signature covers str(int(header))).
    with pytest.raises(SignatureRefused, match="must be integer unix seconds"):
        _verify(_headers(KEY_ID, timestamp, "0" * 32))


@settings(max_examples=60, deadline=None)
@given(affixed(st.just(KEY_ID)))
def test_the_request_key_id_matches_whole(key: str) -> None:
    with pytest.raises(SignatureRefused, match="16-hex-character operator key id"):
        _verify(_headers(key, str(NOW), "0" * 32))


@settings(max_examples=60, deadline=None)
@given(affixed(st.from_regex(SHA256_PATTERN, fullmatch=True)))
def test_an_artifact_id_matches_whole(sha256: str) -> None:
    with pytest.raises(ArtifactError, match="is not a sha256"):
        ArtifactStore.check_id(sha256)
    ArtifactStore.check_id(hashlib.sha256(b"x").hexdigest())


@settings(max_examples=60, deadline=None)
@given(affixed(st.integers(0, 65535).map(str)) | st.sampled_from(["+80", "8_0", "²"]))
def test_an_address_port_is_digits_only(port: str) -> None:
    with pytest.raises(AddressError, match="is not a number"):
        split_hostport("127.0.0.1:" + port)
    assert split_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
