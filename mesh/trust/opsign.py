"""Operator request signing: the CLI signs every mutating API request, the node verifies.

Four headers travel with a signed request:

    X-Murmur-Key        the operator key id (16 hex, key_id of the public key)
    X-Murmur-Timestamp  unix seconds (integer) when the CLI signed
    X-Murmur-Nonce      32 hex characters, fresh per request
    X-Murmur-Signature  base64 Ed25519 signature over `request_signing_bytes`

The signed bytes are a domain prefix (so a request signature can never pass as a
record or invite signature), then the length-prefixed method, path (with query),
timestamp and nonce, then sha256(body). The node accepts a request only from a
trusted operator key, within +-5 minutes of its clock, with a nonce it has not
seen, and whose body hashes to what was signed.

Refusals: 401 for a missing, malformed, unknown-key or bad signature; 403 for an
expired or replayed one. A nonce is remembered until its timestamp leaves the
window, so a replay is refused for as long as it would otherwise be accepted; the
cache is bounded, and when it is full new requests are refused (503) rather than
forgetting a nonce early.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import re
import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from gossip.records import key_id
from mesh.files import FileRefused, read_bounded

REQUEST_DOMAIN = b"murmur-api-request-v1\x00"
KEY_HEADER = "X-Murmur-Key"
TIMESTAMP_HEADER = "X-Murmur-Timestamp"
NONCE_HEADER = "X-Murmur-Nonce"
SIGNATURE_HEADER = "X-Murmur-Signature"
CLOCK_WINDOW_S = 300
NONCE_CACHE_MAX = 10_000
# Used with fullmatch: `match` with `$` would let a trailing newline through.
NONCE_PATTERN = re.compile(r"[0-9a-f]{32}")
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{16}")
TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,12}")  # int() alone takes " 1", "+1" and "1_0"
OPERATOR_KEY_MAX_BYTES = 1024  # 64 hex characters and a newline


class SignatureRefused(Exception):
    """A request the node refuses; `status` is 401, 403 or 503 and the message says what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def request_signing_bytes(
    method: str, path: str, timestamp: str, nonce: str, body: bytes, *, body_sha256: bytes | None = None
) -> bytes:
    """The canonical bytes an operator signs for one request.

    body_sha256, if given, stands for sha256(body): an upload is signed over the hash
    of the file it streams, and the node checks the bytes against it as they arrive.
    """
    return b"".join(
        (
            REQUEST_DOMAIN,
            _prefixed(method.upper().encode()),
            _prefixed(path.encode()),
            _prefixed(timestamp.encode()),
            _prefixed(nonce.encode()),
            body_sha256 if body_sha256 is not None else hashlib.sha256(body).digest(),
        )
    )


def sign_request(
    key: nacl.signing.SigningKey,
    method: str,
    path: str,
    body: bytes,
    now_unix: float,
    *,
    body_sha256: bytes | None = None,
) -> dict[str, str]:
    """The signature headers for one request (`path` includes any query string)."""
    timestamp = str(int(now_unix))
    nonce = secrets.token_hex(16)
    message = request_signing_bytes(method, path, timestamp, nonce, body, body_sha256=body_sha256)
    signature = key.sign(message).signature
    return {
        KEY_HEADER: key_id(bytes(key.verify_key)),
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
    }


def load_signing_key(path: Path) -> nacl.signing.SigningKey:
    """Read an operator key file (hex Ed25519 seed, as `murmur cluster init` writes it).

    ValueError names the fix; a key file other users can read is refused (the
    message gives the chmod to run), and at most OPERATOR_KEY_MAX_BYTES are read.
    """
    try:
        text = read_bounded(path, OPERATOR_KEY_MAX_BYTES, "operator key", secret=True).decode("ascii").strip()
    except FileRefused as exc:
        raise ValueError(str(exc)) from None
    except FileNotFoundError:
        raise ValueError(
            f"operator key {path} not found; pass --key FILE (or --cluster DIR) with the operator.key "
            "from `murmur cluster init`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"operator key {path} is not readable: {exc}") from None
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ValueError(f"operator key {path} is not an operator key (expected 64 hex characters)")
    return nacl.signing.SigningKey(seed)


@dataclass(frozen=True, slots=True)
class _Parsed:
    key_id: str
    timestamp: int
    nonce: str
    signature: bytes


def _parse_headers(headers: Mapping[str, str]) -> _Parsed:
    missing = [h for h in (KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER) if h not in headers]
    if missing:
        raise SignatureRefused(
            401,
            f"request is not signed (missing {', '.join(missing)}); mutating requests must be signed "
            "with the operator key: use the murmur CLI with --key or --cluster",
        )
    author = headers[KEY_HEADER]
    if not KEY_ID_PATTERN.fullmatch(author):
        raise SignatureRefused(401, f"{KEY_HEADER} must be a 16-hex-character operator key id")
    if not TIMESTAMP_PATTERN.fullmatch(headers[TIMESTAMP_HEADER]):
        raise SignatureRefused(401, f"{TIMESTAMP_HEADER} must be integer unix seconds")
    timestamp = int(headers[TIMESTAMP_HEADER])
    nonce = headers[NONCE_HEADER]
    if not NONCE_PATTERN.fullmatch(nonce):
        raise SignatureRefused(401, f"{NONCE_HEADER} must be 32 lowercase hex characters")
    try:
        signature = base64.b64decode(headers[SIGNATURE_HEADER], validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise SignatureRefused(401, f"{SIGNATURE_HEADER} must be a base64 Ed25519 signature (64 bytes)")
    return _Parsed(author, timestamp, nonce, signature)


class RequestVerifier:
    """Checks signed requests against the trusted operator keys; remembers nonces (bounded)."""

    def __init__(
        self,
        operator_key: Callable[[str], bytes | None],
        *,
        window_s: int = CLOCK_WINDOW_S,
        nonces_max: int = NONCE_CACHE_MAX,
    ) -> None:
        self._operator_key = operator_key
        self.window_s = window_s
        self.nonces_max = nonces_max
        # nonce -> expiry (its timestamp + window), in insertion order; expiries are
        # not monotone in insertion order, so pruning scans only the stale head.
        self._nonces: collections.OrderedDict[str, int] = collections.OrderedDict()

    def verify(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        now_unix: float,
        *,
        body_sha256: bytes | None = None,
    ) -> str:
        """The operator key id that signed the request; SignatureRefused otherwise.

        With body_sha256 the body is not read here: the caller checks it hashes to that.
        """
        parsed = _parse_headers(headers)
        public_key = self._operator_key(parsed.key_id)
        if public_key is None:
            raise SignatureRefused(
                401,
                f"key {parsed.key_id} is not an operator key of this cluster; sign with the operator.key "
                "of the cluster this node joined",
            )
        message = request_signing_bytes(
            method, path, str(parsed.timestamp), parsed.nonce, body, body_sha256=body_sha256
        )
        try:
            nacl.signing.VerifyKey(public_key).verify(message, parsed.signature)
        except (nacl.exceptions.BadSignatureError, ValueError):
            raise SignatureRefused(
                401,
                "bad request signature: it does not match the method, path, body and headers sent; "
                "sign the exact request (the murmur CLI does), and do not alter it on the way",
            ) from None
        now = int(now_unix)
        skew = parsed.timestamp - now
        if abs(skew) > self.window_s:
            raise SignatureRefused(
                403,
                f"request expired: signed at unix {parsed.timestamp}, {abs(skew)} s "
                f"{'behind' if skew < 0 else 'ahead of'} this node's clock (limit {self.window_s} s); "
                "sign a fresh request and check both clocks (NTP)",
            )
        self._prune(now)
        if parsed.nonce in self._nonces:
            raise SignatureRefused(403, "request replayed: this nonce was already used; sign a fresh request")
        if len(self._nonces) >= self.nonces_max:
            raise SignatureRefused(503, "too many signed requests in the last minutes; retry shortly")
        self._nonces[parsed.nonce] = parsed.timestamp + self.window_s
        return parsed.key_id

    def _prune(self, now: int) -> None:
        while self._nonces:
            nonce, expiry = next(iter(self._nonces.items()))
            if expiry >= now:
                break
            del self._nonces[nonce]
        if len(self._nonces) >= self.nonces_max:
            # Out-of-order expiries may hide behind a fresh head: a full scan, only when full.
            for nonce in [n for n, expiry in self._nonces.items() if expiry < now]:
                del self._nonces[nonce]

    def __len__(self) -> int:
        return len(self._nonces)
