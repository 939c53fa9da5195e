"""Restoring persisted records at start: each is verified again, and a row the state store
will not hold is removed from node.db and counted, so damage is never kept or lost in silence.

A row the store refuses because it is full stays (it may fit once records are
deleted); every other refusal is final for that row's bytes: a signature that
no longer verifies (damage or tampering), a record of a revoked node, one out of
this node's region after a region change. The live copies come back from peers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gossip.records import Record
from gossip.state import StateStore
from mesh.service.store import Store

log = logging.getLogger("murmur.agent")

KEPT_REASONS = frozenset({"full"})
# Reasons that mean the bytes on disk changed (or were never sound): warned about.
DAMAGE_REASONS = frozenset(
    {"bad_signature", "malformed", "oversized", "unknown_kind", "bad_scope", "bad_grant"}
)


def _drop_reason(state: StateStore, record: Record) -> str:
    """Why `state` refuses `record`: merge it once more and see which drop counter moves."""
    before = state.counters
    state.merge(0.0, [record])
    moved = sorted(k for k, v in state.counters.items() if k.startswith("drop_") and v > before.get(k, 0))
    return moved[0].removeprefix("drop_") if moved else "superseded"


def restore_records(state: StateStore, store: Store, persisted: Sequence[Record]) -> int:
    """Restore `persisted` into `state`; remove (and count) the rows it refuses. Returns how many are held."""
    held = state.restore(persisted)
    refused = [r for r in persisted if state.get(r.kind, r.key) != r]
    if not refused:
        if persisted:
            log.info("restored %d persisted records", held)
        return held
    reasons: dict[tuple[str, str], str] = {}
    for record in refused:
        # Merged again one by one (only the refused few): the reason is per row.
        reason = _drop_reason(state, record)
        if state.get(record.kind, record.key) == record or reason in KEPT_REASONS:
            continue
        reasons[record.slot] = reason
    store.remove_records(reasons)
    held = sum(1 for r in persisted if state.get(r.kind, r.key) == r)
    by_reason: dict[str, int] = {}
    for reason in reasons.values():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    damaged = sum(n for reason, n in by_reason.items() if reason in DAMAGE_REASONS)
    log.log(
        logging.WARNING if damaged else logging.INFO,
        "restored %d of %d persisted records; removed %d rows from %s that this node no longer holds "
        "(by reason: %s)%s",
        held,
        len(persisted),
        len(reasons),
        store.path,
        ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())) or "none",
        f"; {damaged} of them failed verification: the database was damaged or altered, "
        "peers send the live copies back"
        if damaged
        else "",
    )
    return held
