"""Test-only libraries stay test-only: hypothesis and pytest are in the `dev` extra, not in the
runtime dependencies a device installs, and no module a device runs imports them."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGES = ("gossip", "consensus", "inference", "node", "mesh", "sim")
TEST_ONLY = ("hypothesis", "pytest")


def _names(requirements: list[str]) -> set[str]:
    return {r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for r in requirements}


def test_test_libraries_are_dev_extras_not_runtime_dependencies() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"])
    dev = _names(project["optional-dependencies"]["dev"])
    for name in TEST_ONLY:
        assert name not in runtime, f"{name} is a runtime dependency; it belongs in the dev extra"
        assert name in dev, f"{name} is missing from the dev extra"
    # The README's install command is what puts them in a checkout's .venv.
    assert "pip install -e '.[dev]'" in (REPO_ROOT / "README.md").read_text()


def test_no_runtime_module_imports_a_test_library() -> None:
    offenders: list[str] = []
    for package in RUNTIME_PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                offenders += [
                    f"{path.relative_to(REPO_ROOT)}: {m}" for m in modules if m.split(".")[0] in TEST_ONLY
                ]
    assert offenders == []
