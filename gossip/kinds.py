"""Record kinds as data: for each kind, where its records live, who may write them, and
the order the store handles them in (sans-IO).

The state store (gossip/state.py) and StaticTrust (gossip/trust.py) read every rule
about a kind from one `KindTable`, DEFAULT_KINDS unless they are given another.
Adding a kind is one `KindPolicy` here plus the codec of its payload where it is
written and read; the store's code does not change (docs/state.md, "Record kinds").

Three kinds carry trust itself, and the store has code of its own for them, named
by the constants below: `admission` proves a node's key (docs/trust.md), `trust`
grants or removes an operator key, `revocation` removes a node. Every other kind is
data alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from types import MappingProxyType

from gossip.keyholding import KEYRING_PAYLOAD_MAX_BYTES, holding_problem
from gossip.netkey import NETKEY_PAYLOAD_MAX_BYTES, notice_problem
from gossip.votersreset import VOTERS_RESET_PAYLOAD_MAX_BYTES, reset_problem

FLEET_SCOPE = "fleet"
REGION_SCOPE_PREFIX = "region:"
REGION_MAX_CHARS = 64

INVENTORY_KIND = "inventory"
DESIRED_KIND = "desired"
REVOCATION_KIND = "revocation"
TRUST_KIND = "trust"
PLACEMENT_KIND = "placement"
ADMISSION_KIND = "admission"
NETKEY_KIND = "netkey"
KEYRING_KIND = "keyring"
REPLICAS_KIND = "replicas"
SCHEDULING_KIND = "scheduling"
REBALANCE_KIND = "rebalance"
VOTERS_RESET_KIND = "voters-reset"


class Scope(StrEnum):
    """Where a kind's records live: in one region (scope `region:<name>`) or the whole fleet."""

    REGION = "region"
    FLEET = "fleet"


PayloadCheck = Callable[[bytes], str | None]
"""A kind's payload schema: why a payload is not valid, or None if it is."""


class Writer(Enum):
    """Who may write a kind's records."""

    NODE = "node"  # the admitted node its key names (so the kind is keyed by its author)
    OPERATOR = "operator"  # root operators, and granted ones (a removed one: up to its cutoff)
    ROOT_OPERATOR = "root operator"  # the base trust's operator keys (the join token's) only


@dataclass(frozen=True, slots=True)
class KindPolicy:
    """Everything the store and the trust check about one kind of record."""

    name: str
    scope: Scope
    writer: Writer
    owner_keyed: bool  # the key must be the author's id
    # Lower first: what missing_for sends first under a tight budget, and the order a
    # batch is merged in (so a node's admission is judged before the records it signs).
    priority: int
    deletable: bool = True  # False: a tombstone of this kind is refused
    payload_max_bytes: int | None = None  # None: the store's limit (StoreLimits) alone
    # Run once when a signed record is accepted (tombstones have no payload to check): a
    # payload it refuses is dropped and counted (drop_bad_payload). Schemas live above
    # gossip, so the table with the checks is built there (inference/kinds.py); None: none.
    payload_check: PayloadCheck | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a kind needs a name")
        if self.priority < 0:
            raise ValueError(f"kind {self.name!r}: priority must be 0 or more, got {self.priority}")
        if self.payload_max_bytes is not None and self.payload_max_bytes < 0:
            raise ValueError(f"kind {self.name!r}: payload_max_bytes must be 0 or more")
        # Revoking a node removes its records. If one could have superseded another
        # author's record in a shared slot, that record would be gone too, and the state
        # would depend on whether the revocation came first (docs/state.md).
        if self.writer is Writer.NODE and not self.owner_keyed:
            raise ValueError(f"kind {self.name!r}: a kind nodes write must be keyed by its author")

    @property
    def node_record(self) -> bool:
        """One of a node's own records: refused from a revoked author, removed when it is revoked."""
        return self.writer is Writer.NODE


KindTable = Mapping[str, KindPolicy]
"""kind name -> its policy, in the order the kinds were given."""


def kind_table(policies: Iterable[KindPolicy]) -> KindTable:
    """A read-only table of the given policies; raises ValueError if two share a name."""
    table: dict[str, KindPolicy] = {}
    for policy in policies:
        if policy.name in table:
            raise ValueError(f"kind {policy.name!r} is in the table twice")
        table[policy.name] = policy
    return MappingProxyType(table)


def scope_class(scope: str) -> Scope | None:
    """The class of a record's scope string (`fleet`, `region:<name>`), or None if it is neither."""
    if scope == FLEET_SCOPE:
        return Scope.FLEET
    if (
        scope.startswith(REGION_SCOPE_PREFIX)
        and 0 < len(scope) - len(REGION_SCOPE_PREFIX) <= REGION_MAX_CHARS
    ):
        return Scope.REGION
    return None


# Priority: revocations and grants first, then admissions, so that within a batch
# a node's admission is judged before the records it signs, and under a tight budget
# the records that decide who is trusted travel before the rest.
DEFAULT_KINDS: KindTable = kind_table(
    (
        KindPolicy(INVENTORY_KIND, Scope.REGION, Writer.NODE, owner_keyed=True, priority=5),
        KindPolicy(DESIRED_KIND, Scope.FLEET, Writer.OPERATOR, owner_keyed=False, priority=3),
        # Revocation is for ever: a revoked device needs a new identity.
        KindPolicy(
            REVOCATION_KIND, Scope.FLEET, Writer.ROOT_OPERATOR, owner_keyed=False, priority=0, deletable=False
        ),
        # Keyed by the granted key's id; a removal is a grant with active False, never a tombstone.
        KindPolicy(
            TRUST_KIND, Scope.FLEET, Writer.ROOT_OPERATOR, owner_keyed=False, priority=1, deletable=False
        ),
        # One record per leader: readers apply the newest term.
        KindPolicy(PLACEMENT_KIND, Scope.REGION, Writer.NODE, owner_keyed=True, priority=4),
        # Each node's replicas and their states (inference/replica_states.py): one per node.
        KindPolicy(REPLICAS_KIND, Scope.REGION, Writer.NODE, owner_keyed=True, priority=4),
        # Operator commands to placement (inference/operator_records.py): cordon and drain keyed
        # by node id (a tombstone makes the node schedulable again), rebalance keyed by region.
        KindPolicy(SCHEDULING_KIND, Scope.FLEET, Writer.OPERATOR, owner_keyed=False, priority=3),
        KindPolicy(REBALANCE_KIND, Scope.FLEET, Writer.OPERATOR, owner_keyed=False, priority=3),
        # Admissions end by revocation, never by deletion.
        KindPolicy(ADMISSION_KIND, Scope.REGION, Writer.NODE, owner_keyed=True, priority=2, deletable=False),
        # The network key's rotations (gossip/netkey.py): one slot, superseded by the next
        # epoch; names the key by its id only. Its schema is gossip's own, so it is checked here.
        KindPolicy(
            NETKEY_KIND,
            Scope.FLEET,
            Writer.ROOT_OPERATOR,
            owner_keyed=False,
            priority=1,
            deletable=False,
            payload_max_bytes=NETKEY_PAYLOAD_MAX_BYTES,
            payload_check=notice_problem,
        ),
        # An operator's re-seeding of a region's voters (gossip/votersreset.py): keyed by the
        # region, superseded by a later reset; its schema is gossip's own, so it is checked here.
        KindPolicy(
            VOTERS_RESET_KIND,
            Scope.FLEET,
            Writer.OPERATOR,
            owner_keyed=False,
            priority=3,
            deletable=False,
            payload_max_bytes=VOTERS_RESET_PAYLOAD_MAX_BYTES,
            payload_check=reset_problem,
        ),
        # Which network keys each node holds (gossip/keyholding.py), for `murmur keys list`:
        # one per node, signed by it; key ids only. Its schema is gossip's own.
        KindPolicy(
            KEYRING_KIND,
            Scope.REGION,
            Writer.NODE,
            owner_keyed=True,
            priority=5,
            payload_max_bytes=KEYRING_PAYLOAD_MAX_BYTES,
            payload_check=holding_problem,
        ),
    )
)
