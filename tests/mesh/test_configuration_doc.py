"""docs/configuration.md cannot drift from the code: every flag of the real `murmur` parser,
every timing profile and its numbers, the environment variables and the data dir's files."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from consensus.timing import ElectionConfig
from gossip.config import PROFILES, MembershipConfig
from mesh.cli.murmur import build_parser
from mesh.service.artifacts import PARTIAL_PREFIX, TMP_PREFIX
from mesh.service.backup import ARTIFACTS_DIR
from mesh.service.netkeys import KEYS_FILE
from mesh.service.store import DB_FILE, LOCK_FILE
from mesh.trust.identity import IDENTITY_FILE

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def _sections(level: str) -> dict[str, str]:
    """Heading text -> body, for headings of `level` ('##': with its ### subsections; '###')."""
    stop = r"#{2}" if level == "##" else r"#{2,3}"
    parts = re.split(rf"^({stop}) (.+)$", DOC, flags=re.MULTILINE)
    return {parts[i + 1].strip(): parts[i + 2] for i in range(1, len(parts) - 2, 3) if parts[i] == level}


COMMANDS = {title.strip("`"): body for title, body in _sections("###").items() if title.startswith("`murmur")}


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    stack: list[tuple[str, argparse.ArgumentParser]] = [("murmur", build_parser())]
    while stack:
        path, parser = stack.pop()
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += [(f"{path} {name}", sub) for name, sub in action.choices.items()]


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    ]


GLOBAL_OPTIONS = {s for a in _options(build_parser()) for s in a.option_strings}
PARSERS = dict(_parsers())


def _has_subcommands(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


@pytest.mark.parametrize("path", sorted(PARSERS))
def test_every_option_of_every_command_is_in_its_section(path: str) -> None:
    parser = PARSERS[path]
    if _has_subcommands(parser) and path != "murmur":
        return  # `murmur cluster`, `murmur region`: only their subcommands take options
    assert path in COMMANDS, f"docs/configuration.md has no section ### `{path}`"
    body = COMMANDS[path]
    missing = [
        a.option_strings[-1]
        for a in _options(parser)
        if path == "murmur" or not GLOBAL_OPTIONS & set(a.option_strings)  # documented once, globally
        if not any(f"`{s}" in body for s in a.option_strings)
    ]
    assert not missing, f"### `{path}` in docs/configuration.md does not document {missing}"
    choices = [
        str(c)
        for a in parser._actions
        if not a.option_strings and a.choices and not isinstance(a, argparse._SubParsersAction)
        for c in a.choices
    ]
    unnamed = [c for c in choices if c not in body]
    assert not unnamed, f"### `{path}` does not name {unnamed}"


def test_the_walk_sees_the_whole_parser() -> None:
    # The test above cannot fail on a section it never visits.
    assert {"murmur agent", "murmur cluster init", "murmur region reset-voters", "murmur backup"} <= set(
        PARSERS
    )
    assert len(PARSERS) >= 30


def _table(body: str, first_column: str) -> dict[str, list[str]]:
    """Rows of the markdown table whose header starts with `first_column`: name -> cells."""
    rows: dict[str, list[str]] = {}
    in_table = False
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith(f"| {first_column} |"):
            in_table = True
            rows["header"] = cells[1:]
        elif in_table and line.startswith("| `"):
            rows[cells[0].strip("`")] = cells[1:]
        elif in_table and not line.startswith("|"):
            in_table = False
    return rows


PROFILES_BODY = _sections("##")["Timing profiles"]


def test_every_profile_and_its_numbers_are_documented() -> None:
    rows = _table(PROFILES_BODY, "field")
    names = list(PROFILES)
    assert rows["header"][: len(names)] == names, "the table's columns must be the profiles, in code order"
    fields = [f.name for f in dataclasses.fields(MembershipConfig) if f.name != "name"]
    assert [f for f in fields if f not in rows] == [], "profile fields missing from the table"
    wrong = {
        (field, name): (rows[field][i], getattr(PROFILES[name], field))
        for field in fields
        for i, name in enumerate(names)
        if rows[field][i] != str(getattr(PROFILES[name], field))
    }
    assert not wrong, f"docs/configuration.md's profile table differs from gossip/config.py: {wrong}"
    for name in names:
        assert f"`{name}`" in PROFILES_BODY


def test_the_election_timings_are_documented() -> None:
    rows = _table(PROFILES_BODY, "election field")
    default = ElectionConfig()
    wrong = {
        f.name: (rows.get(f.name, ["missing"])[0], getattr(default, f.name))
        for f in dataclasses.fields(ElectionConfig)
        if rows.get(f.name, ["missing"])[0] != str(getattr(default, f.name))
    }
    assert not wrong, f"docs/configuration.md's election table differs from consensus/timing.py: {wrong}"


def test_every_environment_variable_the_cli_reads_is_documented() -> None:
    read = set()
    for path in (ROOT / "mesh" / "cli").glob("*.py"):
        read |= set(re.findall(r"\"(MURMUR_[A-Z_]+)\"", path.read_text(encoding="utf-8")))
    assert read >= {"MURMUR_NODE", "MURMUR_KEY", "MURMUR_CLUSTER"}
    body = _sections("##")["Global options and environment"]
    assert [v for v in sorted(read) if f"`{v}`" not in body] == []


def test_every_file_of_the_data_dir_is_documented() -> None:
    body = _sections("##")["The data dir"]
    for name in (IDENTITY_FILE, KEYS_FILE, DB_FILE, LOCK_FILE, f"{ARTIFACTS_DIR}/<sha256>"):
        assert f"`{name}" in body, name
    for prefix in (PARTIAL_PREFIX, TMP_PREFIX):
        assert f"{ARTIFACTS_DIR}/{prefix}" in body, prefix
