"""`murmur drain NODE --wait`: until NODE holds no replica in its region's placement and the
replacements are ready.

The region's leader moves a draining node's replicas new before old: each `ready` one stays
until its deployment has its full count ready on other nodes (docs/placement.md, "Drain, new
before old"). So the wait reads the region's placement (GET /v1/placements?region=R at the
asked node) until no replica names NODE and every deployment that had one there is ready,
showing replicas moved against the most NODE held. A replacement no node can take (the drain
then waits for good) or that failed is named at once, and ends the wait with exit 1 when it
stays PROBLEM_SETTLE_S. Ctrl-C stops the waiting, not the drain.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

from mesh.cli.client import EXIT_INTERRUPTED, CliError, CliTimeout, NodeClient
from mesh.cli.deploywait import PROBLEM_SETTLE_S, READY_POLL_S, interrupted_line
from mesh.cli.progress import Figures, Progress
from mesh.cli.readiness import ProblemWatch, RegionRollout, rollout_of


def _poll(node: NodeClient, node_id: str, region: str, moving: set[str]) -> tuple[int, list[RegionRollout]]:
    """(replicas NODE still holds, each moving deployment's rollout); adds to `moving` the
    deployments NODE holds now. CliError if the region's placement cannot be read."""
    doc: Any = node.get("/v1/placements", {"region": region})
    if not isinstance(doc, dict):
        raise CliError(f"{node.base} answered something other than a placement; is it a murmur agent?")
    replicas = doc.get("replicas")
    held = (
        [r for r in replicas if isinstance(r, dict) and r.get("node") == node_id]
        if isinstance(replicas, list)
        else []
    )
    moving.update(str(r.get("deployment")) for r in held)
    return len(held), [rollout_of(doc, region, name, None, {}) for name in sorted(moving)]


def wait_drained(
    node: NodeClient,
    node_id: str,
    region: str,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    out: IO[str] | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    progress: Progress | None = None,
) -> int:
    """0 once NODE holds no replica in `region` and the replacements are ready; EXIT_INTERRUPTED
    at Ctrl-C; CliError (exit 1) when a replacement stays unplaced or failed; CliTimeout."""
    out = sys.stdout if out is None else out
    progress = Progress(sys.stderr, clock) if progress is None else progress
    started = clock()
    moving: set[str] = set()
    most = 0  # the most replicas NODE was seen holding: what there is to move
    watch = ProblemWatch(progress.note, f"drain {node_id}: ", PROBLEM_SETTLE_S)
    held, problem = 0, ""
    rollouts: list[RegionRollout] = []
    try:
        while True:
            now = clock()
            try:
                (held, rollouts), problem = _poll(node, node_id, region, moving), ""
            except CliError as exc:  # the region did not answer this time: poll again
                problem = str(exc)
            if not problem:
                most = max(most, held)
                stuck = watch.stuck([p for r in rollouts for p in r.problems], now)
                waiting = [r for r in rollouts if r.ready < r.desired]
                detail = f"{len(waiting)} deployment(s) not fully ready" if waiting else ""
                progress.show(Figures(f"drain {node_id}", most - held, most, "replicas moved", detail=detail))
                if held == 0 and not waiting:
                    progress.clear()
                    print(
                        f"drain {node_id}: it holds no replica in region {region}; {most} moved, every "
                        f"replacement ready, after {clock() - started:.2f} s",
                        file=out,
                    )
                    return 0
                if stuck:
                    raise CliError(
                        f"drain {node_id}: {len(stuck)} replacement(s) will not become ready without a "
                        "change:\n  "
                        + "\n  ".join(stuck)
                        + f"\nThe node stays draining and keeps the replicas "
                        "that have nowhere to go. Add or uncordon a node that meets the requirements, or "
                        f"scale the deployment down; murmur placements --region {region} shows each replica"
                    )
            if clock() - started >= timeout_s:
                detail = (
                    f"region {region} did not answer ({problem})"
                    if problem
                    else f"it still holds {held} replica(s) in region {region}; "
                    + "; ".join(r.line() for r in rollouts)
                )
                raise CliTimeout(
                    f"timed out: drain {node_id} not done after {timeout_s:g} s: {detail}\n"
                    f"It keeps draining; watch it with murmur placements --region {region}"
                )
            sleep(READY_POLL_S)
    except KeyboardInterrupt:
        progress.note(interrupted_line(f"the drain of {node_id}", f"murmur placements --region {region}"))
        return EXIT_INTERRUPTED
    finally:
        progress.clear()
