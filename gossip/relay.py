"""How the gossip layer spreads what it carries for the fleet (sans-IO).

Three ways, by what is carried:
- an epidemic (`spread`): queued for piggybacking in each pool given and pushed
  at once to a few random members of each; fleet-wide broadcasts, operator
  records and a joiner's admission travel so;
- de-duplication and the recent past of fleet-wide broadcasts (`BroadcastLog`),
  so each is delivered once and a new gateway carries on what its region sent
  while it had none;
- the second sending of urgent region records (`RepeatQueue`): the author sends
  a region record to every member, and an urgent one once more a little later.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from gossip import codec
from gossip.membership import Membership

# Fleet-wide broadcasts remembered for de-duplication.
SEEN_BROADCASTS_MAX = 8192
# A new gateway passes on to the fleet the broadcasts of this recent past
# (a broadcast sent while a region had no gateway yet still leaves the region).
RECENT_BROADCASTS_MAX = 64
RECENT_BROADCASTS_S = 60.0
# Region records of its own an author keeps for their second sending (region_record_repeat_s).
RECORD_REPEATS_MAX = 64


def spread(
    now: float,
    pools: Sequence[Membership | None],
    msg: codec.UserBroadcast | codec.RecordGossip,
    key: str | None,
) -> None:
    """Queue msg for piggybacked gossip in every pool given, and push it to a few members of each."""
    for pool in pools:
        if pool is None:
            continue
        pool.queue_user(msg, key)
        for m in pool.gossip_targets(pool.config.gossip_nodes, now):
            pool.send_direct(now, m.addr, msg)


class BroadcastLog:
    """Fleet-wide broadcasts seen (for de-duplication) and those of the recent past."""

    # One per node: slots, not a dict per instance (a simulation holds thousands of nodes).
    __slots__ = ("_recent", "_seen")

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._recent: list[tuple[float, codec.UserBroadcast]] = []

    def first_sight(self, now: float, msg: codec.UserBroadcast) -> bool:
        """True the first time msg is seen (it is then remembered and kept as recent)."""
        key = (msg.origin_id, msg.seq)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > SEEN_BROADCASTS_MAX:
            self._seen.popitem(last=False)
        self._recent.append((now, msg))
        while self._recent and (
            len(self._recent) > RECENT_BROADCASTS_MAX or now - self._recent[0][0] > RECENT_BROADCASTS_S
        ):
            self._recent.pop(0)
        return True

    def recent(self) -> list[codec.UserBroadcast]:
        """The broadcasts of the recent past, oldest first."""
        return [msg for _t, msg in self._recent]


class RepeatQueue:
    """Urgent region records of our own, due for their second sending to every member."""

    # One per node: slots, not a dict per instance (a simulation holds thousands of nodes).
    __slots__ = ("due",)

    def __init__(self) -> None:
        # key -> (when, message); read its truth to know if any is pending (cheap, per timer).
        self.due: dict[str, tuple[float, codec.RecordGossip]] = {}

    def cancel(self, key: str) -> None:
        """A newer version, urgent or not, cancels the older one's repeat."""
        self.due.pop(key, None)

    def schedule(self, key: str, due_s: float, msg: codec.RecordGossip) -> bool:
        """Send msg again at due_s; False if the oldest repeat had to be dropped to make room."""
        self.due[key] = (due_s, msg)
        if len(self.due) > RECORD_REPEATS_MAX:
            del self.due[next(iter(self.due))]
            return False
        return True

    def next_deadline(self) -> float:
        return min((due_s for due_s, _msg in self.due.values()), default=float("inf"))

    def pop_due(self, now: float) -> list[codec.RecordGossip]:
        """The repeats due at now, in the order they were scheduled."""
        due = [key for key, (due_s, _msg) in self.due.items() if due_s <= now]
        return [self.due.pop(key)[1] for key in due]
