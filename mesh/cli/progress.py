"""One progress line on stderr for the CLI's long work (`deploy --wait`, `drain --wait`, uploads).

On a terminal the line is redrawn in place (`\\r`, then erase to the end of the line): a bar,
the counts, bytes with units and the seconds elapsed. When the stream is not a terminal
(a script, CI, a test's pipe) a plain line is printed only when the figures change, and
bytes count as changed only per tenth of their total, so a log never floods.
Messages that must stay (a replica that cannot be placed) go through `note`, which clears
the live line first. No dependency: plain ANSI.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from inference.resources import format_bytes

BAR_WIDTH = 20
BYTES_STEPS = 10  # without a terminal, bytes are reported per tenth of their total
ERASE_LINE = "\r\x1b[K"


def bytes_text(size_bytes: int) -> str:
    """A byte count for people: `512B`, `1.5MiB`."""
    return f"{format_bytes(size_bytes)}B"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[#######-------------]`: done of total, as wide as `width` (all dashes when total is 0)."""
    filled = width * min(done, total) // total if total > 0 else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


@dataclass(frozen=True, slots=True)
class Figures:
    """What one progress line shows: `label`, `done` of `total` `unit`, and bytes when known."""

    label: str
    done: int
    total: int
    unit: str = ""
    bytes_done: int | None = None
    bytes_total: int | None = None
    detail: str = ""  # a short word on what is happening (`fetching`, `2 unplaced`)
    counts: bool = True  # False: done/total are the bytes themselves, shown once, with units

    def text(self, elapsed_s: float | None) -> str:
        parts = [self.label, bar(self.done, self.total)]
        if self.counts:
            parts.append(f"{self.done}/{self.total}")
        if self.unit:
            parts.append(self.unit)
        if self.bytes_done is not None and self.bytes_total:
            parts.append(f"{bytes_text(self.bytes_done)}/{bytes_text(self.bytes_total)}")
        elif self.bytes_done is not None:
            parts.append(bytes_text(self.bytes_done))
        if self.detail:
            parts.append(self.detail)
        if elapsed_s is not None:
            parts.append(f"{elapsed_s:.0f}s")
        return " ".join(parts)

    def coarse(self) -> tuple[object, ...]:
        """What must change for a line without a terminal: bytes only per tenth of the total."""
        step = None
        if self.bytes_done is not None:
            total = self.bytes_total or 0
            step = self.bytes_done * BYTES_STEPS // total if total > 0 else self.bytes_done
        done = self.done if self.counts else None
        return (self.label, done, self.total, self.unit, step, self.bytes_total, self.detail)


class Progress:
    """The one live progress line of a command on `stream` (stderr)."""

    def __init__(
        self,
        stream: IO[str],
        clock: Callable[[], float] = time.monotonic,
        *,
        tty: bool | None = None,
        columns: int | None = None,
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.tty = stream.isatty() if tty is None else tty
        # A line wider than the terminal wraps, and `\r` then redraws only its last part.
        self.columns = shutil.get_terminal_size().columns if columns is None else columns
        self.started = clock()
        self._drawn = False  # a terminal line is on screen, not ended
        self._last: tuple[object, ...] | None = None

    def show(self, figures: Figures) -> None:
        """Redraw the line (terminal) or print it if its figures changed (otherwise)."""
        if self.tty:
            text = figures.text(self.clock() - self.started)
            self.stream.write(ERASE_LINE + text[: max(self.columns - 1, 1)])
            self._drawn = True
        else:
            key = figures.coarse()
            if key == self._last:
                return
            self._last = key
            self.stream.write(figures.text(None) + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line that stays (a reason, a warning), printed above the live line."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Take the live line off a terminal (before other output, and when done)."""
        if self._drawn:
            self.stream.write(ERASE_LINE)
            self.stream.flush()
            self._drawn = False
