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

import nacl.exceptions
import nacl.signing

from gossip import codec
from gossip.admission import admission_scope, check_admission
from gossip.kinds import ADMISSION_KIND
from gossip.records import decode_record, verify_record
from gossip.state import StateStore

# Fleet-pool members whose admission (carried in their metadata) was verified, kept.
FLEET_ADMISSIONS_KEPT = 4096
# Members' verify keys kept, ready for their next alive claim.
VERIFY_KEYS_KEPT = 8192


class MemberGate:
    """The admission checks of a node's pools."""

    # One per node: slots, not a dict per instance (a simulation holds thousands of nodes).
    __slots__ = (
        "_count",
        "_fleet_admitted",
        "_node_key",
        "_own_claims",
        "_state",
        "_verify_keys",
        "admission_blob",
        "admission_mode",
    )

    def __init__(
        self,
        state: StateStore,
        *,
        admission_mode: bool,
        count: Callable[[str], None],
        node_key: nacl.signing.SigningKey | None = None,
    ) -> None:
        if admission_mode and node_key is None:
            raise ValueError("admission mode needs the node's key: its alive claims are signed")
        self._state = state
        self.admission_mode = admission_mode
        self._node_key = node_key
        # Our own encoded admission record (b"" outside admission mode).
        self.admission_blob = b""
        # node id -> (verified meta, public key from the admission it carries)
        self._fleet_admitted: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()
        self._verify_keys: OrderedDict[bytes, nacl.signing.VerifyKey] = OrderedDict()
        self._own_claims: dict[int, tuple[tuple[int, str, bytes], bytes]] = {}  # pool -> last signed
        self._count = count

    @property
    def authenticated(self) -> bool:
        """Members' alive claims carry their own signature (admission mode)."""
        return self.admission_mode

    def sign_alive(self, pool: int, node_id: str, incarnation: int, addr: str, meta: bytes) -> bytes:
        """Our signature of our alive claim (b"" when not authenticated); the last one is reused."""
        if self._node_key is None:
            return b""
        claim = (incarnation, addr, meta)
        last = self._own_claims.get(pool)
        if last is not None and last[0] == claim:
            return last[1]
        signature: bytes = self._node_key.sign(
            codec.alive_signing_bytes(pool, node_id, incarnation, addr, meta)
        ).signature
        self._own_claims[pool] = (claim, signature)
        return signature

    def verify_alive(self, pool: int, msg: codec.Alive) -> bool:
        """True if msg is its member's own claim (always True when not authenticated)."""
        if not self.admission_mode:
            return True
        if len(msg.signature) != codec.SIGNATURE_BYTES:
            return False
        public_key = self._state.admitted_key(msg.node_id)
        if public_key is None:
            held = self._fleet_admitted.get(msg.node_id)
            if held is None:
                return False
            public_key = held[1]
        vk = self._verify_keys.get(public_key)
        if vk is None:
            vk = self._verify_keys[public_key] = nacl.signing.VerifyKey(public_key)
            if len(self._verify_keys) > VERIFY_KEYS_KEPT:
                self._verify_keys.popitem(last=False)
        data = codec.alive_signing_bytes(pool, msg.node_id, msg.incarnation, msg.addr, msg.meta)
        try:
            vk.verify(data, msg.signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

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

    def member_key(self, node_id: str) -> bytes | None:
        """An admitted, unrevoked node's public key: its admission record, or a fleet member's metadata."""
        if not self.admission_mode:
            return None
        public_key = self._state.admitted_key(node_id)
        if public_key is None:
            held = self._fleet_admitted.get(node_id)
            if held is not None:
                public_key = held[1]
        return public_key

    def forget(self, node_id: str) -> None:
        """node_id was revoked: its verified metadata no longer admits it."""
        self._fleet_admitted.pop(node_id, None)

    def _admitted_by_meta(self, node_id: str, meta: bytes) -> bool:
        """A fleet-pool member from another region: verify the admission in its metadata (once)."""
        held = self._fleet_admitted.get(node_id)
        if held is not None and held[0] == meta:
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
        self._fleet_admitted[node_id] = (meta, admission.public_key)
        self._fleet_admitted.move_to_end(node_id)
        if len(self._fleet_admitted) > FLEET_ADMISSIONS_KEPT:
            self._fleet_admitted.popitem(last=False)
        return True
