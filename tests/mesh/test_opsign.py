"""Operator request signing: accepted and refused paths, replay and expiry, bounds."""

from __future__ import annotations

import base64

import nacl.signing
import pytest

from gossip.records import key_id
from mesh.trust.opsign import (
    KEY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RequestVerifier,
    SignatureRefused,
    load_signing_key,
    sign_request,
)

KEY = nacl.signing.SigningKey(b"\x01" * 32)
OTHER = nacl.signing.SigningKey(b"\x02" * 32)
NOW = 1_800_000_000.0
BODY = b'{"manifest": {}}'


def _verifier(**kwargs: int) -> RequestVerifier:
    keys = {key_id(bytes(KEY.verify_key)): bytes(KEY.verify_key)}
    return RequestVerifier(keys.get, **kwargs)


def _refused(
    verifier: RequestVerifier,
    headers: dict[str, str],
    *,
    body: bytes = BODY,
    method: str = "POST",
    path: str = "/v1/deployments",
    now: float = NOW,
) -> SignatureRefused:
    with pytest.raises(SignatureRefused) as info:
        verifier.verify(method, path, headers, body, now)
    return info.value


def test_a_signed_request_is_accepted_once() -> None:
    verifier = _verifier()
    headers = sign_request(KEY, "POST", "/v1/deployments", BODY, NOW)
    assert verifier.verify("POST", "/v1/deployments", headers, BODY, NOW + 10) == key_id(
        bytes(KEY.verify_key)
    )
    replay = _refused(verifier, headers, now=NOW + 20)
    assert replay.status == 403 and "replayed" in str(replay)


@pytest.mark.parametrize("missing", [KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER])
def test_missing_headers_are_401_and_named(missing: str) -> None:
    headers = sign_request(KEY, "POST", "/v1/deployments", BODY, NOW)
    del headers[missing]
    refusal = _refused(_verifier(), headers)
    assert refusal.status == 401 and missing in str(refusal) and "--key or --cluster" in str(refusal)


@pytest.mark.parametrize(
    ("header", "value", "text"),
    [
        (KEY_HEADER, "not-hex", "16-hex"),
        (TIMESTAMP_HEADER, "soon", "integer unix seconds"),
        (NONCE_HEADER, "short", "32 lowercase hex"),
        (SIGNATURE_HEADER, "!!", "base64 Ed25519"),
        (SIGNATURE_HEADER, base64.b64encode(b"x" * 10).decode(), "base64 Ed25519"),
    ],
)
def test_malformed_headers_are_401(header: str, value: str, text: str) -> None:
    headers = sign_request(KEY, "POST", "/v1/deployments", BODY, NOW)
    headers[header] = value
    refusal = _refused(_verifier(), headers)
    assert refusal.status == 401 and text in str(refusal)


def test_an_unknown_key_is_401() -> None:
    refusal = _refused(_verifier(), sign_request(OTHER, "POST", "/v1/deployments", BODY, NOW))
    assert refusal.status == 401 and "not an operator key of this cluster" in str(refusal)


@pytest.mark.parametrize(
    ("change", "kwargs"),
    [
        ("body", {"body": b'{"manifest": {"x": 1}}'}),
        ("path", {"path": "/v1/deployments/other"}),
        ("method", {"method": "DELETE"}),
    ],
)
def test_a_forged_or_altered_request_is_401(change: str, kwargs: dict[str, object]) -> None:
    headers = sign_request(KEY, "POST", "/v1/deployments", BODY, NOW)
    refusal = _refused(_verifier(), headers, **kwargs)  # type: ignore[arg-type]
    assert refusal.status == 401 and "bad request signature" in str(refusal), change


def test_a_signature_by_another_key_under_the_operator_id_is_401() -> None:
    headers = sign_request(OTHER, "POST", "/v1/deployments", BODY, NOW)
    headers[KEY_HEADER] = key_id(bytes(KEY.verify_key))
    assert _refused(_verifier(), headers).status == 401


def test_expired_and_future_requests_are_403() -> None:
    verifier = _verifier()
    old = _refused(verifier, sign_request(KEY, "POST", "/v1/deployments", BODY, NOW - 301))
    assert old.status == 403 and "expired" in str(old) and "behind" in str(old) and "NTP" in str(old)
    future = _refused(verifier, sign_request(KEY, "POST", "/v1/deployments", BODY, NOW + 301))
    assert future.status == 403 and "ahead of" in str(future)
    # At the edge of the window: accepted.
    verifier.verify(
        "POST", "/v1/deployments", sign_request(KEY, "POST", "/v1/deployments", BODY, NOW - 300), BODY, NOW
    )


def test_the_nonce_cache_is_bounded_and_forgets_only_expired_nonces() -> None:
    verifier = _verifier(nonces_max=3)
    for i in range(3):
        verifier.verify("POST", "/p", sign_request(KEY, "POST", "/p", b"", NOW + i), b"", NOW + i)
    full = _refused(verifier, sign_request(KEY, "POST", "/p", b"", NOW + 3), body=b"", path="/p", now=NOW + 3)
    assert full.status == 503 and len(verifier) == 3
    # Once the first nonces have left the window, they are forgotten and room is made.
    later = NOW + 302
    verifier.verify("POST", "/p", sign_request(KEY, "POST", "/p", b"", later), b"", later)
    assert len(verifier) <= 3


def test_load_signing_key(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "operator.key"
    path.write_text(bytes(KEY).hex() + "\n")
    path.chmod(0o600)
    assert bytes(load_signing_key(path).verify_key) == bytes(KEY.verify_key)
    path.write_text("nonsense")
    with pytest.raises(ValueError, match="not an operator key"):
        load_signing_key(path)
    with pytest.raises(ValueError, match="not found; pass --key FILE"):
        load_signing_key(path.parent / "missing.key")
