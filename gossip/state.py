"""The signed, versioned state store with Scuttlebutt-style anti-entropy (sans-IO).

The store holds one record per slot `(kind, key)`: the greatest of every record
for that slot it has accepted, ordered by `(version, author, content hash,
signature)`. That order is total, so merging is a per-slot max: commutative,
associative and idempotent. Each record is verified once, on receipt (signature,
known and unrevoked author, allowed to write that kind and key, scope, limits);
anything else is dropped and counted by reason in `counters`, never raised.

Anti-entropy (docs/state.md has the reasoning):
- `digest()` maps each author to `(highest version held, fingerprint)`, the
  fingerprint being the XOR of a 64-bit hash of every record of that author the
  store holds. Records superseded by another author's record are simply no
  longer held, so they drop out of both numbers and never cause a resend loop.
- `missing_for(remote_digest, budget)` sends, per author whose entry differs,
  the records above the peer's highest version (what Scuttlebutt sends) and,
  only if the fingerprint of the records at or below it differs too, those as
  well: that repairs a gap left by a record pushed out of order, which a
  max-version digest alone would hide for ever.
- When everything does not fit the budget, half of the time the store fills it
  in priority order (revocations first) and half of the time from a random
  start, so no record is starved by others the peer keeps refusing.

What each kind may be (scope, writer, key, priority) is data: the `KindTable`
of gossip/kinds.py, given at construction.

gossip/state.py is long because its one verification path (`_admit`, whose order
fixes the drop reason counted) and the trust the store learns from the records it
holds (grants, admissions and their invite seats, revocations) depend on each
other's order; the rules about kinds themselves are in gossip/kinds.py.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gossip.admission import REFUSALS, Admission, admission_regions, check_admission
from gossip.codec import U64_MAX, DecodeError
from gossip.kinds import (
    ADMISSION_KIND,
    DEFAULT_KINDS,
    FLEET_SCOPE,
    REGION_SCOPE_PREFIX,
    REVOCATION_KIND,
    TRUST_KIND,
    KindPolicy,
    KindTable,
    Writer,
    scope_class,
)
from gossip.records import (
    PAYLOAD_MAX_BYTES,
    Record,
    content_hash,
    decode_record,
    encoded_size,
    field_problem,
    fingerprint,
    max_encoded_bytes,
    verify_record,
)
from gossip.trust import Trust, decode_grant, grant_problem

# What missing_for counts per record on top of its encoding: the msgpack bin header
# the record gets as one item of a list (5 bytes at most).
RECORD_FRAMING_BYTES = 5

REFUSALS_KEPT = 64  # admission refusals kept for the owner to report (drain_refusals)

DROP_REASONS = (
    "malformed",
    "oversized",
    "unknown_kind",
    "bad_scope",
    "out_of_scope",
    "unknown_author",
    "revoked_author",
    "not_allowed",
    "duplicate",
    "stale",
    "full",
    "bad_signature",
    "bad_payload",
    "undecodable",
    "bad_grant",
    *REFUSALS,
)

Digest = dict[str, tuple[int, int]]
"""author -> (highest version held, XOR of the fingerprints of the records held)."""

_Rank = tuple[int, str, bytes, bytes]


def in_scope(scope: str, region: str | None) -> bool:
    """Whether a node of `region` keeps a record of `scope`: fleet-wide ones and its own region's.

    region None keeps every region (a simulator's global view, tests).
    """
    return scope == FLEET_SCOPE or region is None or scope == REGION_SCOPE_PREFIX + region


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """The store's bounds."""

    records_max: int = 10_000
    payload_max_bytes: int = 16 * 1024
    delta_max_bytes: int = 256 * 1024  # the most missing_for ever returns, in bytes

    def __post_init__(self) -> None:
        if self.records_max < 1:
            raise ValueError(f"records_max must be at least 1, got {self.records_max}")
        if not 0 <= self.payload_max_bytes <= PAYLOAD_MAX_BYTES:
            raise ValueError(
                f"payload_max_bytes must be 0..{PAYLOAD_MAX_BYTES}, got {self.payload_max_bytes}"
            )
        # A record larger than any delta could never travel by anti-entropy.
        need = max_encoded_bytes(self.payload_max_bytes) + RECORD_FRAMING_BYTES
        if self.delta_max_bytes < need:
            raise ValueError(
                f"delta_max_bytes must hold the largest record ({need} bytes for payload_max_bytes="
                f"{self.payload_max_bytes}), got {self.delta_max_bytes}; raise it or lower payload_max_bytes"
            )


@dataclass(frozen=True, slots=True)
class _Entry:
    """A held record with what the store computed once, on acceptance."""

    record: Record
    rank: _Rank
    fingerprint: int
    size_bytes: int
    fleet: bool


def _remote_entry(remote: Mapping[str, tuple[int, int]], author: str) -> tuple[int, int] | None:
    # A peer's digest is untrusted input: anything malformed counts as "knows nothing".
    value = remote.get(author)
    if type(value) is not tuple or len(value) != 2:
        return None
    version, fp = value
    if (
        type(version) is not int
        or type(fp) is not int
        or not (0 <= version <= U64_MAX and 0 <= fp <= U64_MAX)
    ):
        return None
    return (version, fp)


class StateStore:
    """Signed records by slot, merged by a total order, synchronised by per-author digests."""

    def __init__(
        self,
        trust: Trust,
        rng: random.Random,
        *,
        limits: StoreLimits = StoreLimits(),  # frozen, so one shared default is safe
        region: str | None = None,
        kinds: KindTable = DEFAULT_KINDS,
    ) -> None:
        """An empty store of the given kinds; region None keeps every region's records, else
        only its own and fleet ones."""
        self._trust = trust
        self._rng = rng
        self._limits = limits
        self._region = region
        self._kinds = kinds
        # Records of unknown kinds (dropped anyway) come last in a batch.
        self._unknown_priority = max((k.priority for k in kinds.values()), default=-1) + 1
        self._slots: dict[tuple[str, str], _Entry] = {}
        self._by_author: dict[str, dict[tuple[str, str], _Entry]] = {}
        self._by_kind: dict[str, dict[str, _Entry]] = {}  # kind -> key -> entry (the same entries)
        self._digests: dict[bool, Digest] = {}  # cache by fleet_only, cleared on every change
        # Keys learned from held records: operators granted by `trust` records (active or
        # not: what a removed operator signed stays valid) and nodes proven by admissions.
        self._granted: dict[str, tuple[bytes, bool, int]] = {}  # id -> (key, active, cutoff version)
        self._admitted: dict[str, bytes] = {}
        self._refusals: list[tuple[str, str]] = []
        # invite_wrong_region refusals: node id -> (region it claims, its invite's), for the message.
        self._refused_regions: dict[str, tuple[str, str]] = {}
        self._verified_invites: dict[bytes, None] = {}
        # Invites of limited uses: invite signature -> its seats, the `uses` earliest
        # (admitted_at, node id) ever seen (see _seat_free); and devices displaced, to expel.
        self._invite_seats: dict[bytes, list[tuple[int, str]]] = {}
        self._displaced: list[str] = []
        self._counters: dict[str, int] = {
            "accepted": 0,
            "removed_revoked": 0,
            "removed_used_up": 0,
            "removed_by_cutoff": 0,
        }
        self._counters.update({f"drop_{reason}": 0 for reason in DROP_REASONS})

    def __len__(self) -> int:
        """Records held, tombstones included."""
        return len(self._slots)

    @property
    def counters(self) -> dict[str, int]:
        """Accepted records, records removed by revocation, and drops by reason (drop_<reason>)."""
        return dict(self._counters)

    @property
    def limits(self) -> StoreLimits:
        """The bounds this store was built with."""
        return self._limits

    def _priority(self, kind: str) -> int:
        policy = self._kinds.get(kind)
        return policy.priority if policy is not None else self._unknown_priority

    # --- receiving ------------------------------------------------------------------

    def merge(self, now: float, records: Iterable[Record]) -> list[Record]:
        """Verify and merge records; returns those that are new and still held, to gossip on.

        `now` is the driver's clock; records carry no expiry yet, so it is unused today.
        """
        accepted: list[tuple[int, _Entry]] = []
        batch = list(records)
        order = [self._priority(r.kind) if isinstance(r, Record) else 0 for r in batch]
        for i in sorted(range(len(batch)), key=order.__getitem__):
            r = batch[i]
            entry_or_reason = self._admit(r)
            if isinstance(entry_or_reason, str):
                self._counters[f"drop_{entry_or_reason}"] += 1
                if entry_or_reason in REFUSALS and isinstance(r, Record):
                    self._refusals.append((r.key, entry_or_reason))
                    del self._refusals[:-REFUSALS_KEPT]
                    if entry_or_reason == "invite_wrong_region":
                        self._note_refused_regions(r)
            else:
                accepted.append((i, entry_or_reason))
        # A record accepted early in a batch may have been superseded or revoked by a later one.
        accepted.sort(key=lambda item: item[0])
        return [e.record for _, e in accepted if self._slots.get(e.record.slot) is e]

    def merge_encoded(self, now: float, blobs: Iterable[bytes]) -> list[Record]:
        """Decode (gossip.records wire form) and merge; undecodable blobs are dropped and counted."""
        decoded: list[Record] = []
        for blob in blobs:
            try:
                decoded.append(decode_record(blob))
            except DecodeError:
                self._counters["drop_undecodable"] += 1
        return self.merge(now, decoded)

    def restore(self, records: Iterable[Record]) -> int:
        """Load persisted records (at start), verifying each again; returns how many are held."""
        return len(self.merge(0.0, records))

    def _admit(self, r: Record) -> _Entry | str:
        """The accepted entry, or the reason to drop r. Cheap checks first, the signature last."""
        if not isinstance(r, Record):
            return "malformed"
        problem = field_problem(r)
        if problem is not None:
            return "oversized" if problem == "oversized" else "malformed"
        if len(r.payload) > self._limits.payload_max_bytes:
            return "oversized"
        policy = self._kinds.get(r.kind)
        if policy is None:
            return "unknown_kind"
        if policy.payload_max_bytes is not None and len(r.payload) > policy.payload_max_bytes:
            return "oversized"
        if scope_class(r.scope) != policy.scope:
            return "bad_scope"
        if not in_scope(r.scope, self._region):
            return "out_of_scope"
        if policy.node_record and self.is_revoked(r.author):
            return "revoked_author"  # revocation is of devices: it never touches operator records
        if r.kind == ADMISSION_KIND:  # self-certifying: the key is in the payload
            if r.deleted and not policy.deletable:
                return "not_allowed"
            checked = check_admission(r, self, verified=self._verified_invites)
            if isinstance(checked, str):
                return checked
            admission: Admission | None = checked
            public_key: bytes | None = checked.public_key
        else:
            admission = None
            public_key = self.public_key(r.author)
            if public_key is None:
                return "unknown_author"
            if not self._may_write(r.author, policy, r.key, r.version):
                return "not_allowed"
        if policy.owner_keyed and r.key != r.author:
            return "not_allowed"
        if r.deleted and not policy.deletable:  # (a `trust` tombstone grants nothing: a bad grant)
            return "bad_grant" if r.kind == TRUST_KIND else "not_allowed"
        # A self-revocation would remove the very record that revokes.
        if r.kind == REVOCATION_KIND and r.key == r.author:
            return "not_allowed"
        if r.kind == TRUST_KIND and grant_problem(r):
            return "bad_grant"
        current = self._slots.get(r.slot)
        if current is not None and current.record == r:
            return "duplicate"  # the common case in gossip: no second verification
        rank: _Rank = (r.version, r.author, content_hash(r), r.signature)
        if current is not None and rank < current.rank:
            return "stale"
        if current is None and len(self._slots) >= self._limits.records_max:
            return "full"
        seated = admission is not None and admission.invite.uses > 0
        if admission is not None and seated:
            if r.version != 1:
                return "invite_reused"  # one admission per device under an invite of limited uses
            if not self._seat_free(r.key, admission):
                return "invite_used_up"
        if public_key is None or not verify_record(r, public_key):
            return "bad_signature"
        # After the signature: only a key holder can make a node parse a payload, and a
        # valid signature on a payload that is not its kind's never spreads from here.
        if not r.deleted and policy.payload_check is not None and policy.payload_check(r.payload) is not None:
            return "bad_payload"
        entry = _Entry(r, rank, fingerprint(r), encoded_size(r), r.scope == FLEET_SCOPE)
        self._install(entry)
        if admission is not None:
            self._admitted[r.key] = admission.public_key
            if seated:
                self._take_seat(r.key, admission)
        self._counters["accepted"] += 1
        if r.kind == REVOCATION_KIND:
            self._counters["removed_revoked"] += self._remove_node_records(r.key)
        elif r.kind == TRUST_KIND:
            self._apply_cutoff(r.key)
        return entry

    def _install(self, entry: _Entry) -> None:
        slot = entry.record.slot
        old = self._slots.get(slot)
        if old is not None:
            self._unindex(old)
        self._slots[slot] = entry
        self._by_author.setdefault(entry.record.author, {})[slot] = entry
        self._by_kind.setdefault(slot[0], {})[slot[1]] = entry
        self._digests.clear()
        self._learn(entry.record)

    def _learn(self, r: Record) -> None:
        """Keep the operator key a held `trust` record grants (admissions: see _admit)."""
        if r.kind == TRUST_KIND:
            self._granted[r.key] = decode_grant(r.payload)

    def _forget(self, r: Record) -> None:
        if r.kind == TRUST_KIND:
            self._granted.pop(r.key, None)
        elif r.kind == ADMISSION_KIND:
            self._admitted.pop(r.key, None)

    def _seat_free(self, node_id: str, admission: Admission) -> bool:
        """Whether node_id is among the `uses` earliest devices ever seen under this invite.

        An invite's seats are a ledger of the `uses` earliest (admitted_at, node id)
        of every valid admission received under it, revoked devices included: it
        only ever moves to earlier ranks, so the devices it admits are a pure
        function of the set of admissions received, whatever their order. A device
        pushed out of the ledger by an earlier one is displaced everywhere; a seat
        is never freed (a revoked device keeps it; issue a new invite)."""
        ledger = self._invite_seats.get(admission.invite.signature, [])
        rank = (admission.admitted_at_s, node_id)
        return rank in ledger or len(ledger) < admission.invite.uses or rank < ledger[-1]

    def _take_seat(self, node_id: str, admission: Admission) -> None:
        ledger = self._invite_seats.setdefault(admission.invite.signature, [])
        rank = (admission.admitted_at_s, node_id)
        if rank in ledger:
            return
        bisect.insort(ledger, rank)
        if len(ledger) > admission.invite.uses:
            _at, bumped = ledger.pop()
            if bumped in self._admitted:
                # An earlier admission under a used-up invite displaces the latest one.
                self._counters["removed_used_up"] += self._remove_node_records(bumped)
                self._displaced.append(bumped)
                self._refusals.append((bumped, "invite_used_up"))
                del self._refusals[:-REFUSALS_KEPT]

    def _apply_cutoff(self, operator: str) -> None:
        """A removed operator's records (of kinds operators write: `desired`) above its cutoff are
        dropped, wherever they came first."""
        grant = self._granted.get(operator)
        if grant is None or grant[1]:
            return
        cutoff = grant[2]
        late = [
            e
            for e in self._by_author.get(operator, {}).values()
            if self._kinds[e.record.kind].writer is Writer.OPERATOR and e.record.version > cutoff
        ]
        self._counters["removed_by_cutoff"] += self._drop(late)

    def _unindex(self, entry: _Entry) -> None:
        mine = self._by_author[entry.record.author]
        del mine[entry.record.slot]
        if not mine:
            del self._by_author[entry.record.author]
        kind, key = entry.record.slot
        of_kind = self._by_kind[kind]
        del of_kind[key]
        if not of_kind:
            del self._by_kind[kind]
        self._forget(entry.record)

    def _remove_node_records(self, author: str) -> int:
        """Remove what a device wrote (its admission, inventory, placement); returns how many."""
        return self._drop(
            [e for e in self._by_author.get(author, {}).values() if self._kinds[e.record.kind].node_record]
        )

    def _drop(self, entries: list[_Entry]) -> int:
        """Remove held entries (revoked, displaced, past a cutoff); returns how many."""
        for e in entries:
            del self._slots[e.record.slot]
            self._unindex(e)
        if entries:
            self._digests.clear()
        return len(entries)

    # --- who is who (the trust the store adds to its base) -------------------------------

    @property
    def cluster_id(self) -> str:
        """The base trust's cluster id."""
        return self._trust.cluster_id

    def is_operator(self, author: str) -> bool:
        """A root operator, or a key a held `trust` record granted (active or removed)."""
        return self._trust.is_operator(author) or author in self._granted

    def is_root_operator(self, author: str) -> bool:
        """An operator key of the base trust (the join token's)."""
        return self._trust.is_operator(author)

    def is_active_operator(self, author: str) -> bool:
        """An operator whose new commands are taken: root, or granted and not removed."""
        if self._trust.is_operator(author):
            return True
        grant = self._granted.get(author)
        return grant is not None and grant[1]

    def operators(self) -> dict[str, tuple[bytes, bool]]:
        """Granted operator keys: key id -> (public key, active), sorted (root keys not included)."""
        return {author: (g[0], g[1]) for author, g in sorted(self._granted.items())}

    def public_key(self, author: str) -> bytes | None:
        """The key to verify author's records: base trust, then granted operators, then admitted nodes."""
        key = self._trust.public_key(author)
        if key is not None:
            return key
        grant = self._granted.get(author)
        if grant is not None:
            return grant[0]
        return self._admitted.get(author)

    def is_admitted(self, node_id: str) -> bool:
        """True if an admission record of node_id is held (revocation removes it for good)."""
        return node_id in self._admitted

    def admitted_key(self, node_id: str) -> bytes | None:
        """An admitted node's public key, or None."""
        return self._admitted.get(node_id)

    def _note_refused_regions(self, r: Record) -> None:
        regions = admission_regions(r)
        if regions is None:
            return
        self._refused_regions.pop(r.key, None)
        self._refused_regions[r.key] = regions
        while len(self._refused_regions) > REFUSALS_KEPT:
            del self._refused_regions[next(iter(self._refused_regions))]

    def refused_regions(self, node_id: str) -> tuple[str, str] | None:
        """(the region it claims, its invite's region) of node_id's last `invite_wrong_region`
        refusal (the last REFUSALS_KEPT nodes are kept), or None."""
        return self._refused_regions.get(node_id)

    def drain_refusals(self) -> list[tuple[str, str]]:
        """(node id, reason) of admissions refused since the last call (at most REFUSALS_KEPT)."""
        out, self._refusals = self._refusals, []
        return out

    def drain_displaced(self) -> list[str]:
        """Devices displaced from an invite's seats since the last call (all of them: the
        owner must expel each from its pools)."""
        out, self._displaced = self._displaced, []
        return out

    def _may_write(self, author: str, policy: KindPolicy, key: str, version: int) -> bool:
        """By the kind's writer (gossip/kinds.py). Admitted nodes: their own records of node kinds.
        Root operators: every operator kind (revocations: of any key but a root one). Granted
        operators: Writer.OPERATOR kinds (a removed one: only at versions up to its cutoff).

        Root operators (the base trust's) are never revoked and their grants are never
        deleted, revocation touches device records only, and a removal's cutoff is
        applied to records held as well as to records arriving: a record's fate never
        depends on the order records arrive in (docs/state.md, "Who may write").
        """
        if policy.writer is Writer.NODE and author in self._admitted:
            return key == author  # (checked first: a device key may also be granted as an operator)
        if self._trust.is_operator(author):
            if policy.name == REVOCATION_KIND:
                return not self._trust.is_operator(key)
            return policy.writer is not Writer.NODE
        grant = self._granted.get(author)
        if grant is not None:
            return policy.writer is Writer.OPERATOR and (grant[1] or version <= grant[2])
        return self._trust.may_write(author, policy.name, key)

    # --- reading --------------------------------------------------------------------

    def get(self, kind: str, key: str) -> Record | None:
        """The record held in slot (kind, key), tombstone included, or None."""
        entry = self._slots.get((kind, key))
        return entry.record if entry is not None else None

    def records(self, kind: str | None = None, *, include_deleted: bool = False) -> list[Record]:
        """Held records (of one kind, or all), sorted by (kind, key); tombstones only if asked."""
        if kind is not None:  # read often (placement, every wake-up): sort that kind's keys only
            of_kind = self._by_kind.get(kind, {})
            return [e.record for _, e in sorted(of_kind.items()) if include_deleted or not e.record.deleted]
        return [
            e.record
            for slot, e in sorted(self._slots.items())
            if (kind is None or slot[0] == kind) and (include_deleted or not e.record.deleted)
        ]

    def for_scope(self, region: str | None) -> list[Record]:
        """Held records a node of `region` keeps (fleet-wide and that region's), tombstones included."""
        return [e.record for _, e in sorted(self._slots.items()) if in_scope(e.record.scope, region)]

    def snapshot(self) -> list[Record]:
        """Every held record, tombstones included, sorted by slot: what to persist."""
        return [e.record for _, e in sorted(self._slots.items())]

    def revoked(self) -> list[str]:
        """Author ids revoked by a revocation record held here, sorted."""
        return sorted(key for kind, key in self._slots if kind == REVOCATION_KIND)

    def is_revoked(self, author: str) -> bool:
        """True if a revocation record or the trust refuses the author."""
        return (REVOCATION_KIND, author) in self._slots or self._trust.is_revoked(author)

    def latest_version(self, author: str) -> int | None:
        """The highest version of the author's records held here, or None."""
        entries = self._by_author.get(author)
        return max(e.record.version for e in entries.values()) if entries else None

    # --- anti-entropy ---------------------------------------------------------------

    def digest(self, *, fleet_only: bool = False) -> Digest:
        """author -> (highest version held, XOR of fingerprints held), sorted by author.

        fleet_only digests only fleet-scoped records: what gateways compare in the fleet pool.
        """
        cached = self._digests.get(fleet_only)
        if cached is None:
            cached = {}
            for author in sorted(self._by_author):
                version, fp = -1, 0
                for e in self._by_author[author].values():
                    if e.fleet or not fleet_only:
                        version = max(version, e.record.version)
                        fp ^= e.fingerprint
                if version >= 0:
                    cached[author] = (version, fp)
            self._digests[fleet_only] = cached
        return dict(cached)

    def missing_for(
        self, remote: Mapping[str, tuple[int, int]], budget_bytes: int, *, fleet_only: bool = False
    ) -> list[Record]:
        """Records a peer with digest `remote` lacks, within budget_bytes, oldest first per author.

        Each record costs encoded_size + RECORD_FRAMING_BYTES; the budget is capped at
        limits.delta_max_bytes.
        """
        budget = min(budget_bytes, self._limits.delta_max_bytes)
        if budget <= 0:
            return []
        candidates: list[tuple[tuple[int, int, int, str], _Entry]] = []
        for author, mine in self.digest(fleet_only=fleet_only).items():
            theirs = _remote_entry(remote, author)
            if theirs == mine:
                continue
            entries = sorted(
                (e for e in self._by_author[author].values() if e.fleet or not fleet_only),
                key=lambda e: e.rank,
            )
            their_version = theirs[0] if theirs is not None else -1
            newer = [e for e in entries if e.record.version > their_version]
            older = [e for e in entries if e.record.version <= their_version]
            prefix_fp = 0
            for e in older:
                prefix_fp ^= e.fingerprint
            if theirs is not None and prefix_fp == theirs[1]:
                older = []  # the peer holds exactly these: nothing to repair
            for tier, tier_entries in ((0, newer), (1, older)):
                for age, e in enumerate(tier_entries):
                    priority = self._kinds[e.record.kind].priority
                    candidates.append(((tier, priority, age, author), e))
        candidates.sort(key=lambda c: c[0])
        chosen = self._fill([e for _, e in candidates], budget)
        return [e.record for e in sorted(chosen, key=lambda e: (e.record.author, e.rank))]

    def _fill(self, entries: Sequence[_Entry], budget_bytes: int) -> list[_Entry]:
        if sum(e.size_bytes + RECORD_FRAMING_BYTES for e in entries) <= budget_bytes:
            return list(entries)
        # Over budget. In priority order alone, records the peer keeps refusing (it holds
        # better ones we lack) could fill every delta for ever; a random start gives every
        # record a chance each round.
        n = len(entries)
        start = 0 if self._rng.random() < 0.5 else self._rng.randrange(n)
        out: list[_Entry] = []
        used_bytes = 0
        for i in range(n):
            e = entries[(start + i) % n]
            cost_bytes = e.size_bytes + RECORD_FRAMING_BYTES
            if used_bytes + cost_bytes <= budget_bytes:
                out.append(e)
                used_bytes += cost_bytes
        return out
