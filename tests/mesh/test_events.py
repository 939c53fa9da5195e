"""The event log (mesh/service/events.py) and what the cores' events become (mesh/service/eventkinds.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.config import Era, VoterConfig
from consensus.events import ConfigChanged, LeaderChanged
from gossip.events import (
    AdmissionRefused,
    BroadcastDelivered,
    GatewayChanged,
    MemberChanged,
    MemberState,
    Revoked,
)
from gossip.records import sign_record
from inference.assignments import ReplicaState
from inference.placement import ChangeKind
from inference.placing_ports import AppliedChange, PlacementApplied, ReplicaDropped, ReplicaStateChanged
from mesh.service.eventkinds import KINDS, PLACEMENT_DEPLOYMENTS_LISTED, SOURCES, EventRecorder, command_name
from mesh.service.events import TEXT_MAX_CHARS, EventLog, Observation, iso_utc
from node.netkeys import NetworkKeyInstalled, NetworkKeyInUse, NetworkKeysRetired
from tests.mesh.test_deploy_api import OPERATOR


class Clock:
    def __init__(self, now_s: float = 1_777_629_600.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def obs(kind: str = "member_dead", subject: str = "n1") -> Observation:
    return Observation(kind, subject, "why")


def test_events_are_numbered_timed_and_shown_as_json() -> None:
    log = EventLog("me", clock=Clock(1_777_629_600.123))
    event = log.record(Observation("member_dead", "n1", "declared dead", (("pool", "region"),)))
    assert event.to_json() == {
        "seq": 1,
        "time": "2026-05-01T10:00:00.123Z",
        "unix_ms": 1_777_629_600_123,
        "node": "me",
        "kind": "member_dead",
        "subject": "n1",
        "reason": "declared dead",
        "details": {"pool": "region"},
    }
    assert log.record(obs()).seq == 2
    assert log.last_seq == 2
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


@settings(max_examples=50)
@given(max_events=st.integers(1, 50), count=st.integers(0, 200))
def test_the_ring_buffer_keeps_the_newest_max_events(max_events: int, count: int) -> None:
    log = EventLog("me", max_events=max_events, clock=Clock())
    for _ in range(count):
        log.record(obs())
    held = log.query(limit=10**6)
    assert len(held) == min(count, max_events)
    assert [e.seq for e in held] == list(range(count - len(held) + 1, count + 1))


def test_events_older_than_max_age_are_forgotten() -> None:
    clock = Clock()
    log = EventLog("me", max_age_s=60.0, clock=clock)
    log.record(obs(subject="old"))
    clock.now_s += 30
    log.record(obs(subject="newer"))
    clock.now_s += 45  # the first is 75 s old, the second 45 s
    assert [e.subject for e in log.query()] == ["newer"]
    assert len(log) == 1
    assert log.counts_by_kind["member_dead"] == 2  # counted for ever (metrics), held for a while


def test_query_filters_and_limits() -> None:
    clock = Clock()
    log = EventLog("me", clock=clock)
    for i in range(10):
        clock.now_s += 1
        log.record(obs("member_dead" if i % 2 else "member_joined", f"n{i}"))
    assert [e.seq for e in log.query(limit=3)] == [8, 9, 10]  # the newest
    assert [e.seq for e in log.query(after_seq=4, limit=3)] == [5, 6, 7]  # paging forward
    assert [e.seq for e in log.query(kinds=["member_joined"])] == [1, 3, 5, 7, 9]
    since_ms = log.query()[6].unix_ms
    assert [e.seq for e in log.query(since_unix_ms=since_ms)] == [7, 8, 9, 10]
    assert log.query(limit=0) == []


def test_long_text_from_a_peer_is_cut() -> None:
    log = EventLog("me", clock=Clock())
    event = log.record(Observation("join_refused", "x" * 10_000, "y" * 10_000))
    assert len(event.subject) == len(event.reason) == TEXT_MAX_CHARS


def test_a_subscriber_that_falls_behind_is_cut_off_not_buffered() -> None:
    log = EventLog("me", clock=Clock())
    sub = log.subscribe(queue_max=3)
    for _ in range(3):
        log.record(obs())
    assert [e.seq for e in sub.take()] == [1, 2, 3]
    for _ in range(10):
        log.record(obs())
    assert sub.overflowed
    assert sub.take() == []  # nothing kept for it
    log.unsubscribe(sub)
    assert log.subscribers == 0


# --- what the cores' events become ----------------------------------------------------------------


def _member(state: MemberState, addr: str = "127.0.0.1:1", pool: str = "region") -> MemberChanged:
    return MemberChanged(pool, "n1", addr, state, 1)


def test_member_changes_name_joined_suspect_dead_alive_again_left() -> None:
    log = EventLog("me", clock=Clock())
    recorder = EventRecorder(log)
    for event in (
        _member(MemberState.ALIVE),
        _member(MemberState.SUSPECT),
        _member(MemberState.ALIVE),
        _member(MemberState.SUSPECT),
        _member(MemberState.DEAD),
        _member(MemberState.ALIVE),
        _member(MemberState.ALIVE, addr="127.0.0.1:2"),
        _member(MemberState.LEFT),
        _member(MemberState.ALIVE, pool="fleet"),
    ):
        recorder.on_event(event)
    events = log.query()
    assert [e.kind for e in events] == [
        "member_joined",
        "member_suspect",
        "member_alive",
        "member_suspect",
        "member_dead",
        "member_alive",
        "member_alive",
        "member_left",
        "member_joined",  # the fleet pool is a pool of its own
    ]
    assert "refuted" in events[2].reason
    assert "back after being dead" in events[5].reason
    assert "new address 127.0.0.1:2" in events[6].reason
    assert dict(events[8].details)["pool"] == "fleet"


def test_every_source_makes_only_known_kinds() -> None:
    samples = [
        _member(MemberState.ALIVE),
        _member(MemberState.DEAD),
        GatewayChanged(True),
        GatewayChanged(False),
        Revoked("n9"),
        NetworkKeyInstalled(2, "k2", b"k" * 32),
        NetworkKeyInUse(2, "k2", b"k" * 32),
        NetworkKeysRetired(2, (b"k" * 32,)),
        LeaderChanged("r1", Era(0, "n1"), 3, "n1"),
        LeaderChanged("r1", Era(0, "n1"), 4, ""),
        ConfigChanged("r1", Era(0, "n1"), VoterConfig(1, ("n1", "n2"), 3)),
        PlacementApplied(
            "r1", (0, "n1"), 3, 2, "n1", (AppliedChange("cam", 0, ChangeKind.MOVED, "n2", "n3"),)
        ),
        *(ReplicaStateChanged("cam", 0, state) for state in ReplicaState),
        ReplicaDropped("cam", 0),
    ]
    assert {type(s) for s in samples} == set(SOURCES)  # a sample of every source
    log = EventLog("me", clock=Clock())
    recorder = EventRecorder(log)
    for sample in samples:
        recorder.on_event(sample)
    kinds = [e.kind for e in log.query()]
    assert len(kinds) == len(samples)
    assert set(kinds) <= set(KINDS)
    assert "leader_elected" in kinds and "leader_lost" in kinds and "key_rotated" in kinds
    assert "placement_changed" in kinds and "replica_ready" in kinds and "replica_dropped" in kinds


def test_events_no_source_knows_are_not_recorded() -> None:
    log = EventLog("me", clock=Clock())
    EventRecorder(log).on_event(BroadcastDelivered("n1", 1, b"x"))
    assert len(log) == 0


def test_a_refused_join_is_recorded_once_per_node_and_reason_in_a_while_and_always_counted() -> None:
    clock = Clock()
    log = EventLog("me", clock=clock)
    recorder = EventRecorder(log, refused_regions=lambda node_id: ("north", "south"))
    for _ in range(5):
        recorder.on_event(AdmissionRefused("intruder", "invite_wrong_region"))
    recorder.on_event(AdmissionRefused("intruder", "invite_expired"))
    clock.now_s += 601
    recorder.on_event(AdmissionRefused("intruder", "invite_wrong_region"))
    events = log.query()
    assert [e.kind for e in events] == ["join_refused"] * 3
    assert "murmur invite --region north" in events[0].reason  # the reason says what to do
    assert recorder.join_refusals == 7


def test_commands_accepted_are_named() -> None:
    log = EventLog("me", clock=Clock())
    recorder = EventRecorder(log)
    deploy = sign_record(OPERATOR, "desired", "deployment/vib", 5, "fleet", b"{}")
    delete = sign_record(OPERATOR, "desired", "deployment/vib", 6, "fleet", b"", deleted=True)
    revoke = sign_record(OPERATOR, "revocation", "n1", 7, "fleet", b"lost")
    assert [command_name(r) for r in (deploy, delete, revoke)] == ["deploy", "delete", "revoke"]
    for record in (deploy, delete, revoke):
        recorder.command_accepted(record)
    events = log.query()
    assert [dict(e.details)["command"] for e in events] == ["deploy", "delete", "revoke"]
    assert events[0].subject == "desired/deployment/vib"
    assert recorder.commands == {"deploy": 1, "delete": 1, "revoke": 1}


def test_a_placement_event_names_the_deployments_it_changed_up_to_a_bound() -> None:
    changes = tuple(
        AppliedChange(f"d{i:03d}", 0, ChangeKind.ADDED, None, "n2")
        for i in range(PLACEMENT_DEPLOYMENTS_LISTED + 3)
        for _ in range(2)  # two changes of one deployment name it once
    )
    log = EventLog("me", clock=Clock())
    EventRecorder(log).on_event(PlacementApplied("r1", (0, "n1"), 3, 2, "n1", changes))
    (event,) = log.query()
    details = dict(event.details)
    assert details["moves"] == len(changes)
    assert details["deployments"] == ",".join(f"d{i:03d}" for i in range(PLACEMENT_DEPLOYMENTS_LISTED))
    assert details["deployments_more"] == 3
