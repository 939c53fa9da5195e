"""`murmur events` (mesh/cli/events.py): the table, --json, --kind, --since, and --follow's stream
reading, reconnecting and Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gossip.events import MemberChanged, MemberState
from mesh.cli import events as cli
from mesh.cli.client import NodeClient
from mesh.cli.murmur import main
from mesh.service.agent import Agent
from tests.mesh.test_deploy_api import make_agent
from tests.mesh.test_observe_api import Client, serve


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Agent, Client]]:
    agent = make_agent(tmp_path / "node")
    client = await serve(agent)
    agent.recorder.on_event(MemberChanged("region", "bbbbbbbbbbbbbbbb", "127.0.0.1:9", MemberState.ALIVE, 1))
    agent.recorder.on_event(MemberChanged("region", "bbbbbbbbbbbbbbbb", "127.0.0.1:9", MemberState.DEAD, 1))
    yield agent, client
    await client.close()
    agent.store.close()


async def murmur(client: Client, *argv: str) -> int:
    return await asyncio.to_thread(main, [*argv, "--node", f"127.0.0.1:{client.port}"])


async def test_events_prints_an_aligned_table(
    api: tuple[Agent, Client], capsys: pytest.CaptureFixture[str]
) -> None:
    _agent, client = api
    assert await murmur(client, "events") == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "KIND", "SUBJECT", "REASON"]
    assert "member_joined" in lines[1] and "member_dead" in lines[2]
    # Aligned: every column starts where its header does.
    assert lines[1].index("member_joined") == lines[0].index("KIND") == lines[2].index("member_dead")
    assert lines[1][:4].isdigit() and "Z " in lines[1]  # a readable UTC time
    assert "events of node aaaaaaaaaaaaaaaa (region north)" in out.err


async def test_events_json_and_kind(api: tuple[Agent, Client], capsys: pytest.CaptureFixture[str]) -> None:
    _agent, client = api
    assert await murmur(client, "events", "--kind", "member_dead", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["kind"] for e in doc["events"]] == ["member_dead"]
    assert await murmur(client, "events", "--kind", "member_exploded") == 1
    assert "unknown kind 'member_exploded'" in capsys.readouterr().err
    assert await murmur(client, "events", "--since", "2999-01-01T00:00:00Z") == 0
    assert capsys.readouterr().out.strip() == "no events"


def test_since_is_a_duration_back_or_a_time() -> None:
    assert cli.since_param("30m", now_unix=10_000.0) == str((10_000 - 1800) * 1000)
    assert cli.since_param("2026-05-01T10:00:00Z") == "2026-05-01T10:00:00Z"
    with pytest.raises(argparse.ArgumentTypeError, match="duration back from now"):
        cli.since_param("last tuesday")


def test_bad_flags_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["events", "--since", "soon"], ["events", "--limit", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2


def test_parse_sse_reads_ids_and_data_and_skips_comments() -> None:
    stream = [
        b"retry: 3000\n",
        b": hello\n",
        b"\n",
        b"id: 4\n",
        b'data: {"a":1}\n',
        b"\n",
        b"id: 5\n",
        b"data: x\n",
    ]
    stream += [b"data: y\n", b"\n"]
    assert list(cli.parse_sse(stream)) == [("4", '{"a":1}'), ("5", "x\ny")]


class Stop(Exception):
    pass


def test_follow_reconnects_after_the_last_event_it_saw() -> None:
    def message(seq: int) -> bytes:
        return f"id: {seq}\ndata: {json.dumps({'seq': seq, 'kind': 'member_dead'})}\n\n".encode()

    streams = [io.BytesIO(message(8) + message(9)), io.BytesIO(message(10))]
    asked: list[str | None] = []

    def opener(request: Any, timeout: float) -> io.BytesIO:
        asked.append(request.get_header("Last-event-id"))
        return streams.pop(0)

    shown: list[int] = []

    def show(event: dict[str, Any]) -> None:
        shown.append(event["seq"])
        if event["seq"] == 10:
            raise Stop

    sleeps: list[float] = []
    with pytest.raises(Stop):
        cli.follow(NodeClient("127.0.0.1:1"), {}, 7, show, sleep=sleeps.append, opener=opener)
    assert shown == [8, 9, 10]
    assert asked == ["7", "9"]  # the second connection resumes after 9
    assert sleeps == [1.0]


async def test_follow_streams_until_ctrl_c_and_exits_0(
    api: tuple[Agent, Client], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, client = api
    real_format = cli.format_line
    seen: list[str] = []

    def format_line(event: dict[str, Any]) -> str:
        line = real_format(event)
        seen.append(line)
        if "cccccccccccccccc" in line:
            raise KeyboardInterrupt  # the user presses Ctrl-C once the live event is shown
        return line

    monkeypatch.setattr(cli, "format_line", format_line)
    task = asyncio.ensure_future(murmur(client, "events", "--follow"))
    assert await _wait(lambda: agent.event_streams.open != [])
    agent.recorder.on_event(MemberChanged("region", "cccccccccccccccc", "127.0.0.1:8", MemberState.ALIVE, 1))
    assert await asyncio.wait_for(task, 20) == 0
    out = capsys.readouterr().out
    assert "member_dead" in out  # the past events first
    assert any("cccccccccccccccc" in line for line in seen)


async def _wait(predicate: Any, timeout_s: float = 20.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_events_max_of_the_agent_is_checked() -> None:
    from mesh.cli.args import events_max

    assert events_max("50000") == 50_000
    for bad in ("0", "-5", "many", "10000000"):
        with pytest.raises(argparse.ArgumentTypeError, match="--events-max"):
            events_max(bad)
