"""The CLI's progress line: redrawn in place on a terminal, printed only on change elsewhere."""

from __future__ import annotations

import io

from mesh.cli.progress import ERASE_LINE, Figures, Progress, bar, bytes_text


class Stream(io.StringIO):
    """A text stream that says whether it is a terminal."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bar_and_bytes_read_for_people() -> None:
    assert bar(0, 4, width=8) == "[--------]"
    assert bar(2, 4, width=8) == "[####----]"
    assert bar(9, 4, width=8) == "[########]"  # never over full
    assert bar(0, 0, width=4) == "[----]"  # nothing to do yet: no division by zero
    assert bytes_text(512) == "512B"
    assert bytes_text(3 * 1024 * 1024 // 2) == "1.5MiB"


def test_on_a_terminal_the_line_is_redrawn_in_place_with_bytes_and_seconds() -> None:
    stream, clock = Stream(tty=True), Clock()
    progress = Progress(stream, clock, columns=120)
    figures = Figures("vibration", 1, 3, "replicas ready", 1024 * 1024, 4 * 1024 * 1024, "fetching")
    progress.show(figures)
    clock.now += 12.4
    progress.show(figures)  # the same figures are redrawn: the seconds move
    out = stream.getvalue()
    assert out.count(ERASE_LINE) == 2 and "\n" not in out
    assert out.endswith(
        ERASE_LINE + "vibration [######--------------] 1/3 replicas ready 1MiB/4MiB fetching 12s"
    )
    progress.note("unplaced: vibration/2: no node meets the requirements")
    assert stream.getvalue().endswith(ERASE_LINE + "unplaced: vibration/2: no node meets the requirements\n")
    progress.clear()  # nothing drawn since the note: nothing to take off
    assert stream.getvalue().endswith("requirements\n")


def test_without_a_terminal_a_line_is_printed_only_when_the_figures_change() -> None:
    stream, clock = Stream(tty=False), Clock()
    progress = Progress(stream, clock)
    mib = 1024 * 1024
    for done_bytes in range(0, 10 * mib + 1, mib // 4):  # 41 polls of a 10 MiB fetch
        clock.now += 0.2
        progress.show(Figures("vibration", 0, 2, "replicas ready", done_bytes, 10 * mib))
    progress.show(Figures("vibration", 1, 2, "replicas ready", 10 * mib, 10 * mib))
    progress.show(Figures("vibration", 1, 2, "replicas ready", 10 * mib, 10 * mib))
    lines = stream.getvalue().splitlines()
    # One line per tenth of the bytes (0 to 10 MiB: 11 steps), one for the count that changed.
    assert len(lines) == 12, lines
    assert lines[0] == "vibration [--------------------] 0/2 replicas ready 0B/10MiB"
    assert lines[-1] == "vibration [##########----------] 1/2 replicas ready 10MiB/10MiB"
    assert ERASE_LINE not in stream.getvalue()  # no control characters in a log


def test_a_stream_can_be_taken_as_a_terminal_or_not_whatever_it_says() -> None:
    stream = Stream(tty=False)
    Progress(stream, Clock(), tty=True, columns=80).show(Figures("upload", 1, 2))
    assert stream.getvalue() == ERASE_LINE + "upload [##########----------] 1/2 0s"


def test_a_terminal_line_never_wraps() -> None:
    stream = Stream(tty=True)
    Progress(stream, Clock(), columns=20).show(Figures("deployment vibration", 1, 2, "replicas ready"))
    assert stream.getvalue() == ERASE_LINE + "deployment vibratio"  # one column spare: no wrap
