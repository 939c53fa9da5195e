"""The import contract: the sans-IO cores never touch a clock, a socket or global randomness.

gossip/, consensus/, inference/ and node/ (the composite node) are pure: state
machines and functions that take `now` and bytes in and hand messages out, read
no files, and draw randomness only from the `random.Random` they are given. sim/
drives those same cores on a virtual clock, so it may use the standard library
but never the real runtime (asyncio, sockets, mesh/).

This test reads the source (AST, nothing is imported), so a violation is found
even in a module no other test imports. import-linter (`lint-imports`, configured
in pyproject.toml) checks the same boundaries on the import graph.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = frozenset({"gossip", "consensus", "inference", "node", "mesh", "sim"})

# Modules a core may never import, with the reason shown on failure.
_RUNTIME = "a core is sans-IO: the driver owns sockets, clocks, threads and logs"
CORE_FORBIDDEN: dict[str, str] = {
    "asyncio": _RUNTIME,
    "socket": _RUNTIME,
    "selectors": _RUNTIME,
    "select": _RUNTIME,
    "ssl": _RUNTIME,
    "time": "a core takes `now` from its driver; it never reads a clock",
    "logging": "a core reports events and counters; the driver logs",
    "threading": _RUNTIME,
    "multiprocessing": _RUNTIME,
    "concurrent": _RUNTIME,
    "subprocess": _RUNTIME,
    "signal": _RUNTIME,
    "sqlite3": "persistence belongs to mesh/",
    "os": "no os in a core (os.urandom breaks seeded determinism; files belong to drivers)",
    "secrets": "secrets is os.urandom: take a random.Random or a caller-supplied value",
    "importlib": "dynamic imports would hide a core's dependencies from this contract",
    "aiohttp": _RUNTIME,
    "zeroconf": _RUNTIME,
    "onnxruntime": "inference backends are drivers, not cores",
    "psutil": "inventory is read by mesh/ and handed to the cores",
}

# First-party layering: gossip talks to nothing but itself; consensus sees gossip only;
# inference sees both; the composite node (node/) sees the cores it hosts; none sees a driver.
CORE_FORBIDDEN_FIRST_PARTY: dict[str, frozenset[str]] = {
    "gossip": frozenset({"consensus", "inference", "node", "mesh", "sim"}),
    "consensus": frozenset({"inference", "node", "mesh", "sim"}),
    "inference": frozenset({"node", "mesh", "sim"}),
    "node": frozenset({"mesh", "sim"}),
}

# sim/ runs the real cores on a virtual clock: standard library, the cores, and the
# pure data libraries the cores themselves use. Never the asyncio runtime or mesh/.
SIM_ALLOWED_FIRST_PARTY = frozenset({"gossip", "consensus", "inference", "node", "sim"})
SIM_ALLOWED_THIRD_PARTY = frozenset({"msgpack", "nacl"})
# The one module that draws `murmur sim --report`'s charts may import matplotlib (an optional
# extra, imported only when a chart is drawn); no other module of sim/ may.
SIM_DRAWING_THIRD_PARTY = {"sim.pictures": frozenset({"matplotlib"})}
SIM_FORBIDDEN_STDLIB = frozenset({"asyncio", "socket", "selectors", "ssl", "socketserver"})

# Calls that read a wall clock or the OS entropy pool, whatever module they come from.
NONDETERMINISTIC_CALLS = frozenset(
    {
        ("datetime", "now"),
        ("datetime", "utcnow"),
        ("datetime", "today"),
        ("date", "today"),
        ("uuid", "uuid1"),
        ("uuid", "uuid4"),
    }
)

CHECKED_PACKAGES = ("gossip", "consensus", "inference", "node", "sim")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}: {self.why}"


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    """The dotted module name of a file under the repo root."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str | None:
    """The absolute name of `from <level dots><target> import ...`, or None if it escapes the root."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package) - 1:
        return None
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str, module: str, is_package: bool) -> None:
        self.path = path
        self.module = module
        self.is_package = is_package
        self.package = module.split(".")[0]
        self.violations: list[Violation] = []
        self.random_aliases: set[str] = set()

    def flag(self, node: ast.AST, what: str, why: str) -> None:
        self.violations.append(Violation(self.path, getattr(node, "lineno", 0), what, why))

    def check_imported(self, node: ast.AST, name: str, shown: str) -> None:
        top = name.split(".")[0]
        if self.package in CORE_FORBIDDEN_FIRST_PARTY:
            if top in CORE_FORBIDDEN:
                self.flag(node, shown, CORE_FORBIDDEN[top])
            elif top in CORE_FORBIDDEN_FIRST_PARTY[self.package]:
                self.flag(node, shown, f"{self.package}/ must not depend on {top}/ (layering)")
        elif self.package == "sim":
            if top in FIRST_PARTY:
                if top not in SIM_ALLOWED_FIRST_PARTY:
                    self.flag(node, shown, "sim/ drives the cores only, never mesh/ (the real runtime)")
            elif top in SIM_FORBIDDEN_STDLIB:
                self.flag(node, shown, "sim/ runs on a virtual clock, never the asyncio/socket runtime")
            elif (
                top not in sys.stdlib_module_names
                and top not in SIM_ALLOWED_THIRD_PARTY
                and top not in SIM_DRAWING_THIRD_PARTY.get(self.module, frozenset())
            ):
                self.flag(
                    node,
                    shown,
                    "sim/ may import the standard library, the cores and "
                    f"{', '.join(sorted(SIM_ALLOWED_THIRD_PARTY))} only",
                )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_imported(node, alias.name, f"import {alias.name}")
            if alias.name == "random":
                self.random_aliases.add(alias.asname or "random")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = ", ".join(a.name for a in node.names)
        if node.level:
            target = _resolve_relative(self.module, self.is_package, node.level, node.module)
            shown = f"from {'.' * node.level}{node.module or ''} import {names}"
            if target is None:
                self.flag(node, shown, "relative import escapes the repository root")
            else:
                self.check_imported(node, target, shown)
        else:
            assert node.module is not None
            self.check_imported(node, node.module, f"from {node.module} import {names}")
            if node.module == "random":
                for alias in node.names:
                    if alias.name != "Random":
                        self.flag(
                            node,
                            f"from random import {alias.name}",
                            "the module-level random functions share one global, unseeded "
                            "generator; take a random.Random at construction",
                        )
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if (
            isinstance(node.value, ast.Name)
            and node.value.id in self.random_aliases
            and node.attr != "Random"
        ):
            self.flag(
                node,
                f"{node.value.id}.{node.attr}",
                "the module-level random functions share one global, unseeded generator; "
                "use the random.Random the core was given",
            )
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        dotted = _dotted(node.func)
        if dotted is not None:
            parts = dotted.split(".")
            if dotted == "__import__":
                self.flag(node, "__import__(...)", CORE_FORBIDDEN["importlib"])
            elif len(parts) >= 2 and (parts[-2], parts[-1]) in NONDETERMINISTIC_CALLS:
                self.flag(node, f"{dotted}()", "reads the wall clock or OS entropy; take it from the driver")
        self.generic_visit(node)


def check_source(source: str, path: str, module: str, *, is_package: bool = False) -> list[Violation]:
    """Every contract violation in one module's source (a file that does not parse is one)."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return [Violation(path, exc.lineno or 0, "syntax error", str(exc.msg))]
    checker = _Checker(path, module, is_package)
    checker.visit(tree)
    return checker.violations


def check_file(path: Path) -> list[Violation]:
    return check_source(
        path.read_text(encoding="utf-8"),
        str(path.relative_to(REPO_ROOT)),
        module_name(path),
        is_package=path.name == "__init__.py",
    )


def checked_files() -> list[Path]:
    files: list[Path] = []
    for package in CHECKED_PACKAGES:
        files.extend(
            p
            for p in sorted((REPO_ROOT / package).rglob("*.py"))
            if "__pycache__" not in p.parts and not any(part.startswith(".") for part in p.parts)
        )
    return files


# The contract itself.


def test_contract_sees_the_cores() -> None:
    """Guard against checking nothing (a moved folder would otherwise pass silently)."""
    names = {str(p.relative_to(REPO_ROOT)) for p in checked_files()}
    assert {
        "gossip/__init__.py",
        "gossip/envelope.py",
        "consensus/__init__.py",
        "inference/__init__.py",
        "inference/manifest.py",
        "sim/__init__.py",
    } <= names


@pytest.mark.parametrize("path", checked_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_module_keeps_the_contract(path: Path) -> None:
    violations = check_file(path)
    assert not violations, "import contract broken:\n" + "\n".join(f"  {v}" for v in violations)


# The checker can fail: synthetic sources that must be flagged, and some that must not.


def _whats(source: str, module: str = "gossip.example", *, is_package: bool = False) -> list[str]:
    path = f"{module.replace('.', '/')}.py"
    return [v.what for v in check_source(source, path, module, is_package=is_package)]


def test_checker_flags_socket_in_a_core() -> None:
    violations = check_source("import socket\n", "gossip/bad.py", "gossip.bad")
    assert len(violations) == 1
    assert violations[0].what == "import socket"
    assert "gossip/bad.py:1" in str(violations[0])


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import time",
        "from time import monotonic",
        "import logging",
        "import threading",
        "import os",
        "import os.path",
        "from os import urandom",
        "import aiohttp",
        "from zeroconf import Zeroconf",
        "import onnxruntime as ort",
        "import psutil",
        "import secrets",
        "def f():\n    import socket\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio\n",
        "import mesh.runtime",
        "from sim import clock",
        "from .. import mesh",
        "__import__('socket')",
    ],
)
def test_checker_flags_forbidden_imports_in_cores(source: str) -> None:
    assert _whats(source, "gossip.example"), source
    assert _whats(source, "consensus.example"), source
    assert _whats(source, "inference.example"), source


def test_gossip_must_not_import_consensus_but_consensus_may_import_gossip() -> None:
    assert _whats("from consensus import election", "gossip.node") == ["from consensus import election"]
    assert _whats("from gossip.node import GossipNode", "consensus.election") == []


def test_inference_sees_the_cores_below_it_and_no_driver() -> None:
    below = "from gossip.records import Record\nfrom consensus import election\nimport yaml\nimport json"
    assert _whats(below, "inference.placement") == []
    assert _whats("from mesh.artifacts import ArtifactStore", "inference.placement") == [
        "from mesh.artifacts import ArtifactStore"
    ]
    assert _whats("from sim import fleet", "inference.placement") == ["from sim import fleet"]
    assert _whats("from inference import manifest", "consensus.election") == [
        "from inference import manifest"
    ]


@pytest.mark.parametrize(
    "source",
    [
        "import random\nx = random.random()",
        "import random\nrandom.shuffle(items)",
        "import random\nrandom.choice([1, 2])",
        "import random\nrandom.seed(1)",
        "import random\nrng = random.SystemRandom()",
        "import random as r\nr.randint(1, 2)",
        "import random\npick = random.choice",
        "from random import shuffle",
        "from random import Random, choice",
        "from random import *",
    ],
)
def test_checker_flags_global_random(source: str) -> None:
    assert _whats(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import random\nrng = random.Random(42)",
        "import random\ndef f(rng: random.Random) -> float:\n    return rng.random()",
        "from random import Random\nrng = Random(7)",
        "from __future__ import annotations\nimport math\nimport hashlib\nfrom dataclasses import dataclass",
        "from . import config",
        "from .config import LAN",
        "import msgpack\nfrom nacl.secret import SecretBox",
        "rng.choice(members)",
    ],
)
def test_checker_allows_pure_code(source: str) -> None:
    assert _whats(source) == [], source


@pytest.mark.parametrize(
    "source",
    [
        "from datetime import datetime\nt = datetime.now()",
        "import datetime\nt = datetime.datetime.utcnow()",
        "import uuid\nx = uuid.uuid4()",
    ],
)
def test_checker_flags_wall_clock_and_entropy_calls(source: str) -> None:
    assert _whats(source), source


def test_relative_imports_resolve_against_the_package() -> None:
    # In gossip/__init__.py, `from . import x` is gossip.x; in gossip/node.py it is too.
    assert _whats("from . import codec", "gossip", is_package=True) == []
    assert _whats("from . import codec", "gossip.node") == []
    assert _whats("from ..config import LAN", "gossip.pools.region") == []
    # The top-level packages are siblings: climbing above one escapes the repository
    # (Python itself refuses it), so it is flagged too.
    assert _whats("from .. import x", "gossip.node") == ["from .. import x"]


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("import time\nimport resource\nimport heapq", False),
        ("from gossip.node import GossipNode\nfrom consensus import x", False),
        ("from ..clock import VirtualClock", False),
        ("import asyncio", True),
        ("import socket", True),
        ("from mesh.runtime import Runtime", True),
        ("from ...mesh import runtime", True),
        ("import aiohttp", True),
        ("from zeroconf import Zeroconf", True),
        ("import psutil", True),
        ("import random\nrandom.random()", True),
    ],
)
def test_checker_rules_for_sim(source: str, flagged: bool) -> None:
    assert bool(_whats(source, "sim.scenarios.crash")) is flagged, source


def test_only_the_drawing_module_of_sim_imports_matplotlib() -> None:
    source = "from matplotlib.figure import Figure"
    assert _whats(source, "sim.pictures") == []
    assert _whats(source, "sim.run") == [source]


def test_checker_reports_unparsable_files() -> None:
    assert _whats("def broken(:\n") == ["syntax error"]
