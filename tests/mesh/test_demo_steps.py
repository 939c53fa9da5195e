"""`murmur demo`'s steps, on a scripted mesh: the crash step prints what the observers newly see,
and never "marks X alive" right after killing X (they saw it alive all along: that is not news);
a step that times out says which and what it waited for; the heal watch prints the new placement;
the victim holds a replica; a mesh too small to heal is refused."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mesh.dev import demo
from mesh.dev import demo_models as models
from mesh.dev.demo_heal import HealWatch
from mesh.dev.localmesh import LocalAgent


def _agent(name: str, region: str) -> LocalAgent:
    return LocalAgent(
        name, region, "127.0.0.1:1", "127.0.0.1:2", Path("/nonexistent"), Path("/nonexistent"), ()
    )


@dataclass
class ScriptedMesh:
    """States the observers report, poll after poll: alive until the kill, then as scripted."""

    agents: list[LocalAgent]
    after_kill: list[str]
    killed: bool = False
    polls: dict[str, int] = field(default_factory=dict)

    def node_id(self, agent: LocalAgent) -> str:
        return "628958f595a0501e"

    def kill(self, agent: LocalAgent) -> None:
        self.killed = True

    def state_of(self, observer: LocalAgent, node_id: str) -> str:
        if not self.killed:
            return "alive"
        n = self.polls.get(observer.name, 0)
        self.polls[observer.name] = n + 1
        return self.after_kill[min(n, len(self.after_kill) - 1)]


def test_the_crash_step_prints_only_what_changed_after_the_kill(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "POLL_S", 0.0)
    agents = [_agent("south-1", "south"), _agent("south-2", "south"), _agent("south-3", "south")]
    mesh: Any = ScriptedMesh(agents, ["alive", "alive", "suspect", "dead"])
    demo._crash_and_detect(mesh, demo._Clock(), agents[-1])
    out = capsys.readouterr().out
    assert "marks south-3 alive" not in out
    assert "they see it alive until their probes of it fail" in out
    for name in ("south-1", "south-2"):
        assert f"{name}  marks south-3 suspect" in out and f"{name}  marks south-3 dead" in out
    assert "every agent of region south marks south-3 dead" in out


def test_a_step_that_times_out_names_the_step_and_what_it_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "READY_TIMEOUT_S", 0.0)
    monkeypatch.setattr(demo, "ready_by_deployment", lambda node, regions: {"vibration-anomaly": (1, 4)})
    mesh: Any = ScriptedMesh([_agent("north-1", "north")], ["alive"])
    with pytest.raises(demo.DemoError, match=r"timed out after 0 s waiting for the replicas to be ready"):
        demo._wait_ready(mesh, demo._Clock(), ("north",), {})


def test_the_replicas_step_ends_only_when_every_example_model_is_ready(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(
        [
            {"vibration-anomaly": (0, 4)},
            {"vibration-anomaly": (4, 4), "image-classifier": (2, 2)},  # tabular-mlp not placed yet
            {"vibration-anomaly": (4, 4), "image-classifier": (2, 2), "tabular-mlp": (2, 2)},
        ]
    )
    monkeypatch.setattr(demo, "ready_by_deployment", lambda node, regions: next(answers))
    monkeypatch.setattr(demo.models, "region_replicas", lambda agent, region: [])
    monkeypatch.setattr(demo.models, "fetched_from", lambda agent: [])
    monkeypatch.setattr(demo, "wait_until", lambda predicate, timeout_s, interval_s: _poll(predicate, 5))
    mesh: Any = ScriptedMesh([_agent("north-1", "north")], ["alive"])
    demo._wait_ready(mesh, demo._Clock(), ("north",), {})
    out = capsys.readouterr().out
    assert "vibration-anomaly  replicas ready/desired 0/4" in out
    assert "tabular-mlp        replicas ready/desired 2/2" in out


def _poll(predicate: Any, times: int) -> bool:
    return any(predicate() for _ in range(times))


def test_the_victim_holds_a_replica_and_is_not_the_leader_when_another_holder_is_not() -> None:
    agents = [_agent(f"south-{i}", "south") for i in (1, 2, 3)]
    names = {"a1": "south-1", "a2": "south-2", "a3": "south-3"}
    assert demo._pick_victim(agents, ["a1", "a2"], "a2", names).name == "south-1"
    assert demo._pick_victim(agents, ["a1", "a2"], "a3", names).name == "south-2"
    assert demo._pick_victim(agents, ["a2"], "a2", names).name == "south-2"  # the leader, if only it
    with pytest.raises(demo.DemoError):
        demo._pick_victim(agents, [], None, names)


def test_the_heal_watch_prints_the_new_placement_and_ends_when_the_region_is_whole() -> None:
    lines: list[str] = []
    watch = HealWatch("vib", "dead", ("a1", "dead"), 2, {"a3": "south-3"}, lines.append)
    row = {"deployment": "vib", "slot": "1"}
    assert not watch.observe(
        [{**row, "slot": "0", "node": "a1", "state": "ready"}, {**row, "node": "dead", "state": "ready"}]
    )
    assert lines == []  # the dead node's row is not news, and a1 held its replica all along
    assert not watch.observe(
        [{**row, "slot": "0", "node": "a1", "state": "ready"}, {**row, "node": "a3", "state": "loading"}]
    )
    assert not watch.observe(
        [{**row, "slot": "0", "node": "a1", "state": "ready"}, {**row, "node": "a3", "state": "loading"}]
    )
    assert watch.observe(
        [{**row, "slot": "0", "node": "a1", "state": "ready"}, {**row, "node": "a3", "state": "ready"}]
    )
    assert lines == ["vib/1 placed on south-3 (a3): loading", "vib/1 on south-3: ready"]
    assert watch.moved_to == ["south-3"]


def test_the_demo_refuses_a_mesh_too_small_to_heal(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.run_demo(agents=4, regions=2) == 2
    assert "give 1 to 5 regions of 3 agents or more" in capsys.readouterr().err


def test_the_inference_request_fits_the_vibration_model() -> None:
    doc = json.loads(models.vibration_request())
    (tensor,) = doc["inputs"]
    assert tensor["name"] == "window" and tensor["shape"] == [1, 3, models.WINDOW_SAMPLES]
    assert len(tensor["data"]) == 3 * models.WINDOW_SAMPLES
    answer = models.Answer(200, {"outputs": [{"name": "score", "data": [0.25]}]}, 0.01)
    assert models.first_output(answer) == "score = 0.25"
    assert models.first_output(models.Answer(503, {"error": "no ready replica"}, 0.01)) == (
        "HTTP 503: no ready replica"
    )
