"""Whether a `placement` record may be applied: its leader's proof and its stamp (pure).

A placement is valid only if its author was the leader of our region for the
term it claims: the record carries the leader's certificate (a majority of the
voters' signed votes, consensus/certificate.py), which must verify with the
members' keys and name the record's author as leader of the record's region, era
and term. The record's signature itself was checked by the store on receipt.
Among valid placements a node applies the one with the newest stamp
(inference/stamps.py); that is the fencing of deposed leaders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consensus.certificate import verify_certificate
from gossip.kinds import REGION_SCOPE_PREFIX
from gossip.records import Record
from inference.placement_record import PlacementRecord, PlacementRecordError, decode
from inference.stamps import Stamp

# Why a placement record is not applied (each a counter, drop_<reason>).
BAD = "bad_placement"  # not a placement of our region (payload, scope)
FORGED = "forged_placement"  # no certificate, or one that does not prove its author led that term


@dataclass(frozen=True, slots=True)
class ValidPlacement:
    """A placement proven to come from the leader of its term."""

    record: PlacementRecord
    stamp: Stamp
    leader: str


def check_placement(
    record: Record, region: str, member_key: Callable[[str], bytes | None]
) -> ValidPlacement | str:
    """The valid placement `record` holds, or why it is not one (BAD or FORGED)."""
    if record.deleted or record.scope != REGION_SCOPE_PREFIX + region:
        return BAD
    try:
        placement = decode(record.payload)
    except PlacementRecordError:
        return BAD
    if placement.region != region:
        return BAD
    if not placement.certificate:
        return FORGED
    # The votes sign the region, so a certificate of another region does not verify here.
    claim = verify_certificate(placement.certificate, region, None, member_key)
    if claim is None or claim.leader != record.author or placement.term != (claim.era.generation, claim.term):
        return FORGED
    return ValidPlacement(placement, Stamp(claim.era, claim.term, placement.epoch), record.author)
