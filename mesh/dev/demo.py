"""`murmur demo`: six agents in two regions on 127.0.0.1 find each other, lose one, and notice.

Runs without root on plain loopback. Every agent is stopped and the temporary
directory removed on success, on error and on Ctrl-C.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until

REGIONS = ("north", "south")
AGENTS_PER_REGION = 3
CONVERGE_TIMEOUT_S = 15.0
CROSS_REGION_TIMEOUT_S = 25.0
DETECT_TIMEOUT_S = 20.0
POLL_S = 0.2


class DemoError(Exception):
    """A step of the demo did not happen in time."""


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:5.1f}s] {text}", flush=True)


def _expect(ok: bool, what: str, agent: LocalAgent | None = None) -> None:
    if not ok:
        tail = (
            f"\n--- last lines of {agent.name}'s log ({agent.log_path}) ---\n{agent.log_tail()}"
            if agent
            else ""
        )
        raise DemoError(f"{what}{tail}")


def _alive_count(mesh: LocalMesh, agent: LocalAgent) -> int | None:
    view = mesh.view(agent)
    return sum(1 for row in view.values() if row.get("state") == "alive") if view else None


def _find_each_other(mesh: LocalMesh, clock: _Clock) -> None:
    reported: dict[str, int | None] = {}

    def converged() -> bool:
        done = True
        for agent in mesh.agents:
            count = _alive_count(mesh, agent)
            if count is not None and count != reported.get(agent.name):
                reported[agent.name] = count
                clock.say(
                    f"{agent.name:8} ({agent.region}) sees {count}/{AGENTS_PER_REGION} of its region alive"
                )
            done = done and count == AGENTS_PER_REGION
        return done

    _expect(
        wait_until(converged, CONVERGE_TIMEOUT_S, POLL_S),
        "the agents did not find each other in time",
        next((a for a in mesh.agents if reported.get(a.name) != AGENTS_PER_REGION), None),
    )
    clock.say("every agent sees its whole region alive")


def _cross_region(mesh: LocalMesh, clock: _Clock, asker: LocalAgent, region: str) -> None:
    clock.say(f"{asker.name} asks for region {region} (forwarded through {region}'s summary) ...")
    rows: dict[str, dict[str, Any]] = {}

    def answered() -> bool:
        nonlocal rows
        rows = mesh.view(asker, region=region)
        return sum(1 for r in rows.values() if r.get("state") == "alive") == AGENTS_PER_REGION

    _expect(
        wait_until(answered, CROSS_REGION_TIMEOUT_S, POLL_S),
        f"{asker.name} could not see region {region}",
        asker,
    )
    clock.say(f"{asker.name} sees region {region}:")
    for row in sorted(rows.values(), key=lambda r: str(r["id"])):
        gateway = " gateway" if row.get("gateway") else ""
        print(f"         {row['id']}  {row['addr']:21} {row['state']}{gateway}", flush=True)


def _crash_and_detect(mesh: LocalMesh, clock: _Clock, victim: LocalAgent) -> None:
    victim_id = mesh.node_id(victim)
    _expect(victim_id is not None, f"{victim.name} does not answer", victim)
    assert victim_id is not None
    observers = [a for a in mesh.agents if a.region == victim.region and a is not victim]
    # What each observer sees before the kill: the loop below prints changes only. (Starting from
    # nothing printed "marks it alive" right after the kill: no probe had failed yet, so the
    # observers' first answer was the state they had all along, not news.)
    seen: dict[str, str | None] = {o.name: mesh.state_of(o, victim_id) for o in observers}
    mesh.kill(victim)
    clock.say(
        f"killed {victim.name} ({victim_id}) with SIGKILL; watching {', '.join(a.name for a in observers)} "
        "(they see it alive until their probes of it fail)"
    )

    def all_dead() -> bool:
        for observer in observers:
            state = mesh.state_of(observer, victim_id)
            if state != seen.get(observer.name):
                seen[observer.name] = state
                clock.say(f"{observer.name:8} marks {victim.name} {state}")
        return all(seen.get(o.name) == "dead" for o in observers)

    _expect(
        wait_until(all_dead, DETECT_TIMEOUT_S, POLL_S),
        f"the others did not mark {victim.name} dead in time",
        observers[0],
    )
    clock.say(f"every agent of region {victim.region} marks {victim.name} dead")


def _seeds_for(mesh: LocalMesh, region: str) -> list[LocalAgent]:
    """Every agent already started in `region`; the first of a region gets one of another region.

    A node joins through all its seeds at once, so it starts with the union of
    their views. The first node of a region is seeded from another region on
    purpose: that node redirects it through the fleet's summaries.
    """
    same = [a for a in mesh.agents if a.region == region]
    return same or mesh.agents[:1]


def run_demo(root: Path | None = None) -> int:
    """Run the demo in a fresh temp dir (or `root`); exit code 0 on success."""
    clock = _Clock()
    tmp = Path(tempfile.mkdtemp(prefix="murmur-demo-")) if root is None else root
    mesh = LocalMesh(tmp, profile="local", debug_hooks=False)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        cluster_id = mesh.init()
        clock.say(f"created cluster {cluster_id} in {tmp}")
        for region in REGIONS:
            for i in range(1, AGENTS_PER_REGION + 1):
                agent = mesh.add(f"{region}-{i}", region, _seeds_for(mesh, region))
                mesh.start(agent)
                seed_names = ", ".join(a.name for a in mesh.agents if a.gossip in agent.seeds)
                clock.say(
                    f"started {agent.name:8} gossip {agent.gossip}  api {agent.url}  "
                    f"seeds: {seed_names or 'none (first node)'}"
                )
        _find_each_other(mesh, clock)
        _cross_region(mesh, clock, mesh.agents[0], REGIONS[1])
        _crash_and_detect(mesh, clock, mesh.agents[-1])
        clock.say("stopping every agent (SIGTERM: a graceful leave)")
        codes = mesh.close()
        clean = all(code == 0 for code in codes.values())
        clock.say("all agents stopped cleanly" if clean else f"agents' exit codes: {codes}")
        clock.say("done. Your own mesh: murmur cluster init --out DIR, then murmur agent --help")
        return 0 if clean else 1
    except DemoError as exc:
        print(f"murmur demo: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nmurmur demo: interrupted; stopping the agents", file=sys.stderr, flush=True)
        return 130
    finally:
        mesh.close()
        signal.signal(signal.SIGTERM, previous)
        if root is None:
            shutil.rmtree(tmp, ignore_errors=True)
