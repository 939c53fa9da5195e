"""What `murmur COMMAND --help` says: a description of the command and examples to copy.

Every subcommand is added through `command()`, so none of them lacks a description
or an example (tests/mesh/test_cli_help.py walks the whole parser to check).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any

HELP_WIDTH = 78  # the raw formatter keeps our line breaks, so we wrap the prose ourselves


def examples_epilog(examples: Sequence[str]) -> str:
    """An epilog block listing example command lines."""
    return "examples:\n" + "\n".join(f"  {line}" for line in examples)


def command(
    sub: Any, name: str, *, summary: str, description: str, examples: Sequence[str]
) -> argparse.ArgumentParser:
    """Add subcommand `name`: `summary` in the command list, `description` and `examples` in its help."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, HELP_WIDTH),
        epilog=examples_epilog(examples),
        # Keep the examples' line breaks; argparse would run them together.
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
