"""The engine alone, driving the toy ping/ack core: timers, delivery, streams, faults, stalls."""

from __future__ import annotations

import random

import pytest

from gossip.io import Datagram, Sealer
from sim.engine import Engine
from sim.network import Network
from tests.sim.toycore import RecordingListener, ToyCore

REGION_TIMEOUT_S = 10.0
FLEET_TIMEOUT_S = 30.0


def make_engine(
    seed: int,
    n: int,
    *,
    regions: int = 1,
    loss: float = 0.0,
    duplicate: float = 0.0,
    stream_interval_s: float | None = None,
    sealer: Sealer | None = None,
) -> tuple[Engine, list[ToyCore], RecordingListener]:
    rng = random.Random(seed)
    network = Network(random.Random(rng.getrandbits(64)), regions, loss=loss, duplicate=duplicate)
    listener = RecordingListener()
    engine = Engine(
        network,
        listener,
        region_stream_timeout_s=REGION_TIMEOUT_S,
        fleet_stream_timeout_s=FLEET_TIMEOUT_S,
        packet_max_bytes=1400,
        stream_max_bytes=1 << 20,
        sealer=sealer,
    )
    addrs = [f"10.{i % regions}.0.{i + 1}:7946" for i in range(n)]
    cores = []
    for i, addr in enumerate(addrs):
        core = ToyCore(addr, addrs, random.Random(rng.getrandbits(64)), stream_interval_s=stream_interval_s)
        cores.append(core)
        engine.add_node(f"n{i}", addr, i % regions, core)
    return engine, cores, listener


def test_same_seed_same_history() -> None:
    runs = []
    for _ in range(2):
        engine, cores, listener = make_engine(
            7, 12, regions=2, loss=0.2, duplicate=0.05, stream_interval_s=3.0
        )
        engine.run_until(30.0)
        runs.append(([c.log for c in cores], [(t, i, e) for t, i, e in listener.events], engine.drops))
    assert runs[0] == runs[1]
    engine, cores, _ = make_engine(8, 12, regions=2, loss=0.2, duplicate=0.05, stream_interval_s=3.0)
    engine.run_until(30.0)
    assert [c.log for c in cores] != runs[0][0]


def test_timers_fire_at_deadline_and_are_not_duplicated() -> None:
    engine, cores, _ = make_engine(1, 3)
    engine.run_until(10.0)
    for core in cores:
        timer_times = [t for t, kind, _ in core.log if kind == "timer"]
        # About one probe per second, plus ack deadlines; never the same instant twice.
        assert 10 <= len(timer_times) <= 25
        assert len(timer_times) == len(set(timer_times))
        assert timer_times == sorted(timer_times)


def test_ping_ack_round_trip_is_a_few_ms_in_a_region() -> None:
    engine, cores, listener = make_engine(2, 4)
    engine.run_until(20.0)
    assert listener.events == []  # nobody suspected anyone on a clean LAN
    assert all(not c.pending or max(d for _, d in c.pending.values()) > 19.0 for c in cores)


def test_crash_drops_packets_and_timers_then_restart_drives_a_new_core() -> None:
    engine, cores, listener = make_engine(3, 4)
    engine.run_until(5.0)
    engine.crash(0)
    dead_log_len = len(cores[0].log)
    engine.run_until(15.0)
    assert len(cores[0].log) == dead_log_len  # nothing reached the crashed core
    assert engine.drops["host_down"] > 0
    suspected = [e for _, _, e in listener.events if e.node_id == cores[0].addr]  # type: ignore[union-attr]
    assert suspected, "the others noticed the crash"
    fresh = ToyCore(cores[0].addr, [c.addr for c in cores], random.Random(99), now=engine.now)
    engine.restart(0, fresh)
    engine.run_until(25.0)
    assert any(kind == "timer" for _, kind, _ in fresh.log)
    assert any(kind == "dgram" for _, kind, _ in fresh.log)


def test_restart_at_a_new_address() -> None:
    engine, cores, _ = make_engine(4, 3)
    engine.run_until(2.0)
    engine.crash(2)
    fresh = ToyCore("10.0.9.9:7946", [c.addr for c in cores], random.Random(5), now=engine.now)
    engine.restart(2, fresh, "10.0.9.9:7946")
    assert engine.by_addr["10.0.9.9:7946"] == 2
    assert cores[2].addr not in engine.by_addr
    engine.call_node_at(engine.now, 0, lambda core, now: core.send("10.0.9.9:7946", "hello:1"))
    engine.run_until(3.0)
    assert any("hello:1" in text for _, kind, text in fresh.log if kind == "dgram")


def test_stall_defers_everything_to_its_end_in_original_order() -> None:
    engine, cores, _ = make_engine(5, 3)
    a, b = cores[0], cores[1]
    engine.run_until(1.0)
    engine.stall(1, 3.0)  # b frozen from 1.0 to 4.0
    for k, t in enumerate((1.5, 2.0, 2.5)):
        engine.call_node_at(t, 0, lambda core, now, k=k: core.send(b.addr, f"note:{k}"))
    engine.run_until(10.0)
    during = [entry for entry in b.log if 1.0 < entry[0] < 4.0]
    assert during == [], "a stalled node processes nothing"
    at_end = [entry for entry in b.log if entry[0] == 4.0]
    notes = [text for _, kind, text in at_end if kind == "dgram" and "note:" in text]
    assert notes == [f"{a.addr} note:0", f"{a.addr} note:1", f"{a.addr} note:2"]
    # Its timers came due during the stall and ran at the end too, in arrival order.
    kinds = [kind for _, kind, _ in at_end]
    assert "timer" in kinds
    # And it carries on normally afterwards.
    assert any(entry[0] > 4.5 and entry[1] == "timer" for entry in b.log)


def test_stall_backlog_keeps_arrival_order_between_timers_and_datagrams() -> None:
    engine, cores, _ = make_engine(6, 2)
    b = cores[1]
    engine.run_until(0.9)
    engine.stall(1, 2.0)  # until 2.9
    engine.call_node_at(1.0, 0, lambda core, now: core.send(b.addr, "first:1"))
    engine.run_until(3.0)
    at_end = [(kind, text) for t, kind, text in b.log if t == 2.9]
    dgram_first = [i for i, (kind, text) in enumerate(at_end) if "first:1" in text]
    assert dgram_first, at_end
    # b's probe timer was due at ~1.x s or later; anything due before the note came first.
    assert all(kind in ("timer", "dgram") for kind, _ in at_end)


def test_streams_reply_after_a_handshake_and_fail_to_dead_or_partitioned_hosts() -> None:
    engine, cores, _ = make_engine(9, 4)
    engine.run_until(1.0)
    client = cores[0]
    rid_ok: list[int] = []
    engine.call_node_at(1.0, 0, lambda core, now: rid_ok.append(core.open_stream(cores[1].addr, b"hi")))
    engine.run_until(2.0)
    (t_reply, rid, data) = client.replies[-1]
    assert rid == rid_ok[0] and data == b"echo:hi"
    # Three one-way trips for the request, one for the reply: at least 4 x 1 ms... and well under a second.
    assert 1.0 + 0.002 < t_reply < 1.2
    # A crashed host refuses within a round trip.
    engine.crash(2)
    engine.call_node_at(2.0, 0, lambda core, now: core.open_stream(cores[2].addr, b"x"))
    engine.run_until(3.0)
    assert client.replies[-1][2] is None and client.replies[-1][0] < 2.1
    # A partitioned host: the client waits for its stream timeout.
    engine.network.partition([[0], [1, 2, 3]])
    engine.call_node_at(3.0, 0, lambda core, now: core.open_stream(cores[3].addr, b"y"))
    engine.run_until(3.0 + REGION_TIMEOUT_S + 1.0)
    t_fail, _, data = client.replies[-1]
    assert data is None and t_fail == 3.0 + REGION_TIMEOUT_S
    engine.network.heal()
    # A server that does not answer: the client times out too.
    start = engine.now
    engine.call_node_at(start, 0, lambda core, now: core.open_stream(cores[3].addr, b"refuse"))
    engine.run_until(start + REGION_TIMEOUT_S + 1.0)
    assert client.replies[-1][2] is None and client.replies[-1][0] == start + REGION_TIMEOUT_S


def test_stream_reply_to_a_stalled_client_waits_for_the_stall() -> None:
    engine, cores, _ = make_engine(10, 2)
    engine.run_until(1.0)
    engine.call_node_at(1.0, 0, lambda core, now: core.open_stream(cores[1].addr, b"z"))
    engine.call_at(1.001, lambda now: engine.stall(0, 2.0))
    engine.run_until(5.0)
    t, _, data = cores[0].replies[-1]
    assert data == b"echo:z" and t == 3.001


def test_a_core_exception_is_a_violation_and_the_run_goes_on() -> None:
    engine, cores, listener = make_engine(11, 3)

    def boom(now: float, src: str, data: bytes, sender_id: str = "") -> None:
        raise RuntimeError("bad packet")

    cores[1].handle_datagram = boom  # type: ignore[method-assign]
    engine.run_until(5.0)
    assert listener.violations
    _now, kind, detail = listener.violations[0]
    assert kind == "no_core_exception" and "RuntimeError: bad packet" in detail and "n1" in detail
    assert any(t > 4.0 for t, k, _ in cores[2].log if k == "timer")


def test_oversized_datagram_is_a_violation() -> None:
    engine, cores, listener = make_engine(12, 2)
    engine.call_node_at(0.5, 0, lambda core, now: core.out.append(Datagram(cores[1].addr, b"x" * 1400)))
    engine.run_until(1.0)
    assert [k for _, k, _ in listener.violations] == ["packet_max_bytes"]


def test_wire_bytes_include_the_envelope() -> None:
    engine, cores, _ = make_engine(13, 2)
    engine.call_node_at(0.0, 0, lambda core, now: core.send(cores[1].addr, "abc"))
    before = engine.slots[0].tx_bytes
    engine.run_until(0.0)
    assert engine.slots[0].tx_bytes - before == 3 + 41


def test_overlapping_stalls_end_when_the_last_one_ends() -> None:
    engine, cores, _ = make_engine(14, 2)
    engine.run_until(1.0)
    engine.stall(1, 5.0)  # until 6.0
    engine.call_at(2.0, lambda now: engine.stall(1, 1.0))  # inside the first: no effect
    engine.call_at(5.0, lambda now: engine.stall(1, 3.0))  # extends it to 8.0
    engine.run_until(12.0)
    times = sorted({t for t, _, _ in cores[1].log if 1.0 < t < 9.0})
    assert times[0] == 8.0


def test_a_simulator_bug_is_not_mistaken_for_a_core_exception() -> None:
    engine, _, listener = make_engine(15, 2)
    engine.call_at(1.0, lambda now: [][0])
    with pytest.raises(IndexError):
        engine.run_until(2.0)
    assert listener.violations == []


class GarblingSealer:
    """Seals by prefixing a byte; a frame carrying b"garble", or the echo of b"bad", does not open."""

    def seal(self, plaintext: bytes, nonce: bytes) -> bytes:
        return b"S" + plaintext

    def open(self, data: bytes) -> bytes | None:
        return None if b"garble" in data or b"echo:bad" in data else data[1:]


def test_a_frame_that_does_not_open_is_dropped_and_counted() -> None:
    engine, cores, _ = make_engine(4, 2, sealer=GarblingSealer())
    client, server = cores
    engine.call_node_at(1.0, 0, lambda core, now: core.send(server.addr, "garble"))
    engine.call_node_at(1.0, 0, lambda core, now: core.open_stream(server.addr, b"garble"))
    engine.call_node_at(1.0, 0, lambda core, now: core.open_stream(server.addr, b"bad"))
    engine.run_until(2.0 + REGION_TIMEOUT_S)
    assert engine.drops["unopenable"] == 3
    assert [
        text for _, kind, text in server.log if kind != "timer" and "ping" not in text and "ack" not in text
    ] == [f"{client.addr} bad"]
    replies = {request_id: (t, data) for t, request_id, data in client.replies}
    # The request the server could not open: the server closes the connection (as the runtime
    # does), so the client's stream fails when that reaches it, not at its timeout.
    assert replies[1][1] is None and replies[1][0] < 1.5
    # The reply the client could not open: a failed stream at once, not a timeout.
    assert replies[2][1] is None and replies[2][0] < 1.5
    # Everything else opened: the pings were answered.
    assert any("ack" in text for _, kind, text in client.log if kind == "dgram")
