"""What the election knows of its region pool: who is live, stable, suspect or gone (pure).

Fed by `MemberChanged` events of the region pool and read through
`ElectionPeers.live_members()` (members restored at start emit no events).
Voters are chosen among *stable* members (alive here for `stable_after_s`, not
suspect) and removed when *gone* (confirmed dead or left).
"""

from __future__ import annotations

from collections.abc import Callable

from gossip.events import MemberChanged, MemberState

GONE_KEPT = 4096  # ids remembered as dead or left (bounded: a region can churn)


class RegionView:
    """One node's view of its region pool, for choosing voters and founding."""

    def __init__(self, node_id: str, live: Callable[[], list[str]], now: float) -> None:
        self.node_id = node_id
        self._live = live
        self._started_s = now
        self._alive_since: dict[str, float] = {}
        self._suspect: dict[str, None] = {}
        self._gone: dict[str, None] = {}
        self.changed_s = now  # when the pool last changed (founding waits for a quiet view)

    def observe(self, now: float, event: MemberChanged) -> bool:
        """Take one event of the region pool; True if a member newly came alive."""
        node_id = event.node_id
        if node_id == self.node_id:
            return False
        self.changed_s = now
        if event.state == MemberState.ALIVE:
            self._suspect.pop(node_id, None)
            self._gone.pop(node_id, None)
            if node_id in self._alive_since:
                return False
            self._alive_since[node_id] = now
            return True
        if event.state == MemberState.SUSPECT:
            self._suspect[node_id] = None
            return False
        self._alive_since.pop(node_id, None)
        self._suspect.pop(node_id, None)
        self._gone[node_id] = None
        if len(self._gone) > GONE_KEPT:
            del self._gone[next(iter(self._gone))]
        return False

    def live(self) -> list[str]:
        """The other live members, in id order."""
        return [m for m in self._live() if m != self.node_id]

    def live_with_me(self) -> list[str]:
        return sorted([*self.live(), self.node_id])

    def stable(self, now: float, stable_after_s: float) -> list[str]:
        """Live members (this node included) alive here for stable_after_s and not suspect."""
        out = [self.node_id]
        for m in self.live():
            since = self._alive_since.get(m, self._started_s)
            if m not in self._suspect and now - since >= stable_after_s:
                out.append(m)
        return sorted(out)

    def is_gone(self, node_id: str, now: float, gone_after_s: float) -> bool:
        """Confirmed dead or left; or, for members we never had news of, absent for gone_after_s."""
        if node_id == self.node_id:
            return False
        if node_id in self._gone:
            return True
        live = node_id in self._alive_since or node_id in self._suspect or node_id in self.live()
        return not live and now - self._started_s >= gone_after_s
