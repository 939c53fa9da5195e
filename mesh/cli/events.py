"""`murmur events`: what a node saw happen (GET /v1/events), and with --follow, as it happens
(the Server-Sent Events stream GET /v1/events/stream), until Ctrl-C.

Events are per node: each node records what it sees, so ask any node of the region
you care about.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

from mesh.cli import args as flags
from mesh.cli.client import CliError, NodeClient
from mesh.cli.helptext import command

LIMIT_DEFAULT = 100
STREAM_READ_TIMEOUT_S = 45.0  # the node sends a heartbeat every 15 s: three missed, it is gone
RECONNECT_DELAYS_S = (1.0, 2.0, 5.0)  # then every 5 s
SSE_LINE_MAX_BYTES = 64 * 1024
TIME_WIDTH = len("2026-05-01 10:00:00.123Z")
KIND_WIDTH = 16
SUBJECT_WIDTH = 16


def event_time(event: dict[str, Any]) -> str:
    """An event's time for people: `2026-05-01 10:00:00.123Z` (UTC)."""
    unix_ms = event.get("unix_ms")
    if not isinstance(unix_ms, int):
        return str(event.get("time", "?"))
    seconds, ms = divmod(unix_ms, 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def _row(event: dict[str, Any]) -> list[str]:
    return [
        event_time(event),
        str(event.get("kind", "")),
        str(event.get("subject", "")),
        str(event.get("reason", "")),
    ]


HEADERS = ["TIME (UTC)", "KIND", "SUBJECT", "REASON"]


def format_table(events: Sequence[dict[str, Any]]) -> str:
    """Events as an aligned table, oldest first."""
    rows = [HEADERS, *(_row(e) for e in events)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip() for r in rows
    )


def format_line(event: dict[str, Any]) -> str:
    """One event of a followed stream (fixed widths: later events cannot realign earlier ones)."""
    when, kind, subject, reason = _row(event)
    cells = [when.ljust(TIME_WIDTH), kind.ljust(KIND_WIDTH), subject.ljust(SUBJECT_WIDTH), reason]
    return "  ".join(cells).rstrip()


def since_param(text: str, now_unix: float | None = None) -> str:
    """--since: a duration back from now (90s, 30m, 24h, 7d) or a time (2026-05-01T10:00:00Z),
    as the API's `since` (Unix ms for a duration, the time as given otherwise)."""
    if text[:1].isdigit() and ("T" in text or "-" in text[1:]):
        return text  # a time: the node parses it (docs/api.md)
    try:
        back_s = flags.duration_s(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a duration back from now (90s, 30m, 24h, 7d) or a UTC time such as "
            "2026-05-01T10:00:00Z"
        ) from None
    now = time.time() if now_unix is None else now_unix
    return str(max(0, int((now - back_s) * 1000)))


def limit(text: str) -> int:
    """--limit: 1 or more (a node keeps 10,000 events unless its --events-max says otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: --limit takes a number of events, 1 or more")
    return value


def parse_sse(lines: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """(id, data) of each message of a Server-Sent Events stream; comments and other fields skipped."""
    event_id, data = "", list[str]()
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield event_id, "\n".join(data)
            data = []
            continue
        if line.startswith(":"):
            continue
        field, _sep, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "id":
            event_id = value


def _stream_lines(resp: IO[bytes]) -> Iterator[bytes]:
    while True:
        line = resp.readline(SSE_LINE_MAX_BYTES)
        if not line:
            return
        yield line


def follow(
    node: NodeClient,
    params: dict[str, str],
    last_seq: int,
    show: Callable[[dict[str, Any]], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    opener: Callable[..., IO[bytes]] = urllib.request.urlopen,
) -> None:
    """Show every event of the node's stream after `last_seq`, reconnecting (Last-Event-ID) when the
    stream breaks; returns only if the node refuses the stream (CliError) or on Ctrl-C (raised)."""
    failures = 0
    while True:
        url = node.url("/v1/events/stream", params)
        request = urllib.request.Request(
            url, headers={"Accept": "text/event-stream", "Last-Event-ID": str(last_seq)}
        )
        try:
            with opener(request, timeout=STREAM_READ_TIMEOUT_S) as resp:
                failures = 0
                for event_id, data in parse_sse(_stream_lines(resp)):
                    try:
                        event = json.loads(data)
                    except ValueError:
                        continue
                    if isinstance(event, dict):
                        show(event)
                    if event_id.isdigit():
                        last_seq = int(event_id)
        except urllib.error.HTTPError as exc:
            if exc.code in (400, 404):
                raise CliError(f"{url}: HTTP {exc.code}: {_error_text(exc)}") from None
            reason = f"HTTP {exc.code}: {_error_text(exc)}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
        else:
            reason = "the node ended the stream"
        delay_s = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
        failures += 1
        print(
            f"murmur events: lost the stream of {node.base} ({reason}); reconnecting in {delay_s:g} s",
            file=sys.stderr,
        )
        sleep(delay_s)


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(exc.read())
    except (ValueError, OSError):
        return str(exc.reason)
    return str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)


def cmd_events(args: argparse.Namespace) -> int:
    node = NodeClient(args.node)
    params: dict[str, str] = {"limit": str(args.limit)}
    if args.since is not None:
        params["since"] = args.since
    if args.kind:
        params["kind"] = ",".join(args.kind)
    answer = node.get("/v1/events", params)
    if not isinstance(answer, dict) or not isinstance(answer.get("events"), list):
        raise CliError(f"{node.base} answered something other than an event list; is it a murmur agent?")
    events = [e for e in answer["events"] if isinstance(e, dict)]
    if args.json and not args.follow:
        print(json.dumps(answer, indent=2))
        return 0

    def show(event: dict[str, Any]) -> None:
        print(json.dumps(event, separators=(",", ":")) if args.json else format_line(event), flush=True)

    if not args.json:
        print(
            f"events of node {answer.get('node_id')} (region {answer.get('region')}) at {node.base}",
            file=sys.stderr,
        )
    if not args.follow:
        print(format_table(events) if events else "no events")
        return 0
    if not args.json:
        print(format_line(dict(zip(["time", "kind", "subject", "reason"], HEADERS, strict=True))))
    for event in events:
        show(event)
    last_seq = answer.get("last_seq")
    stream_params = {k: v for k, v in params.items() if k == "kind"}
    try:
        follow(node, stream_params, last_seq if isinstance(last_seq, int) else 0, show)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a follow ends
    return 0


def register(sub: Any, node_help: str) -> None:
    """Add `events` to the `murmur` subcommands."""
    events = command(
        sub,
        "events",
        summary="what a node saw happen: members joining and dying, commands, refused joins, key rotations",
        description="List the events the asked node recorded (each node records what it sees: ask any "
        "node of the region), oldest first. --follow keeps printing new events as they happen, "
        "until Ctrl-C; it reconnects by itself if the stream breaks.",
        examples=[
            "murmur events",
            "murmur --node http://10.0.0.5:7800 events --since 30m --kind member_dead,member_suspect",
            "murmur events --follow",
            "murmur events --since 2026-05-01T10:00:00Z --json",
        ],
    )
    events.add_argument("--node", default=argparse.SUPPRESS, help=node_help)
    events.add_argument(
        "--since",
        metavar="DURATION|TIME",
        type=since_param,
        help="only events since this long ago (90s, 30m, 24h, 7d) or this UTC time (2026-05-01T10:00:00Z)",
    )
    events.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help="only events of this kind (repeatable, or comma-separated), e.g. member_dead; "
        "docs/observability.md lists the kinds",
    )
    events.add_argument(
        "--limit",
        type=limit,
        default=LIMIT_DEFAULT,
        help=f"at most this many past events, the newest (default {LIMIT_DEFAULT})",
    )
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    events.add_argument(
        "--json",
        action="store_true",
        help="print the API's JSON (with --follow: one JSON object per event and line)",
    )
    events.set_defaults(func=cmd_events)
