"""Who may be a member of a pool, and the records our own join carries (sans-IO).

The `AdmissionGate` role of both pools (gossip/roles.py). Without an admission
of its own (simulations of membership, tests) a node admits every holder of the
network key. In admission mode a region member needs its admission record held
in the state store; a fleet-pool member from another region carries it in its
metadata, and it is verified here once per metadata value.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from gossip import codec
from gossip.admission import admission_scope, check_admission
from gossip.kinds import ADMISSION_KIND
from gossip.records import decode_record, verify_record
from gossip.state import StateStore

# Fleet-pool members whose admission (carried in their metadata) was verified, kept.
FLEET_ADMISSIONS_KEPT = 4096


class MemberGate:
    """The admission checks of a node's pools."""

    def __init__(self, state: StateStore, *, admission_mode: bool, count: Callable[[str], None]) -> None:
        self._state = state
        self.admission_mode = admission_mode
        # Our own encoded admission record (b"" outside admission mode).
        self.admission_blob = b""
        self._fleet_admitted: OrderedDict[str, bytes] = OrderedDict()  # node id -> verified meta
        self._count = count

    def may_join(self, pool: int, node_id: str, meta: bytes) -> bool:
        """In admission mode: region members need their admission held, fleet members carry it."""
        if not self.admission_mode or self._state.is_admitted(node_id):
            return True
        if pool == codec.POOL_REGION or self._state.is_revoked(node_id):
            return False
        return self._admitted_by_meta(node_id, meta)

    def introduction(self, pool: int) -> tuple[bytes, ...]:
        """Our admission record rides on our join requests, so the peer admits us at once."""
        return (self.admission_blob,) if self.admission_blob and pool == codec.POOL_REGION else ()

    def forget(self, node_id: str) -> None:
        """node_id was revoked: its verified metadata no longer admits it."""
        self._fleet_admitted.pop(node_id, None)

    def _admitted_by_meta(self, node_id: str, meta: bytes) -> bool:
        """A fleet-pool member from another region: verify the admission in its metadata (once)."""
        if self._fleet_admitted.get(node_id) == meta:
            return True
        try:
            r = decode_record(codec.decode_meta_admission(meta))
        except codec.DecodeError:
            self._count("fleet_drop_admission_undecodable")
            return False
        admission = check_admission(r, self._state) if r.kind == ADMISSION_KIND else "admission_malformed"
        if (
            isinstance(admission, str)
            or r.key != node_id
            or r.scope != admission_scope(codec.decode_meta(meta)[0])  # admitted to the region it claims
            or not verify_record(r, admission.public_key)
        ):
            self._count("fleet_drop_not_admitted")
            return False
        self._fleet_admitted[node_id] = meta
        self._fleet_admitted.move_to_end(node_id)
        if len(self._fleet_admitted) > FLEET_ADMISSIONS_KEPT:
            self._fleet_admitted.popitem(last=False)
        return True
