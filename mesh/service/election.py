"""The agent's side of the election: its hard state in SQLite, and what GET /v1/regions shows.

The election core (consensus/election.py) calls `save` and waits for it before
it queues any message that depends on the new state; `SqliteHardState.save`
returns only once the row is committed with synchronous=FULL (mesh/service/store.py),
and raises if it cannot be, so the node never sends a vote it did not keep.
"""

from __future__ import annotations

from typing import Any

from consensus.election import ElectionCore
from consensus.hardstate import HardState, decode_hard_state, encode_hard_state
from gossip.wire import DecodeError
from mesh.service.store import Store, StoreError


class SqliteHardState:
    """A consensus.hardstate.HardStateStore over the node database."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def load(self) -> HardState | None:
        data = self._store.election_state()
        if data is None:
            return None
        try:
            return decode_hard_state(data)
        except DecodeError as exc:
            raise StoreError(
                f"database {self._store.path}: the election's hard state does not decode ({exc.reason}). "
                f"Stop the agent and move {self._store.path} aside; the node rejoins with a fresh state "
                "(it may then vote again in a term it voted in: do it for one node at a time)"
            ) from None

    def save(self, state: HardState) -> None:
        self._store.save_election_state(encode_hard_state(state))


def own_region_json(core: ElectionCore, now: float, alive: int) -> dict[str, Any]:
    """This node's region as GET /v1/regions shows it (docs/api.md)."""
    hs = core.hard_state
    config = core.config()
    age_s = core.leader_age_s(now)
    return {
        "region": core.region,
        "leader": core.leader(),
        "era": {"generation": hs.era.generation, "founder": hs.era.founder} if hs.era else None,
        "term": hs.term,
        "voters": list(config.voters) if config else [],
        "voter_epoch": config.epoch if config else None,
        "alive": alive,
        "node": core.node_id,
        "role": str(core.role),
        "leader_holds_lease": core.is_leader(now) if core.role == "leader" else None,
        "leader_heard_s_ago": round(age_s, 3) if age_s is not None else None,
    }
