"""Fixtures for tests that start real `murmur agent` processes on 127.0.0.1."""

from __future__ import annotations

import signal
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from mesh.dev.localmesh import LocalMesh, pid_alive


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()

MeshFactory = Callable[[str], LocalMesh]


@pytest.fixture
def local_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MeshFactory]:
    """Make a LocalMesh with a fresh cluster; every agent is killed afterwards, even on failure (a
    graceful stop is what tests of stopping check, e.g. test_demo.py, test_agents.py)."""
    meshes: list[LocalMesh] = []

    def make(profile: str) -> LocalMesh:
        mesh = LocalMesh(tmp_path / f"mesh{len(meshes)}", profile=profile, debug_hooks=True)
        mesh.init()
        meshes.append(mesh)
        return mesh

    yield make
    for mesh in meshes:
        mesh.kill_all()
        if request.node.stash.get(_FAILED, False):
            for agent in mesh.agents:
                print(f"--- {agent.name} ({agent.log_path}) ---\n{agent.log_tail(40)}")
        leftovers = [a.name for a in mesh.agents if a.process is not None and pid_alive(a.process.pid)]
        assert not leftovers, f"agents still running after close: {leftovers}"


def sigint_as_in_a_terminal() -> None:
    """Popen's preexec_fn for a child that a test sends SIGINT (Ctrl-C) to. A test runner started
    in the background (as CI may be) ignores SIGINT, and children inherit that; Python then
    never raises KeyboardInterrupt. A user's Ctrl-C arrives with the default disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
