"""Counting the fleet's network keys for `murmur keys list` (GET /v1/keyring): who holds which key.

Each node publishes which keys it holds in its own `keyring` record
(gossip/keyholding.py, region-scoped). A region's count is read from one of its
nodes: for each key, how many of the region's alive members hold it and at how
many it is the primary, and which members lack it (the first LACKING_SHOWN).
`fleet_keyring` adds the regions up, with each key's epoch from the asked node's
newest `netkey` record. A member whose record has not arrived yet is counted as
holding nothing (`unreported`), so a count is never higher than the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gossip.keyholding import KeyHolding, decode_holding
from gossip.netkey import NetKeyNotice
from gossip.records import Record
from gossip.wire import DecodeError

LACKING_SHOWN = 16  # member ids listed per key that lack it (the count is always whole)


def holding_of(record: Record | None) -> KeyHolding | None:
    """What a `keyring` record says, or None (none yet, deleted, or unreadable)."""
    if record is None or record.deleted:
        return None
    try:
        return decode_holding(record.payload)
    except DecodeError:
        return None


def region_keyring(
    region: str, alive_ids: Sequence[str], holding: Callable[[str], KeyHolding | None]
) -> dict[str, Any]:
    """One region's row: its alive members, and per key id how many hold it and seal with it."""
    ids = sorted(alive_ids)
    held: dict[str, list[str]] = {}
    primary: dict[str, int] = {}
    unreported: list[str] = []
    for node_id in ids:
        h = holding(node_id)
        if h is None:
            unreported.append(node_id)
            continue
        for key_id in h.held:
            held.setdefault(key_id, []).append(node_id)
        primary[h.primary] = primary.get(h.primary, 0) + 1
    keys: dict[str, Any] = {}
    for key_id in sorted(held):
        have = set(held[key_id])
        lacking = [n for n in ids if n not in have]
        keys[key_id] = {
            "holders": len(have),
            "primary_at": primary.get(key_id, 0),
            "lacking": lacking[:LACKING_SHOWN],
        }
    return {
        "region": region,
        "alive": len(ids),
        "reported": len(ids) - len(unreported),
        "unreported": unreported[:LACKING_SHOWN],
        "keys": keys,
    }


def region_row_of(body: Any, region: str) -> dict[str, Any] | None:
    """A forwarded answer if it is a well-formed row of `region`, else None."""
    if not isinstance(body, dict) or body.get("region") != region:
        return None
    if not isinstance(body.get("alive"), int) or not isinstance(body.get("keys"), dict):
        return None
    for row in body["keys"].values():
        if not isinstance(row, dict) or not all(
            isinstance(row.get(f), int) for f in ("holders", "primary_at")
        ):
            return None
    return body


def fleet_keyring(
    node: dict[str, Any],
    notice: NetKeyNotice | None,
    regions: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The whole answer: the asked node's own keyring, each region's row, and each key summed.

    A region row with `error` did not answer: its members are not counted, and `complete` is
    False (a `murmur keys use` then refuses without --force)."""
    answered = [r for r in regions if "error" not in r]
    alive = sum(int(r["alive"]) for r in answered)
    ids: set[str] = set(node.get("installed_key_ids") or [])
    if notice is not None:
        ids.update(notice.wanted_ids)
    for r in answered:
        ids.update(r["keys"])
    rows: list[dict[str, Any]] = []
    for key_id in ids:
        per_region = {r["region"]: r["keys"].get(key_id) for r in answered}
        rows.append(
            {
                "key_id": key_id,
                "epoch": notice.key_epoch(key_id) if notice is not None else 0,
                "listed": notice is not None and key_id in notice.wanted_ids,
                "record_primary": notice is not None and key_id == notice.key_id,
                "holders": sum(row["holders"] for row in per_region.values() if row),
                "primary_at": sum(row["primary_at"] for row in per_region.values() if row),
                "alive": alive,
                "regions": {
                    name: {"holders": row["holders"] if row else 0, "alive": r["alive"]}
                    for r in answered
                    for name, row in [(r["region"], per_region[r["region"]])]
                },
                "lacking": [n for row in per_region.values() if row for n in row.get("lacking", [])][
                    :LACKING_SHOWN
                ],
            }
        )
    rows.sort(key=lambda row: (-(row["epoch"] if row["epoch"] is not None else -1), row["key_id"]))
    return {
        "node": node,
        "alive": alive,
        "complete": len(answered) == len(regions),
        "regions": list(regions),
        "keys": rows,
    }
