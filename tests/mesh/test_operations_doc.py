"""Every `murmur` command line shown in docs/operations.md and README.md parses with the real parser:
a runbook an operator follows word for word must not name a command or flag that does not exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mesh.cli.murmur import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("docs/operations.md", "README.md")


def command_lines(text: str) -> list[str]:
    """The `murmur ...` lines of the sh code blocks, continuations joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            for i, word in enumerate(words):
                if word == "murmur" or word.endswith("/murmur"):
                    lines.append(shlex.join(words[i:]))
                    break
    return lines


COMMANDS = [
    (page, line) for page in PAGES for line in command_lines((ROOT / page).read_text(encoding="utf-8"))
]
# Placeholders the reader replaces, by a value of the right form.
EXAMPLES = {"NODE_ID": "0a1b2c3d4e5f6071"}


def test_the_pages_show_commands() -> None:
    pages = {page for page, _line in COMMANDS}
    assert pages == set(PAGES)
    assert sum(1 for page, _line in COMMANDS if page == "docs/operations.md") >= 40


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{p}:{line}" for p, line in COMMANDS])
def test_every_command_shown_parses(page: str, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [EXAMPLES.get(word, word) for word in shlex.split(line)[1:]]
    if argv in (["--version"], ["-h"]):
        return
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{page}: `{line}` does not parse: {capsys.readouterr().err.strip()} ({exc.code})")


def test_the_readme_links_every_doc_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert "operations.md" in pages and "configuration.md" in pages
    assert [p for p in pages if f"(docs/{p})" not in readme] == []


def test_the_readme_tour_goes_in_the_issues_order() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tour = readme.split("## A 5-minute tour", 1)[1].split("\n## ", 1)[0]
    steps = ["murmur cluster init", "murmur invite", "murmur agent", "deploy", "infer", "events --follow"]
    at = [tour.find(step) for step in steps]
    assert -1 not in at and at == sorted(at), dict(zip(steps, at, strict=True))
