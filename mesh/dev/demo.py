"""`murmur demo`: a whole mesh on 127.0.0.1 tells its story, step by step.

Six agents in two regions (by default) find each other; the example models are
deployed (the artifacts uploaded to one node, fetched by the others); an inference
goes through a node that holds no replica; a node holding one is killed with
SIGKILL and the mesh heals while requests keep flowing; then the mesh stays up for
the user (the dashboard, `murmur status`, ...) until Ctrl-C or `--exit-after`.

Runs without root on plain loopback. Every agent is stopped and the temporary
directory removed on success, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from mesh.cli.client import CliError, NodeClient
from mesh.cli.placements import ready_by_deployment
from mesh.dev import demo_models as models
from mesh.dev.demo_heal import HealWatch, RequestStream
from mesh.dev.localmesh import LocalAgent, LocalMesh, wait_until
from mesh.trust.cluster import load_cluster_dir

REGION_NAMES = ("north", "south", "east", "west", "central")
DEFAULT_AGENTS = 6
DEFAULT_REGIONS = 2
MIN_AGENTS_PER_REGION = 3  # two replicas of the story's model and a node to move one to
# Generous on purpose: a slow or loaded machine must not fail the demo, and a step that
# does time out says which one and what it waited for.
CONVERGE_TIMEOUT_S = 60.0
CROSS_REGION_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 180.0
DETECT_TIMEOUT_S = 60.0
HEAL_TIMEOUT_S = 120.0
POLL_S = 0.2

# Kept for the steps' tests and callers that read it: agents per region of the default mesh.
AGENTS_PER_REGION = DEFAULT_AGENTS // DEFAULT_REGIONS


class DemoError(Exception):
    """A step of the demo did not happen in time."""


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.steps = 0

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:5.1f}s] {text}", flush=True)

    @contextlib.contextmanager
    def step(self, title: str, shows: str) -> Iterator[None]:
        """A numbered step: its title and what it shows, then how long it took."""
        self.steps += 1
        print(f"\n== step {self.steps}: {title}\n   shows: {shows}", flush=True)
        started = time.monotonic()
        yield
        self.say(f"step {self.steps} done in {time.monotonic() - started:.1f} s")


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


def _find_each_other(mesh: LocalMesh, clock: _Clock, per_region: int = AGENTS_PER_REGION) -> None:
    reported: dict[str, int | None] = {}

    def converged() -> bool:
        done = True
        for agent in mesh.agents:
            count = _alive_count(mesh, agent)
            if count is not None and count != reported.get(agent.name):
                reported[agent.name] = count
                clock.say(f"{agent.name:8} ({agent.region}) sees {count}/{per_region} of its region alive")
            done = done and count == per_region
        return done

    _expect(
        wait_until(converged, CONVERGE_TIMEOUT_S, POLL_S),
        f"timed out after {CONVERGE_TIMEOUT_S:.0f} s: the agents did not all see their region alive",
        next((a for a in mesh.agents if reported.get(a.name) != per_region), None),
    )
    clock.say("every agent sees its whole region alive")


def _cross_region(
    mesh: LocalMesh, clock: _Clock, asker: LocalAgent, region: str, per_region: int = AGENTS_PER_REGION
) -> None:
    clock.say(f"{asker.name} asks for region {region} (forwarded through {region}'s summary) ...")
    rows: dict[str, dict[str, Any]] = {}

    def answered() -> bool:
        nonlocal rows
        rows = mesh.view(asker, region=region)
        return sum(1 for r in rows.values() if r.get("state") == "alive") == per_region

    _expect(
        wait_until(answered, CROSS_REGION_TIMEOUT_S, POLL_S),
        f"timed out after {CROSS_REGION_TIMEOUT_S:.0f} s: {asker.name} could not see region {region}",
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
    killed_at = time.monotonic()
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
        f"timed out after {DETECT_TIMEOUT_S:.0f} s: the others did not mark {victim.name} dead",
        observers[0],
    )
    clock.say(
        f"every agent of region {victim.region} marks {victim.name} dead, "
        f"{time.monotonic() - killed_at:.1f} s after the kill"
    )


def _seeds_for(mesh: LocalMesh, region: str) -> list[LocalAgent]:
    """Every agent already started in `region`; the first of a region gets one of another region.

    A node joins through all its seeds at once, so it starts with the union of
    their views. The first node of a region is seeded from another region on
    purpose: that node redirects it through the fleet's summaries.
    """
    same = [a for a in mesh.agents if a.region == region]
    return same or mesh.agents[:1]


def _start(mesh: LocalMesh, clock: _Clock, regions: tuple[str, ...], per_region: int) -> None:
    for region in regions:
        for i in range(1, per_region + 1):
            agent = mesh.add(f"{region}-{i}", region, _seeds_for(mesh, region))
            mesh.start(agent)
            seed_names = ", ".join(a.name for a in mesh.agents if a.gossip in agent.seeds)
            clock.say(
                f"started {agent.name:8} gossip {agent.gossip}  api {agent.url}  "
                f"seeds: {seed_names or 'none (first node)'}"
            )


def _deploy_models(mesh: LocalMesh, clock: _Clock, entry: LocalAgent) -> list[models.Deployed]:
    assert mesh.token_path is not None
    _cluster_id, key, _token = load_cluster_dir(mesh.token_path.parent)
    node = NodeClient(entry.url, timeout_s=10.0)
    deployed = []
    for name in models.EXAMPLE_MODELS:
        done = models.deploy(key, node, models.demo_manifest(name, mesh.root))
        deployed.append(done)
        clock.say(
            f"deployed {done.name} ({done.replicas_per_region} per region): artifact {done.artifact_file} "
            f"({done.size_bytes} bytes) {'uploaded to' if done.uploaded else 'already on'} {entry.name} only"
        )
    return deployed


def _wait_ready(mesh: LocalMesh, clock: _Clock, regions: tuple[str, ...], names: dict[str, str]) -> None:
    asker = NodeClient(mesh.agents[0].url, timeout_s=5.0)
    shown: dict[str, tuple[int, int]] = {}

    def all_ready() -> bool:
        counts = ready_by_deployment(asker, regions)
        for name in models.EXAMPLE_MODELS:
            if name in counts and counts[name] != shown.get(name):
                shown[name] = counts[name]
                clock.say(f"{name:18} replicas ready/desired {counts[name][0]}/{counts[name][1]}")
        return len(counts) >= len(models.EXAMPLE_MODELS) and all(
            desired > 0 and ready == desired for ready, desired in counts.values()
        )

    _expect(
        wait_until(all_ready, READY_TIMEOUT_S, 0.5),
        f"timed out after {READY_TIMEOUT_S:.0f} s waiting for the replicas to be ready "
        f"(ready/desired: {shown or 'no placement yet'})",
        mesh.agents[0],
    )
    for region in regions:
        rows = models.region_replicas(mesh.agents[0], region)
        where = ", ".join(
            f"{r.get('deployment')}/{r.get('slot')} on {names.get(str(r.get('node')), r.get('node'))}"
            for r in rows
        )
        clock.say(f"region {region}: {where}")
    for agent in mesh.agents:
        sources = sorted({names.get(p, p) for _sha, peers in models.fetched_from(agent) for p in peers})
        if sources:
            clock.say(f"{agent.name:8} fetched its artifacts peer to peer from {', '.join(sources)}")


def _holders(mesh: LocalMesh, region: str) -> list[str]:
    rows = models.region_replicas(mesh.agents[0], region)
    return [str(r.get("node")) for r in rows if r.get("deployment") == models.STORY_MODEL]


def _infer_through_non_holder(mesh: LocalMesh, clock: _Clock, entry: LocalAgent, holders: list[str]) -> None:
    answer = models.infer(entry, models.STORY_MODEL, models.vibration_request())
    _expect(answer.ok, f"the inference through {entry.name} failed: {models.first_output(answer)}", entry)
    names = {mesh.node_id(a): a.name for a in mesh.agents}
    clock.say(
        f"{entry.name} holds no {models.STORY_MODEL} replica; it forwarded the request to one of "
        f"{', '.join(names.get(h) or h for h in holders)} and answered {models.first_output(answer)} "
        f"in {answer.latency_s * 1000:.0f} ms"
    )


def _heal(
    mesh: LocalMesh, clock: _Clock, victim: LocalAgent, entry: LocalAgent, names: dict[str, str]
) -> None:
    holders = tuple(_holders(mesh, victim.region))
    victim_id = next(node_id for node_id, name in names.items() if name == victim.name)
    stream = RequestStream(entry, models.STORY_MODEL, models.vibration_request())
    stream.start()
    clock.say(f"sending {models.STORY_MODEL} requests to {entry.name}, a few a second")
    try:
        started = time.monotonic()
        _crash_and_detect(mesh, clock, victim)
        watch = HealWatch(models.STORY_MODEL, victim_id, holders, len(holders), names, clock.say)
        _expect(
            wait_until(
                lambda: watch.observe(models.region_replicas(entry, victim.region)), HEAL_TIMEOUT_S, 0.3
            ),
            f"timed out after {HEAL_TIMEOUT_S:.0f} s waiting for {victim.name}'s replica to run elsewhere",
            entry,
        )
        leader = models.region_leader(entry, victim.region)
        clock.say(
            f"region {victim.region} is whole again: {len(holders)}/{len(holders)} {models.STORY_MODEL} "
            f"replicas ready (moved to {', '.join(watch.moved_to)}; placement by the region's leader "
            f"{names.get(leader or '', leader or 'none')}), {time.monotonic() - started:.1f} s after the kill"
        )
    finally:
        answered, failed = stream.stop()
    failure = f" (last failure: {stream.last_failure})" if failed else ""
    clock.say(f"requests during the heal: {answered} answered, {failed} failed{failure}")


def _try_it(mesh: LocalMesh, entry: LocalAgent) -> None:
    assert mesh.token_path is not None
    request = mesh.root / "window.json"
    request.write_bytes(models.vibration_request())
    # The murmur the user ran (.venv/bin/murmur after the README's install), so each line pastes as is.
    murmur = sys.argv[0] if Path(sys.argv[0]).name == "murmur" else "murmur"
    node = f"--node {entry.url}"
    print(
        f"\n== the mesh keeps running; try it\n"
        f"   dashboard:  {entry.url}/   (any node's API serves it)\n"
        f"   {murmur} {node} status\n"
        f"   {murmur} {node} placements\n"
        f"   {murmur} {node} infer {models.STORY_MODEL} --input {request}\n"
        f"   {murmur} {node} events --follow\n"
        f"   {murmur} --cluster {mesh.token_path.parent} {node} scale {models.STORY_MODEL} 3\n"
        f"   agents' logs: {mesh.root / 'logs'}",
        flush=True,
    )


def run_demo(
    root: Path | None = None,
    exit_after_s: float | None = None,
    agents: int = DEFAULT_AGENTS,
    regions: int = DEFAULT_REGIONS,
) -> int:
    """Run the demo in a fresh temp dir (or `root`); exit code 0 on success.

    After the story the mesh stays up until Ctrl-C (or SIGTERM), or for `exit_after_s`.
    """
    per_region = agents // regions
    if not 1 <= regions <= len(REGION_NAMES) or per_region < MIN_AGENTS_PER_REGION or agents % regions:
        print(
            f"murmur demo: error: {agents} agents in {regions} regions: give 1 to {len(REGION_NAMES)} "
            f"regions of {MIN_AGENTS_PER_REGION} agents or more each (agents a multiple of regions)",
            file=sys.stderr,
        )
        return 2
    region_names = REGION_NAMES[:regions]
    clock = _Clock()
    tmp = Path(tempfile.mkdtemp(prefix="murmur-demo-")) if root is None else root
    mesh = LocalMesh(tmp, profile="local", debug_hooks=False)
    previous = signal.getsignal(signal.SIGTERM)
    story_done = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with clock.step(
            f"start {agents} agents in {regions} regions on 127.0.0.1",
            "each agent finds its region by gossip (SWIM); the regions' gateways find each other",
        ):
            cluster_id = mesh.init()
            clock.say(f"created cluster {cluster_id} in {tmp}")
            _start(mesh, clock, region_names, per_region)
            _find_each_other(mesh, clock, per_region)
            if regions > 1:
                _cross_region(mesh, clock, mesh.agents[0], region_names[1], per_region)
        names = {node_id: a.name for a in mesh.agents if (node_id := mesh.node_id(a)) is not None}
        entry = mesh.agents[0]
        with clock.step(
            "deploy the example models",
            f"a deploy accepted by one node ({entry.name}) reaches every region; each region's leader "
            "places the replicas; the artifacts are uploaded to that node only and peers fetch them",
        ):
            _deploy_models(mesh, clock, entry)
            _wait_ready(mesh, clock, region_names, names)
        victim_region = region_names[-1]
        holders = _holders(mesh, victim_region)
        region_agents = [a for a in mesh.agents if a.region == victim_region]
        non_holder = next(a for a in region_agents if mesh.node_id(a) not in holders)
        with clock.step(
            "an inference through a node without a replica",
            f"any node answers: {non_holder.name} forwards the request to a ready replica in its region",
        ):
            _infer_through_non_holder(mesh, clock, non_holder, holders)
        leader = models.region_leader(non_holder, victim_region)
        victim = _pick_victim(region_agents, holders, leader, names)
        with clock.step(
            f"kill -9 {victim.name}, which holds a {models.STORY_MODEL} replica",
            "its peers detect the crash (suspect, then dead); the region's leader places the lost "
            "replica on another node, which fetches the model and loads it; requests keep being answered",
        ):
            _heal(mesh, clock, victim, non_holder, names)
        story_done = True
        _try_it(mesh, entry)
        return _stay_up(mesh, clock, exit_after_s)
    except (DemoError, CliError) as exc:
        print(f"murmur demo: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        if story_done:
            return _stop_all(mesh, clock)
        print("\nmurmur demo: interrupted; stopping the agents", file=sys.stderr, flush=True)
        return 130
    finally:
        mesh.close()
        signal.signal(signal.SIGTERM, previous)
        if root is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _pick_victim(
    region_agents: list[LocalAgent], holders: list[str], leader: str | None, names: dict[str, str]
) -> LocalAgent:
    """A holder of the story's replica; not the leader if another holder will do (the heal
    then shows detection and re-placement, not also an election)."""
    by_name = {a.name: a for a in region_agents}
    candidates = [by_name[names[h]] for h in holders if names.get(h) in by_name]
    _expect(bool(candidates), f"no {models.STORY_MODEL} replica to kill in region {region_agents[0].region}")
    plain = [a for a in candidates if names.get(leader or "") != a.name]
    return (plain or candidates)[-1]


def _stay_up(mesh: LocalMesh, clock: _Clock, exit_after_s: float | None) -> int:
    if exit_after_s is None:
        print("\nPress Ctrl-C to stop the mesh.", flush=True)
        while True:
            time.sleep(3600)
    print(f"\n(--exit-after {exit_after_s:g}: stopping the mesh in {exit_after_s:g} s)", flush=True)
    time.sleep(max(0.0, exit_after_s))
    return _stop_all(mesh, clock)


def _stop_all(mesh: LocalMesh, clock: _Clock) -> int:
    print(flush=True)
    clock.say("stopping every agent (SIGTERM: a graceful leave)")
    codes = mesh.close()
    clean = all(code == 0 for code in codes.values())
    clock.say("all agents stopped cleanly" if clean else f"agents' exit codes: {codes}")
    clock.say("done. Your own mesh: murmur cluster init --out DIR, then murmur agent --help")
    return 0 if clean else 1
