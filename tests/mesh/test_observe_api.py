"""GET /v1/events, the SSE stream GET /v1/events/stream and GET /metrics against a real Agent
(mesh/service/observeapi.py), served the way launch.py serves them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gossip.events import AdmissionRefused, MemberChanged, MemberState
from mesh.service.agent import Agent
from mesh.service.api import create_app
from mesh.service.events import Observation
from mesh.service.observeapi import EventStreams, add_routes, parse_time_ms
from tests.mesh.test_deploy_api import deploy_doc, make_agent, signed

Client = TestClient[web.Request, web.Application]


async def serve(agent: Agent, streams: EventStreams | None = None) -> Client:
    app = create_app(agent)
    add_routes(app, streams or agent.event_streams, agent.metrics_registry)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Agent, Client]]:
    agent = make_agent(tmp_path / "node")
    client = await serve(agent)
    yield agent, client
    await client.close()
    agent.store.close()


def member(node_id: str, state: MemberState) -> MemberChanged:
    return MemberChanged("region", node_id, "127.0.0.1:9", state, 1)


def feed(agent: Agent, *events: Any) -> None:
    """Hand core events to the agent's subscribers, as the runtime does."""
    for event in events:
        agent.recorder.on_event(event)


async def test_commands_and_member_changes_are_listed(api: tuple[Agent, Client]) -> None:
    agent, client = api
    status, body = await signed(client, "POST", "/v1/deployments", deploy_doc())
    assert status == 202, body
    status, body = await signed(client, "POST", "/v1/deployments", deploy_doc())  # a retry: not new
    assert status == 202 and body["new"] is False
    feed(agent, member("bbbb", MemberState.ALIVE), member("bbbb", MemberState.DEAD))
    answer = await (await client.get("/v1/events")).json()
    assert answer["node_id"] == agent.node_id and answer["region"] == "north"
    assert answer["max_events"] == 10_000 and answer["last_seq"] == len(answer["events"])
    # (The test node also becomes its region's gateway: gateway_changed.)
    kinds = [(e["kind"], e["subject"]) for e in answer["events"] if e["kind"] != "gateway_changed"]
    assert kinds == [
        ("command_accepted", "desired/deployment/vibration"),
        ("member_joined", "bbbb"),
        ("member_dead", "bbbb"),
    ]
    accepted = [e for e in answer["events"] if e["kind"] == "command_accepted"]
    assert accepted[0]["details"]["command"] == "deploy"
    assert answer["events"][0]["time"].endswith("Z")
    dead = await (await client.get("/v1/events", params={"kind": "member_dead,member_suspect"})).json()
    assert [e["seq"] for e in dead["events"]] == [answer["last_seq"]]
    paged = await (await client.get("/v1/events", params={"after": "1", "limit": "1"})).json()
    assert [e["seq"] for e in paged["events"]] == [2]
    late = await (await client.get("/v1/events", params={"since": "2999-01-01T00:00:00Z"})).json()
    assert late["events"] == []


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"kind": "member_exploded"}, "unknown kind"),
        ({"since": "yesterday"}, "since"),
        ({"since": "9" * 30}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "99999999999999999999999"}, "limit"),
        ({"limit": "-3"}, "limit"),
        ({"after": "x"}, "after"),
        ({"kind": "k" * 5000}, "over 1024"),
    ],
)
async def test_bad_queries_get_a_400_naming_the_parameter(
    api: tuple[Agent, Client], params: dict[str, str], fragment: str
) -> None:
    _agent, client = api
    for path in ("/v1/events", "/v1/events/stream"):
        resp = await client.get(path, params=params)
        if path.endswith("stream") and ("limit" in params or "after" in params):
            continue  # the stream has no limit or after
        assert resp.status == 400, (path, params)
        assert fragment in (await resp.json())["error"]


def test_since_takes_unix_ms_and_iso_times() -> None:
    assert parse_time_ms("1777629600123") == 1_777_629_600_123
    assert parse_time_ms("2026-05-01T10:00:00Z") == 1_777_629_600_000
    assert parse_time_ms("2026-05-01T12:00:00+02:00") == 1_777_629_600_000
    assert parse_time_ms("2026-05-01T10:00:00") == 1_777_629_600_000  # no zone: UTC


async def read_messages(resp: Any, count: int) -> list[tuple[int, dict[str, Any]]]:
    """The next `count` SSE messages (id, data) of a stream; comments skipped."""
    out: list[tuple[int, dict[str, Any]]] = []
    event_id = -1
    while len(out) < count:
        line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            out.append((event_id, json.loads(line[6:])))
    return out


async def test_the_stream_sends_live_events_and_resumes_after_last_event_id(
    api: tuple[Agent, Client],
) -> None:
    agent, client = api
    feed(agent, member("bbbb", MemberState.ALIVE))
    resp = await client.get("/v1/events/stream")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    feed(agent, member("bbbb", MemberState.SUSPECT), member("cccc", MemberState.ALIVE))
    got = await read_messages(resp, 2)  # live only: no --since, no Last-Event-ID
    assert [(i, e["kind"], e["subject"]) for i, e in got] == [
        (2, "member_suspect", "bbbb"),
        (3, "member_joined", "cccc"),
    ]
    resp.close()
    # A reader that saw up to 1 reconnects: it gets 2 and 3 first, then what is new.
    resp = await client.get("/v1/events/stream", headers={"Last-Event-ID": "1"})
    feed(agent, member("bbbb", MemberState.DEAD))
    assert [i for i, _ in await read_messages(resp, 3)] == [2, 3, 4]
    resp.close()
    # An id from before this node restarted (above its newest): everything held.
    resp = await client.get("/v1/events/stream", headers={"Last-Event-ID": "999"})
    assert [i for i, _ in await read_messages(resp, 4)] == [1, 2, 3, 4]
    resp.close()
    # since and kind filter the backlog and the live events alike.
    resp = await client.get("/v1/events/stream", params={"since": "0", "kind": "member_dead"})
    feed(agent, member("cccc", MemberState.DEAD))
    assert [(i, e["subject"]) for i, e in await read_messages(resp, 2)] == [(4, "bbbb"), (5, "cccc")]
    resp.close()


async def test_a_heartbeat_comment_keeps_an_idle_stream_alive(tmp_path: Path) -> None:
    agent = make_agent(tmp_path / "node")
    streams = EventStreams(agent.events, "north", heartbeat_s=0.05)
    client = await serve(agent, streams)
    try:
        resp = await client.get("/v1/events/stream")
        lines = [(await asyncio.wait_for(resp.content.readline(), 10)).decode() for _ in range(6)]
        assert ": heartbeat\n" in lines
        resp.close()
    finally:
        await client.close()
        agent.store.close()


async def test_streams_are_capped(tmp_path: Path) -> None:
    agent = make_agent(tmp_path / "node")
    streams = EventStreams(agent.events, "north", streams_max=2)
    client = await serve(agent, streams)
    try:
        first = await client.get("/v1/events/stream")
        second = await client.get("/v1/events/stream")
        third = await client.get("/v1/events/stream")
        assert (first.status, second.status, third.status) == (200, 200, 503)
        assert "event streams" in (await third.json())["error"]
        assert third.headers["Retry-After"] == "5"
        assert streams.counters["stream_refused_full"] == 1
        first.close()
        second.close()
    finally:
        await client.close()
        agent.store.close()
    assert streams.open == []  # shutdown ended the streams


async def wait_for(predicate: Any, timeout_s: float = 20.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.mark.parametrize(
    "guard",
    [
        {"queue_max": 64, "write_timeout_s": 600.0},  # it falls 64 events behind
        {"queue_max": 10**9, "write_timeout_s": 1.0},  # a write waits on it for over a second
    ],
)
async def test_a_reader_that_does_not_read_is_cut_off_not_buffered(
    tmp_path: Path, guard: dict[str, Any]
) -> None:
    agent = make_agent(tmp_path / "node")
    streams = EventStreams(agent.events, "north", **guard)
    client = await serve(agent, streams)
    reader = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        reader.connect(("127.0.0.1", client.port))
        reader.sendall(b"GET /v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await wait_for(lambda: len(streams.open) == 1)
        # Events keep coming and the reader reads none of them.
        reason = "x" * 400
        for i in range(200_000):
            agent.events.record(Observation("member_dead", f"n{i}", reason))
            if i % 64 == 0:
                await asyncio.sleep(0)
            if not streams.open:
                break
        assert await wait_for(lambda: not streams.open)
        assert streams.counters["stream_dropped_slow"] == 1
        assert agent.events.subscribers == 0
    finally:
        reader.close()
        await client.close()
        agent.store.close()


async def test_metrics_are_prometheus_text(api: tuple[Agent, Client]) -> None:
    agent, client = api
    status, _ = await signed(client, "POST", "/v1/deployments", deploy_doc())
    assert status == 202
    feed(agent, AdmissionRefused("intruder", "invite_expired"))
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    assert samples[("murmur_members", (("pool", "region"), ("state", "alive")))] == 1  # itself
    assert samples[("murmur_commands_accepted_total", (("command", "deploy"),))] == 1
    assert samples[("murmur_records", (("kind", "desired"),))] == 1
    assert samples[("murmur_join_refusals_total", ())] == 1
    assert samples[("murmur_events_total", (("kind", "join_refused"),))] == 1
    assert families["murmur_drops"].type == "counter"
    with contextlib.suppress(KeyError):
        del families["murmur_node_info"]
    assert all(name.startswith("murmur_") for name in families)


async def test_a_last_event_id_that_is_not_a_number_is_a_400(api: tuple[Agent, Client]) -> None:
    _agent, client = api
    for value in ("abc", "-1", "9" * 40):
        resp = await client.get("/v1/events/stream", headers={"Last-Event-ID": value})
        assert resp.status == 400
        assert "Last-Event-ID" in (await resp.json())["error"]
