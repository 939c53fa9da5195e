"""Reading every region's leader and checking an operator's reset of a region's voters.

GET /v1/regions (mesh/service/api.py) answers for this node's region from its
election core; another region's leader is known only there, so the read is
forwarded to one of the API addresses that region publishes in its summary (as
`GET /v1/nodes?region=` is), all regions at once, within the forward budget
(`ask_region`). A region that does not answer is listed with what its summary
says (`unanswered`). POST /v1/regions/{region}/reset-voters takes an
operator-signed `voters-reset` record (gossip/votersreset.py), checked here
(`reset_problem`). docs/api.md describes both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from gossip.kinds import FLEET_SCOPE, VOTERS_RESET_KIND
from gossip.records import Record
from gossip.votersreset import decode_reset
from gossip.wire import DecodeError
from mesh.service.forward import ask_each


def reset_problem(record: Record, *, region: str, signer: str) -> str | None:
    """Why a reset-voters request's record is not acceptable for `region`, or None."""
    if record.kind != VOTERS_RESET_KIND:
        return f"expected a {VOTERS_RESET_KIND} record, got {record.kind!r}"
    if record.scope != FLEET_SCOPE:
        return f"a {VOTERS_RESET_KIND} record has scope {FLEET_SCOPE}, not {record.scope!r}"
    if record.author != signer:
        return f"the record's author {record.author} is not the request's signer {signer}"
    if record.key != region:
        return f"the record resets region {record.key!r}, but the request is for {region!r}"
    if record.deleted:
        return "a reset cannot be deleted; sign a new one with a higher generation"
    try:
        reset = decode_reset(record.payload)
    except DecodeError as exc:
        return f"the record's payload is not a voters reset ({exc.reason})"
    if reset.region != region:
        return f"the payload resets region {reset.region!r}, not {region!r}"
    return None


def unanswered(region: str, alive: int, why: str) -> dict[str, Any]:
    """The row of a region that did not answer: its summary's members alive, and why."""
    return {
        "region": region,
        "leader": None,
        "era": None,
        "term": None,
        "voters": [],
        "alive": alive,
        "error": why,
    }


async def ask_region(
    client: aiohttp.ClientSession,
    region: str,
    api_addrs: Sequence[str],
    deadline_s: float,
    *,
    header: str,
    timeout_s: float,
) -> dict[str, Any] | str:
    """The row one of `api_addrs` answers for its region, or why none did."""
    if not api_addrs:
        return "the region publishes no API address yet"

    def own_row(body: Any) -> dict[str, Any] | None:
        row = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else None
        return row if row is not None and row.get("region") == region else None

    row, failures = await ask_each(
        client,
        api_addrs,
        "/v1/regions",
        own_row,
        header=header,
        deadline_s=deadline_s,
        timeout_s=timeout_s,
        refused=f"not a row of region {region!r} (a stale summary)",
    )
    if row is not None:
        return row
    return "no API address answered (" + "; ".join(failures) + ")"
