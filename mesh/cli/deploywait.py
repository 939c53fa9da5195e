"""`deploy --wait` (and `scale --wait`): until the deployment is held everywhere, then ready.

First every alive node of every reachable region must hold the desired record at the
version sent (or newer); then, in every reachable region, the deployment's replicas must be
ready and serve its artifact (mesh/cli/readiness.py). A progress line on stderr shows the
nodes holding it, then the replicas ready against desired and the artifact bytes the replica
nodes have fetched (mesh/cli/progress.py). A replica that cannot be placed or that failed is
named as soon as it is seen; if it stays so for PROBLEM_SETTLE_S the wait ends with exit 1,
since it will not become ready without a change. Ctrl-C stops the waiting, not the rollout.
"""

from __future__ import annotations

import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from mesh.cli.client import EXIT_INTERRUPTED, EXIT_UNREACHABLE, CliError, CliTimeout, NodeClient, heard
from mesh.cli.progress import Figures, Progress
from mesh.cli.readiness import ProblemWatch, RegionRollout, region_rollout

WAIT_POLL_S = 0.2
READY_POLL_S = 0.5  # each poll asks every replica node twice: a slower pace than the record's
WAIT_DEFAULT_TIMEOUT_S = 60.0
# --wait gives a region that does not answer this long, once every reachable region
# holds the deployment, before it reports and exits EXIT_UNREACHABLE: long enough to
# ride out one failed forward, short enough not to hold up a deploy to an offline site.
UNREACHABLE_SETTLE_S = 5.0
# A replica unplaced or failed this long ends the wait (exit 1): a leader's next placement or
# a node's fresh report clears a passing one well within it.
PROBLEM_SETTLE_S = 5.0


@dataclass(frozen=True, slots=True)
class RegionView:
    """One region as the asked node sees it this poll."""

    region: str
    reachable: bool
    apis: dict[str, str]  # alive members' API addresses by node id (reachable regions)
    heard_unix: float | None = None  # unreachable: when the asked node last heard its members
    members_then: int = 0  # unreachable: how many members it had then


def region_views(base: str) -> list[RegionView]:
    """Every region the asked node knows (its own first): reachable with its alive members'
    APIs, or unreachable with when it was last heard. CliError if the asked node does not answer."""
    node = NodeClient(base)
    health = node.get("/v1/health")
    own_region = str(health.get("region"))
    others = sorted(str(r) for r in health.get("regions", {}) if r != own_region)
    views: list[RegionView] = []
    for region in [own_region, *others]:
        params = None if region == own_region else {"region": region}
        status, rows = node.exchange("GET", "/v1/nodes", params=params)
        rows = [r for r in rows if isinstance(r, dict)] if status == 200 and isinstance(rows, list) else None
        if rows is None or any(r.get("last_known") for r in rows):
            heard_unix = rows[0].get("last_heard_unix") if rows else None
            views.append(
                RegionView(
                    region,
                    reachable=False,
                    apis={},
                    heard_unix=heard_unix if isinstance(heard_unix, int | float) else None,
                    members_then=len(rows or ()),
                )
            )
            continue
        apis = {str(m["id"]): str(m["api"]) for m in rows if m.get("state") == "alive" and m.get("api")}
        views.append(RegionView(region, reachable=True, apis=apis))
    return views


def _holds(api: str, name: str, version: int) -> bool:
    try:
        status, doc = NodeClient(api).exchange("GET", f"/v1/deployments/{urllib.parse.quote(name, safe='')}")
    except CliError:
        return False
    return status == 200 and isinstance(doc, dict) and int(doc.get("version", -1)) >= version


def wanted_sha256(base: str, name: str) -> str | None:
    """The artifact sha256 of the deployment `name` the asked node holds, or None."""
    try:
        status, doc = NodeClient(base).exchange("GET", f"/v1/deployments/{urllib.parse.quote(name, safe='')}")
    except CliError:
        return None
    manifest = doc.get("manifest") if status == 200 and isinstance(doc, dict) else None
    artifact = manifest.get("artifact") if isinstance(manifest, dict) else None
    sha256 = artifact.get("sha256") if isinstance(artifact, dict) else None
    return sha256 if isinstance(sha256, str) else None


def _report(views: Sequence[RegionView], pending: dict[str, list[str]]) -> str:
    lines = []
    for view in views:
        if view.reachable:
            missing = pending.get(view.region, [])
            held = len(view.apis) - len(missing)
            state = (
                f"held by all {len(view.apis)} alive nodes"
                if not missing
                else f"held by {held} of {len(view.apis)} alive nodes; missing: {', '.join(missing)}"
            )
        else:
            when = (
                f"last heard {heard(view.heard_unix)} with {view.members_then} members"
                if view.heard_unix is not None
                else "not heard since the asked node started"
            )
            state = f"unreachable ({when}); it gets the deployment when it is reachable again"
        lines.append(f"  region {view.region}: {state}")
    return "\n".join(lines)


@dataclass(slots=True)
class _Wait:
    """One --wait: what it waits for, its clock, where it writes."""

    base: str
    name: str
    version: int
    timeout_s: float
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    out: IO[str]
    progress: Progress
    started: float = 0.0

    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def held(self) -> tuple[int, list[RegionView]]:
        """Until every alive node of every reachable region holds the version: (0 or
        EXIT_UNREACHABLE, the regions); CliTimeout at the timeout."""
        name = self.name
        unreachable_since: dict[str, float] = {}
        views: list[RegionView] = []
        pending: dict[str, list[str]] = {}
        problem = ""
        while True:
            now = self.clock()
            try:
                views, problem = region_views(self.base), ""
            except CliError as exc:  # the asked node itself did not answer this time: poll again
                problem = str(exc)
            if not problem:
                pending = {
                    v.region: sorted(n for n, api in v.apis.items() if not _holds(api, name, self.version))
                    for v in views
                    if v.reachable
                }
                for v in views:
                    if v.reachable:
                        unreachable_since.pop(v.region, None)
                    else:
                        unreachable_since.setdefault(v.region, now)
                alive = sum(len(v.apis) for v in views if v.reachable)
                missing = sum(len(p) for p in pending.values())
                self.progress.show(Figures(f"deployment {name}", alive - missing, alive, "nodes hold it"))
                done = not any(pending.values())
                offline = [v.region for v in views if not v.reachable]
                elapsed_s = self.elapsed_s()
                if done and not offline:
                    self.progress.clear()
                    print(
                        f"deployment {name}: held by all {alive} alive nodes after {elapsed_s:.2f} s",
                        file=self.out,
                    )
                    print(_report(views, pending), file=self.out)
                    return 0, views
                settled = all(now - unreachable_since[r] >= UNREACHABLE_SETTLE_S for r in offline)
                if done and (settled or elapsed_s >= self.timeout_s):
                    self.progress.clear()
                    print(
                        f"deployment {name}: held by all {alive} alive nodes of every reachable region after "
                        f"{elapsed_s:.2f} s; {len(offline)} region(s) unreachable: {', '.join(offline)}",
                        file=self.out,
                    )
                    print(_report(views, pending), file=self.out)
                    return EXIT_UNREACHABLE, views
            if self.elapsed_s() >= self.timeout_s:
                detail = f"the asked node did not answer ({problem})" if problem else _report(views, pending)
                raise CliTimeout(
                    f"timed out: deployment {name} version {self.version}: not held by every alive node of "
                    f"the reachable regions after {self.timeout_s:g} s:\n{detail}\n"
                    "It is persisted and keeps spreading; check again with murmur get deployments"
                )
            self.sleep(WAIT_POLL_S)

    def ready(self, code: int, views: Sequence[RegionView]) -> int:
        """Until the replicas of every reachable region are ready: `code`; CliError (exit 1) when a
        replica stays unplaced or failed, CliTimeout at the timeout."""
        name, node = self.name, NodeClient(self.base)
        sha256 = wanted_sha256(self.base, name)
        reachable = [v for v in views if v.reachable]
        watch = ProblemWatch(self.progress.note, f"deployment {name}: ", PROBLEM_SETTLE_S)
        while True:
            now = self.clock()
            rollouts = [region_rollout(node, v.region, name, sha256, v.apis) for v in reachable]
            stuck = watch.stuck([p for r in rollouts for p in r.problems], now)
            self.progress.show(_figures(name, rollouts))
            if all(r.done for r in rollouts):
                self.progress.clear()
                ready = sum(r.ready for r in rollouts)
                where = "every region" if code == 0 else "every reachable region"
                print(
                    f"deployment {name}: {ready} replica(s) ready in {where} after {self.elapsed_s():.2f} s",
                    file=self.out,
                )
                print("\n".join(f"  {r.line()}" for r in rollouts), file=self.out)
                return code
            if stuck:
                raise CliError(
                    f"deployment {name} version {self.version}: {len(stuck)} replica(s) will not become "
                    "ready without a change:\n  "
                    + "\n  ".join(stuck)
                    + "\nThe deployment is persisted. Fix the "
                    "cause (a model that loads, a node that meets the requirements, fewer replicas) and "
                    f"deploy again; murmur describe deployment {name} shows each replica"
                )
            if self.elapsed_s() >= self.timeout_s:
                raise CliTimeout(
                    f"timed out: deployment {name} version {self.version}: held everywhere, but not every "
                    f"replica is ready after {self.timeout_s:g} s:\n"
                    + "\n".join(f"  {r.line()}" for r in rollouts)
                    + f"\nIt keeps rolling out; watch it with murmur describe deployment {name}"
                )
            self.sleep(READY_POLL_S)


def _figures(name: str, rollouts: Sequence[RegionRollout]) -> Figures:
    states: dict[str, int] = {}
    for r in rollouts:
        for state, n in r.states.items():
            if state != "ready":
                states[state] = states.get(state, 0) + n
    bytes_total = sum(r.bytes_total for r in rollouts)
    return Figures(
        f"deployment {name}",
        sum(r.ready for r in rollouts),
        sum(r.desired for r in rollouts),
        "replicas ready",
        sum(r.bytes_done for r in rollouts) if bytes_total else None,
        bytes_total or None,
        ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
    )


def interrupted_line(what: str, watch: str) -> str:
    """What Ctrl-C during a wait prints: the work goes on, and how to watch it."""
    return f"stopped waiting (Ctrl-C); {what} goes on without the CLI. Watch it: {watch}"


def wait_for(
    base: str,
    name: str,
    version: int,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    out: IO[str] | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    progress: Progress | None = None,
) -> int:
    """Wait until every alive node of every reachable region holds `name` at `version` (or
    newer), then until its replicas there are ready.

    0: every region answered and its replicas are ready. EXIT_UNREACHABLE: so in every
    reachable region, and the others stayed unreachable for UNREACHABLE_SETTLE_S (or until
    the timeout). EXIT_INTERRUPTED: Ctrl-C (the rollout goes on). CliError (exit 1): a replica
    stayed unplaced or failed for PROBLEM_SETTLE_S. CliTimeout (exit EXIT_TIMED_OUT): not done
    at the timeout. Results go to `out` (stdout by default), the progress line to stderr.
    """
    wait = _Wait(
        base,
        name,
        version,
        timeout_s,
        clock,
        sleep,
        sys.stdout if out is None else out,
        Progress(sys.stderr, clock) if progress is None else progress,
    )
    wait.started = clock()
    try:
        code, views = wait.held()
        return wait.ready(code, views)
    except KeyboardInterrupt:
        wait.progress.note(
            interrupted_line(f"deployment {name} version {version}", f"murmur describe deployment {name}")
        )
        return EXIT_INTERRUPTED
    finally:
        wait.progress.clear()
