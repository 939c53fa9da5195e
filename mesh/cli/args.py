"""Flag values checked by the parser, with messages that say what to type instead."""

from __future__ import annotations

import argparse

from inference.inventory import TEXT_MAX_CHARS
from inference.manifest import LABEL_KEY_PATTERN, REGION_PATTERN
from mesh.netaddr import AddressError, split_hostport

LABEL_VALUE_MAX_CHARS = TEXT_MAX_CHARS  # what an inventory record carries (inference/inventory.py)
DURATION_MAX_S = 10 * 365 * 86400
_DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def address(text: str) -> str:
    """HOST:PORT (an IPv6 host in brackets)."""
    try:
        split_hostport(text)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def region(text: str) -> str:
    """A region name: 1-63 lowercase letters, digits, '.', '_' or '-'."""
    if not REGION_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a region name; use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "e.g. store-12"
        )
    return text


def label(text: str) -> tuple[str, str]:
    """KEY=VALUE, as (key, value)."""
    key, sep, value = text.partition("=")
    if not sep or not LABEL_KEY_PATTERN.fullmatch(key):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a label; use KEY=VALUE with a key of 1-63 letters, digits, '.', '_', "
            "'/' or '-', e.g. --label zone=a"
        )
    if len(value) > LABEL_VALUE_MAX_CHARS or not value.isprintable():
        raise argparse.ArgumentTypeError(
            f"label {key!r}: the value must be at most {LABEL_VALUE_MAX_CHARS} printable characters"
        )
    return key, value


def _seconds(text: str) -> float:
    """3600, 90s, 30m, 24h or 7d in seconds; NaN if it is not a number (with a unit)."""
    unit = text[-1:].lower()
    number = text[:-1] if unit in _DURATION_UNITS_S else text
    try:
        return float(number) * _DURATION_UNITS_S.get(unit, 1)
    except ValueError:
        return float("nan")


def duration_s(text: str) -> float:
    """A duration: 3600, 90s, 30m, 24h or 7d."""
    value = _seconds(text)
    if not 0 < value <= DURATION_MAX_S:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a duration such as 3600, 30m, 24h or 7d (up to 10 years)"
        )
    return value


def delay_range_s(text: str) -> tuple[float, float]:
    """A random delay's range MIN-MAX, each a duration that may be 0: 10s-30s, 0.5-2, or one
    duration for a fixed delay (0: at once)."""
    low_text, sep, high_text = text.partition("-")
    low, high = _seconds(low_text), _seconds(high_text if sep else low_text)
    example = "give MIN-MAX, e.g. 10s-30s or 0.5-2 (or 0: at once)"
    if not (0 <= low <= DURATION_MAX_S and 0 <= high <= DURATION_MAX_S):
        raise argparse.ArgumentTypeError(f"{text!r}: each delay must be a duration of 0 or more; {example}")
    if low > high:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the shortest delay ({low:g} s) is longer than the longest ({high:g} s); {example}"
        )
    return low, high


def uses(text: str) -> int:
    """How many devices an invite admits: 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: --uses takes a number of devices, 1 or more")
    return value


EVENTS_MAX_MAX = 1_000_000  # a million events is a few hundred MB: the most an agent may keep


def threads(text: str) -> int:
    """--intra-op-threads, --inference-threads: 1 to 64."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of threads from 1 to 64")
    return value


def events_max(text: str) -> int:
    """--events-max: how many events an agent keeps, 1 to EVENTS_MAX_MAX."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= EVENTS_MAX_MAX:
        raise argparse.ArgumentTypeError(f"{text!r}: --events-max takes a number from 1 to {EVENTS_MAX_MAX}")
    return value


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
SIZE_MAX_BYTES = 1 << 50


def size_bytes(text: str) -> int:
    """A size in bytes: a number, optionally with K, M, G or T (powers of 1024), e.g. 500M."""
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = raw[-1:] if raw[-1:] in _SIZE_UNITS else ""
    number = raw[: len(raw) - len(unit)]
    if not number.isdigit() or len(number) > 16 or not 0 <= int(number) * _SIZE_UNITS[unit] <= SIZE_MAX_BYTES:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size such as 2147483648, 500M or 2G")
    return int(number) * _SIZE_UNITS[unit]
