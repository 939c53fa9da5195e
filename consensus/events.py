"""Events the election core reports to its driver (small frozen values)."""

from __future__ import annotations

from dataclasses import dataclass

from consensus.config import Era, VoterConfig
from gossip.events import HostedEvent


@dataclass(frozen=True, slots=True)
class LeaderChanged(HostedEvent):
    """The leader this node believes in changed: `leader_id` leads `term` of `era` ("" = none known)."""

    region: str
    era: Era | None
    term: int
    leader_id: str


@dataclass(frozen=True, slots=True)
class ConfigChanged(HostedEvent):
    """This node stored a new voter configuration of its region (record it for readers)."""

    region: str
    era: Era
    config: VoterConfig
