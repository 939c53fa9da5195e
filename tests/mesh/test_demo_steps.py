"""`murmur demo`'s crash step, on a scripted mesh: it prints what the observers newly see, and
never "marks X alive" right after killing X (they saw it alive all along: that is not news)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mesh.dev import demo
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
