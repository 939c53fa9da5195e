"""Deployments as `desired` records, at the API: what the node checks and shows.

Only an operator key can author a record other nodes accept, so the CLI signs
the record itself (inference/desired.py) as well as the request, and the node
that receives it checks that the record says exactly what the manifest beside
it says: kind `desired`, key `deployment/<name>`, scope `fleet`, payload the
manifest's canonical bytes, author the operator who signed the request. A
deletion is a signed tombstone of the same slot.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gossip.codec import DecodeError
from gossip.kinds import DESIRED_KIND, FLEET_SCOPE
from gossip.records import Record, decode_record, encode_record, verify_record
from inference.manifest import Deployment, ManifestError, canonical_bytes, decode_payload, desired_key


def next_version(latest: int | None, now_unix: float) -> int:
    """An operator's next record version: above everything it signed, and unix ms when that is higher.

    Versions are compared across operators, so time order decides between them.
    """
    return max(int(now_unix * 1000), (latest or 0) + 1)


def record_to_b64(record: Record) -> str:
    """A record for a JSON body."""
    return base64.b64encode(encode_record(record)).decode("ascii")


def record_from_b64(value: Any) -> Record:
    """A record from a JSON body; ValueError names the problem."""
    if not isinstance(value, str):
        raise ValueError('"record" must be the base64 of an encoded record')
    try:
        return decode_record(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        reason = exc.reason if isinstance(exc, DecodeError) else "not base64"
        raise ValueError(f'"record" is not an encoded record ({reason})') from None


def check_record(
    record: Record, *, signer: str, public_key: bytes, name: str, deployment: Deployment | None
) -> str | None:
    """Why `record` is not the operator's record for this request (None if it is).

    `deployment` None means a deletion: the record must be a tombstone.
    """
    expected_key = desired_key(name)
    if record.kind != DESIRED_KIND or record.key != expected_key or record.scope != FLEET_SCOPE:
        return (
            f"record is {record.kind}/{record.key} scope {record.scope!r}; expected "
            f"{DESIRED_KIND}/{expected_key} scope {FLEET_SCOPE!r}"
        )
    if record.author != signer:
        return f"record author {record.author} is not the request's signer {signer}; sign both with one key"
    if deployment is None:
        if not record.deleted:
            return "a deletion needs a tombstone record (deleted=true, empty payload)"
    elif record.deleted or record.payload != canonical_bytes(deployment):
        return "record payload is not the canonical form of the manifest sent with it; sign that manifest"
    if not verify_record(record, public_key):
        return "record signature does not verify with the signer's operator key"
    return None


def deployment_json(record: Record) -> dict[str, Any]:
    """A `desired` deployment record as the API shows it."""
    try:
        manifest: Any = decode_payload(record.payload).to_doc()
        problem = None
    except (ManifestError, TypeError, RecursionError) as exc:
        # Held before payloads were checked, by a newer murmur, or a bug: a read shows that the
        # record is there and why its manifest is not, and never fails (docs/api.md).
        manifest, problem = None, f"the stored payload is not a valid manifest: {exc}"
    doc: dict[str, Any] = {
        "name": record.key.removeprefix("deployment/"),
        "version": record.version,
        "author": record.author,
        "manifest": manifest,
    }
    if problem is not None:
        doc["error"] = problem
    return doc
