"""Revocations and operator grants as records: what a root operator signs and what a node checks.

See mesh/cli/trust.py for the commands and docs/state.md for the rules.
"""

from __future__ import annotations

import re

import nacl.signing

from gossip.codec import DecodeError
from gossip.kinds import FLEET_SCOPE, NETKEY_KIND, REVOCATION_KIND, TRUST_KIND
from gossip.netkey import NETKEY_SLOT, NetKeyNotice, decode_notice, encode_notice
from gossip.records import Record, key_id, sign_record, verify_record
from gossip.trust import decode_grant, encode_grant

REASON_MAX_CHARS = 200
NODE_ID = re.compile(r"[0-9a-f]{16}")  # used with fullmatch (`$` lets "\n" through)


def sign_revocation(key: nacl.signing.SigningKey, node_id: str, version: int, reason: str = "") -> Record:
    """A root operator's revocation of node_id; the reason travels as the payload (UTF-8)."""
    return sign_record(key, REVOCATION_KIND, node_id, version, FLEET_SCOPE, reason.encode("utf-8"))


def sign_grant(key: nacl.signing.SigningKey, operator_key: bytes, version: int, *, active: bool) -> Record:
    """A root operator's grant (active) or removal (not active) of operator_key.

    A removal's cutoff is its own version (unix ms, as every operator version): what
    the removed key signed after that is dropped everywhere, what it signed before stays."""
    cutoff = 0 if active else version
    payload = encode_grant(operator_key, active, cutoff)
    return sign_record(key, TRUST_KIND, key_id(operator_key), version, FLEET_SCOPE, payload)


def sign_netkey(key: nacl.signing.SigningKey, version: int, notice: NetKeyNotice) -> Record:
    """A root operator's announcement of a new network key (by its id, never the key)."""
    return sign_record(key, NETKEY_KIND, NETKEY_SLOT, version, FLEET_SCOPE, encode_notice(notice))


def check_trust_record(record: Record, *, kind: str, signer: str, public_key: bytes) -> str | None:
    """Why `record` is not a well-formed `kind` record signed by the request's signer (None if it is)."""
    if record.kind != kind or record.scope != FLEET_SCOPE or record.deleted:
        return (
            f"record is {record.kind}/{record.key} scope {record.scope!r}; expected a {kind} record, "
            "scope fleet"
        )
    if record.author != signer:
        return f"record author {record.author} is not the request's signer {signer}; sign both with one key"
    if kind == REVOCATION_KIND and not NODE_ID.fullmatch(record.key):
        return f"{record.key!r} is not a node id (16 hex characters; murmur nodes lists them)"
    if kind == TRUST_KIND:
        try:
            operator_key, _active, _cutoff = decode_grant(record.payload)
        except DecodeError:
            return "the trust record's payload is not a grant of an operator key"
        if key_id(operator_key) != record.key:
            return "the trust record's key is not the id of the operator key it grants"
    if kind == NETKEY_KIND:
        if record.key != NETKEY_SLOT:
            return f"a netkey record's key is {NETKEY_SLOT!r}, not {record.key!r}"
        try:
            decode_notice(record.payload)
        except DecodeError as exc:
            return f"the netkey record's payload is not a notice of a new key ({exc.reason})"
    if not verify_record(record, public_key):
        return "record signature does not verify with the signer's operator key"
    return None
