"""The `murmur` command line: mesh/cli/murmur.py builds the parser and runs a command."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `murmur` console script (pyproject.toml names `mesh.cli:main`)."""
    # Imported here so that importing one command module does not build the whole CLI.
    from mesh.cli.murmur import main as run

    return run(argv)
