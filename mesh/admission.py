"""This node's admission, and refusals in words (gossip/admission.py has the rules).

A node presents one admission record for its whole life in a region: made from
the join token's invite the first time it starts, persisted, and presented again
after every restart, so an invite that has expired since does not matter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from gossip.admission import (
    ADMISSION_KIND,
    Invite,
    admission_scope,
    decode_admission,
    invite_problem,
    make_admission,
)
from gossip.codec import DecodeError
from gossip.records import Record, sign_record
from gossip.trust import StaticTrust
from mesh.cluster import JoinToken
from mesh.identity import Identity

log = logging.getLogger(__name__)


def own_admission(
    identity: Identity, token: JoinToken, region: str, persisted: Sequence[Record], trust: StaticTrust
) -> Record:
    """This node's admission record: the persisted one if it still fits (same region, valid),
    else a new one made now from the token's invite (one version above the old)."""
    old = next((r for r in persisted if r.kind == ADMISSION_KIND and r.key == identity.node_id), None)
    if old is not None and old.scope == admission_scope(region):
        return old
    if old is not None:
        log.info("region changed to %s: presenting a new admission", region)
    now_s = int(time.time())
    problem = invite_problem(token.invite, trust, region=region, at_s=now_s)
    if problem is not None:
        log.error("the token's invite cannot admit this node: %s", describe_refusal(problem))
    record = make_admission(identity.signing_key, token.invite, region=region, admitted_at_s=now_s)
    if old is not None:
        record = sign_record(
            identity.signing_key, record.kind, record.key, old.version + 1, record.scope, record.payload
        )
    return record


def admission_invite(record: Record) -> Invite | None:
    """The invite an admission record carries (None if unreadable)."""
    try:
        return decode_admission(record.payload).invite
    except DecodeError:
        return None


def renewed_admission(identity: Identity, token: JoinToken, region: str, old: Record) -> Record:
    """A new admission from the token's invite, one version above `old`."""
    now_s = int(time.time())
    record = make_admission(identity.signing_key, token.invite, region=region, admitted_at_s=now_s)
    return sign_record(
        identity.signing_key, record.kind, record.key, old.version + 1, record.scope, record.payload
    )


def describe_refusal(reason: str) -> str:
    """A refusal reason (gossip.admission.REFUSALS) in words, with what to do."""
    return REFUSAL_TEXT.get(reason, reason)


REFUSAL_TEXT = {
    "admission_malformed": "admission_malformed: the admission record is not readable",
    "admission_key_mismatch": "admission_key_mismatch: the admission carries a key that is not the node's",
    "invite_malformed": "invite_malformed: the invite is not readable",
    "invite_unknown_operator": "invite_unknown_operator: the invite is signed by a key that is not an "
    "operator of this cluster",
    "invite_forged": "invite_forged: the invite's signature does not verify with the operator's key",
    "invite_other_cluster": "invite_other_cluster: the invite is for another cluster",
    "invite_wrong_region": "invite_wrong_region: the invite is for another region",
    "invite_expired": "invite_expired: the node joined after the invite expired",
    "invite_used_up": "invite_used_up: as many devices as the invite allows joined with it earlier",
    "invite_reused": "invite_reused: this device already joined once with this invite of limited uses",
    "refused": "refused: this node's own store does not admit it (see GET /v1/state counters)",
}
