"""How far one deployment's replicas are in one region, read for `deploy --wait` and `drain --wait`.

A region's placement (GET /v1/placements?region=R at the asked node, forwarded) gives each
replica's node and state, the ready/desired counts and the replicas no node can take with
why. A replica's own node says more (its API address comes from the member list the wait
already read): its model host's row (GET /v1/placements there, `models`) tells whether the
replica serves the wanted artifact (a new version loads while the old one keeps serving
and stays `ready`) and why it failed, and GET /v1/transfers the bytes it has fetched.
At most REPLICA_NODES_ASKED_MAX nodes are asked per region and poll; the others count as
their region's placement reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh.cli.client import CliError, NodeClient

REPLICA_NODES_ASKED_MAX = 32
REPLICA_NODE_TIMEOUT_S = 2.0  # one slow replica node must not hold up the whole poll for long


@dataclass(frozen=True, slots=True)
class Problem:
    """A replica that will not become ready by itself: `key` names it across polls."""

    key: str
    text: str


@dataclass(slots=True)
class RegionRollout:
    """One region's replicas of one deployment, as one poll read them."""

    region: str
    ready: int = 0  # ready and serving the wanted artifact
    desired: int = 0
    states: dict[str, int] = field(default_factory=dict)  # replicas by state (`updating`: old version)
    problems: list[Problem] = field(default_factory=list)
    bytes_done: int = 0  # of the wanted artifact, over the replica nodes' transfers
    bytes_total: int = 0
    error: str | None = None  # the region's placement could not be read this poll

    @property
    def done(self) -> bool:
        return self.error is None and self.ready >= self.desired and not self.problems

    def line(self) -> str:
        """`region r1: 1/2 replicas ready (1 loading)`, for the final report."""
        if self.error is not None:
            return f"region {self.region}: placement not read ({self.error})"
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items()) if s != "ready")
        return f"region {self.region}: {self.ready}/{self.desired} replicas ready" + (
            f" ({states})" if states else ""
        )


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _own_model_row(api: str, name: str) -> dict[str, Any] | None:
    """The replica node's model-host row for deployment `name`, or None if it does not say."""
    try:
        doc = NodeClient(api, REPLICA_NODE_TIMEOUT_S).get("/v1/placements")
    except CliError:
        return None
    models = doc.get("models") if isinstance(doc, dict) else None
    return next((m for m in _list(models) if m.get("deployment") == name), None)


def _transfer(api: str, sha256: str) -> dict[str, Any] | None:
    """The replica node's newest transfer of `sha256`, or None."""
    try:
        rows = NodeClient(api, REPLICA_NODE_TIMEOUT_S).get("/v1/transfers")
    except CliError:
        return None
    return next((t for t in _list(rows) if t.get("sha256") == sha256), None)


def region_rollout(
    node: NodeClient, region: str, name: str, sha256: str | None, apis: Mapping[str, str]
) -> RegionRollout:
    """Where deployment `name` (artifact `sha256`; None: not known, so neither versions nor bytes
    are checked) stands in `region`; `apis`: the region's alive members' API addresses by node id."""
    try:
        doc = node.get("/v1/placements", {"region": region})
    except CliError as exc:
        return RegionRollout(region, error=str(exc))
    if not isinstance(doc, dict):
        return RegionRollout(region, error="the answer is not a placement")
    return rollout_of(doc, region, name, sha256, apis)


def rollout_of(
    doc: Mapping[str, Any], region: str, name: str, sha256: str | None, apis: Mapping[str, str]
) -> RegionRollout:
    """Deployment `name` in `region`'s placement `doc` (GET /v1/placements), its replica nodes
    asked at `apis` (none: the placement's states as they are)."""
    out = RegionRollout(region)
    counts = next((c for c in _list(doc.get("deployments")) if c.get("deployment") == name), None)
    out.desired = int(counts.get("desired", 0)) if counts and isinstance(counts.get("desired"), int) else 0
    for u in _list(doc.get("unplaced")):
        if u.get("deployment") == name:
            slot = f"{name}/{u.get('slot')}"
            out.problems.append(
                Problem(
                    f"unplaced {region} {slot}",
                    f"region {region}: {slot} cannot be placed: {u.get('reason')}",
                )
            )
    replicas = [r for r in _list(doc.get("replicas")) if r.get("deployment") == name]
    for asked, replica in enumerate(replicas):
        state, node_id = str(replica.get("state")), str(replica.get("node"))
        api = apis.get(node_id) if asked < REPLICA_NODES_ASKED_MAX else None
        model = _own_model_row(api, name) if api else None
        old = model is not None and (model.get("sha256") != sha256 or "next_version" in model)
        if state == "ready" and sha256 is not None and old:
            state = "updating"  # still serving the version before
        out.states[state] = out.states.get(state, 0) + 1
        if state == "ready":
            out.ready += 1
        elif state == "failed":
            error = (model or {}).get("error") or replica.get("error") or "its node gives no reason"
            slot = f"{name}/{replica.get('slot')}"
            out.problems.append(
                Problem(
                    f"failed {region} {slot} {node_id}",
                    f"region {region}: {slot} on {node_id} failed: {error}",
                )
            )
        transfer = _transfer(api, sha256) if api and sha256 is not None else None
        if transfer is not None and isinstance(transfer.get("size_bytes"), int):
            done = transfer.get("bytes_done")
            out.bytes_done += done if isinstance(done, int) else 0
            out.bytes_total += int(transfer["size_bytes"])
            if transfer.get("state") in ("waiting", "failed") and state != "ready":
                fetch = f"fetch {transfer.get('state')}"  # no holder known yet, or a failed fetch
                out.states[fetch] = out.states.get(fetch, 0) + 1
    return out


class ProblemWatch:
    """Names each problem once, as soon as it is seen, and says which stayed `settle_s`."""

    def __init__(self, note: Callable[[str], None], prefix: str, settle_s: float) -> None:
        self.note = note
        self.prefix = prefix
        self.settle_s = settle_s
        self._since: dict[str, float] = {}

    def stuck(self, problems: Sequence[Problem], now: float) -> list[str]:
        """The texts of `problems` seen in every poll for `settle_s` or more."""
        current = {p.key: p for p in problems}
        for key in [k for k in self._since if k not in current]:
            del self._since[key]  # gone: a passing one, counted afresh if it comes back
        for key, p in current.items():
            if key not in self._since:
                self._since[key] = now
                self.note(f"{self.prefix}{p.text}")
        return [p.text for k, p in current.items() if now - self._since[k] >= self.settle_s]
