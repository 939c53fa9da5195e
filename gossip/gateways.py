"""Which members of a region are its gateways: a pure ranking every member applies alike.

Up to `GATEWAYS_PER_REGION` members of each region also run the fleet pool.
Every member computes the same choice from its own view, with no messages:
rank the live members by the sha256 of their id, stable members (alive for
`GATEWAY_STABLE_S` in this view) before young ones once the region has enough
stable members, so a node that just joined is never made a gateway at once.

`preferred` is the hook through which a region's election can later make its
voters the gateways (docs/design.md): live preferred members come first, in the
order given, and the rule above fills the remaining places.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

GATEWAYS_PER_REGION = 3
# A member alive this long in our view is preferred as a gateway over newer ones.
GATEWAY_STABLE_S = 10.0


class Candidate(NamedTuple):
    """A live member (alive or suspect) that could be a gateway (a tuple: many are made per choice)."""

    node_id: str
    addr: str
    alive_since_s: float


@dataclass(frozen=True, slots=True)
class GatewayChoice:
    """The gateways, best first, and when the choice could next change with no membership change."""

    gateways: tuple[tuple[str, str], ...]
    next_change_s: float


def rank_hash(node_id: str) -> bytes:
    """The rank of a member: sha256 of its id (the same at every node)."""
    return hashlib.sha256(node_id.encode()).digest()


def choose_gateways(
    candidates: Iterable[tuple[str, str, float]],
    now: float,
    *,
    rank: Callable[[str], bytes] = rank_hash,
    count: int = GATEWAYS_PER_REGION,
    stable_s: float = GATEWAY_STABLE_S,
    preferred: Sequence[str] = (),
) -> GatewayChoice:
    """The region's gateways by the rule every member applies (see the module docstring).

    `candidates` are `Candidate`s or plain (node_id, addr, alive_since_s) tuples, in any order.
    """
    ranked: list[tuple[bool, bytes, str, str]] = []
    next_change_s = float("inf")
    for node_id, addr, alive_since_s in candidates:
        # One expression for "young" and for when it stops being: `now - since < stable_s`
        # rounds differently, and a recheck at exactly `since + stable_s` still saw the member
        # young, so that view kept its old gateways one recheck longer than every other view.
        stable_at_s = alive_since_s + stable_s
        young = now < stable_at_s
        if young and stable_at_s < next_change_s:
            next_change_s = stable_at_s
        ranked.append((young, rank(node_id), node_id, addr))
    if sum(1 for r in ranked if not r[0]) < count:
        # A young region: stability is ignored, so its choice does not flap.
        ranked = [(False, h, nid, addr) for _y, h, nid, addr in ranked]
    ranked.sort()
    chosen: list[tuple[str, str]] = []
    if preferred:
        live = {nid: addr for _y, _h, nid, addr in ranked}
        chosen = [(nid, live[nid]) for nid in dict.fromkeys(preferred) if nid in live][:count]
    taken = {nid for nid, _addr in chosen}
    for _y, _h, nid, addr in ranked:
        if len(chosen) >= count:
            break
        if nid not in taken:
            chosen.append((nid, addr))
    return GatewayChoice(tuple(chosen), next_change_s)
