"""Rate-limited logging of repeated warnings and errors.

A flood of bad connections can make the same error happen thousands of times a
second (asyncio's "socket.accept() out of system resource" with its traceback,
an inventory probe that cannot open a file): logged each time it fills the disk
and drowns the one line that matters. `RepeatFilter`, on the log handlers, lets
one record of a kind through per LOG_REPEAT_INTERVAL_S and counts the others;
the next one let through says how many were suppressed. A kind is the logger,
the level, the message as formatted and the exception's type: the same error
about a different node or address is a different line (a refusal of each
intruder is logged once, by the agent's own bookkeeping).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

LOG_REPEAT_INTERVAL_S = 60.0
LOG_KINDS_MAX = 1024  # kinds remembered (least recently seen forgotten first)

_Kind = tuple[str, int, str, str]


class RepeatFilter(logging.Filter):
    """Lets a WARNING or worse through once per `interval_s` per kind; INFO and below always."""

    def __init__(
        self,
        interval_s: float = LOG_REPEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        kinds_max: int = LOG_KINDS_MAX,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._kinds_max = kinds_max
        # kind -> [time it was last let through, records suppressed since]
        self._seen: OrderedDict[_Kind, list[float]] = OrderedDict()
        self.suppressed = 0  # in total

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)  # a bad format: the handler reports it, once per kind here
        kind = (record.name, record.levelno, text, exc_type)
        now = self._clock()
        entry = self._seen.get(kind)
        if entry is not None and now - entry[0] < self.interval_s:
            entry[1] += 1
            self.suppressed += 1
            self._seen.move_to_end(kind)
            return False
        suppressed = int(entry[1]) if entry is not None else 0
        self._seen[kind] = [now, 0]
        self._seen.move_to_end(kind)
        while len(self._seen) > self._kinds_max:
            self._seen.popitem(last=False)
        if suppressed:
            # Appended to the format string (no % in it): the arguments still apply as they are.
            record.msg = (
                f"{record.msg} [{suppressed} more like this suppressed in the last {self.interval_s:.0f} s]"
            )
        return True


def install_repeat_filter(logger: logging.Logger | None = None) -> Callable[[], None]:
    """Put a RepeatFilter on every handler of `logger` (default: the root logger); returns its removal.

    One filter per handler: a filter shared by two handlers would see each record twice."""
    target = logger if logger is not None else logging.getLogger()
    installed = [(handler, RepeatFilter()) for handler in target.handlers]
    for handler, repeat in installed:
        handler.addFilter(repeat)

    def remove() -> None:
        for handler, repeat in installed:
            handler.removeFilter(repeat)

    return remove
