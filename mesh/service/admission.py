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
    REFUSALS,
    Invite,
    admission_scope,
    decode_admission,
    make_admission,
)
from gossip.codec import DecodeError
from gossip.kinds import ADMISSION_KIND
from gossip.records import Record, sign_record
from mesh.trust.cluster import JoinToken
from mesh.trust.identity import Identity

log = logging.getLogger(__name__)


def own_admission(identity: Identity, token: JoinToken, region: str, persisted: Sequence[Record]) -> Record:
    """This node's admission record: the persisted one if it is for this region, else a new one
    from the token's invite. Whether it holds is the node's to say (GossipNode.admission_problem)."""
    old = next((r for r in persisted if r.kind == ADMISSION_KIND and r.key == identity.node_id), None)
    if old is not None and old.scope == admission_scope(region):
        return old
    if old is not None:
        log.info("region changed to %s: presenting a new admission", region)
    return new_admission(identity, token, region, above=old)


def new_admission(identity: Identity, token: JoinToken, region: str, *, above: Record | None) -> Record:
    """An admission from the token's invite, joined now, one version above `above` (if any)."""
    record = make_admission(identity.signing_key, token.invite, region=region, admitted_at_s=int(time.time()))
    if above is None:
        return record
    return sign_record(
        identity.signing_key, record.kind, record.key, above.version + 1, record.scope, record.payload
    )


def admission_invite(record: Record) -> Invite | None:
    """The invite an admission record carries (None if unreadable)."""
    try:
        return decode_admission(record.payload).invite
    except DecodeError:
        return None


def describe_refusal(reason: str, regions: tuple[str, str] | None = None) -> str:
    """A refusal reason (gossip.admission.REFUSALS) in words; `regions` (the region the node
    claims, the region its invite names) turn `invite_wrong_region` into what to do."""
    if reason == "refused":
        return "refused: this node's own store does not admit it (see GET /v1/state counters)"
    if reason == "invite_wrong_region" and regions is not None:
        region, invite_region = regions
        return (
            f"{reason}: the invite is for region {invite_region!r} and the node is in region {region!r}; "
            f"start it with --region {invite_region}, or give it a token for its region "
            f"(murmur invite --region {region})"
        )
    return f"{reason}: {REFUSALS[reason]}" if reason in REFUSALS else reason
