"""What a voter answers to a pre-vote, a vote or a founding proposal: Raft's rules as pure functions.

Each `judge_*` takes the voter's hard state and what the request says, and
returns a `Verdict`: grant or not, the hard state to save first (a vote, a
higher term), and the counter the outcome is recorded under. `sticky` is true
while the voter leads, or is bound to a live leader (it acknowledged one less
than election_timeout_min_s ago, or restarted that recently): such a voter
grants nothing (leader stickiness, and the other half of the leader's lease).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from consensus.config import era_better
from consensus.hardstate import HardState
from consensus.messages import PreVote, Vote


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: str  # the counter key
    grant: bool = False
    state: HardState | None = None  # to save before answering (None: unchanged)
    reply_term: int = 0
    reply: bool = True  # False: a counted drop, no answer
    hint: bool = False  # tell the sender what we know (it lags)


def _not_a_voter(hs: HardState, src: str, m: PreVote | Vote) -> bool:
    """The sender is not a voter of its own config, or of ours unless its config is newer."""
    cfg = hs.config
    return not m.config.has(src) or (cfg is not None and not cfg.has(src) and m.config.rank <= cfg.rank)


def judge_pre_vote(hs: HardState, src: str, m: PreVote, *, sticky: bool) -> Verdict:
    """Would we vote for src in m.term? Nothing is saved either way."""
    if _not_a_voter(hs, src, m):
        return Verdict("drop_not_voter", reply=False)
    cfg = hs.config
    if cfg is None or not hs.established or m.era != hs.era:
        return Verdict("votes_other_era", reply_term=m.term)
    if not sticky and m.term > hs.term and m.config.rank >= cfg.rank:
        return Verdict("pre_votes_granted", grant=True, reply_term=m.term)
    return Verdict("pre_votes_refused", reply_term=hs.term)


def judge_vote(hs: HardState, me: str, src: str, m: Vote, *, sticky: bool) -> Verdict:
    """Raft's vote: one per term, to a candidate whose config is at least as new as ours."""
    if _not_a_voter(hs, src, m):
        return Verdict("drop_not_voter", reply=False)
    cfg = hs.config
    if cfg is None or not hs.established or m.era != hs.era:
        return Verdict("votes_other_era", reply_term=m.term)
    if not m.config.has(me):
        return Verdict("votes_not_in_config", reply_term=hs.term)  # we would sign as its voter
    if sticky or m.term < hs.term:
        return Verdict("votes_refused", reply_term=hs.term)
    new = hs if m.term == hs.term else replace(hs, term=m.term, voted_for="")
    if new.voted_for in ("", src) and m.config.rank >= cfg.rank:
        return Verdict("votes_granted", grant=True, state=replace(new, voted_for=src), reply_term=m.term)
    return Verdict("votes_refused", state=new if new != hs else None, reply_term=new.term)


def judge_founding(hs: HardState, me: str, src: str, m: Vote, *, sticky: bool) -> Verdict:
    """A founding proposal: granted by a voter with no config, or with this or a worse proposal."""
    cfg = m.config
    if not (
        m.era.generation == 0
        and m.era.founder == src == cfg.voters[0]
        and cfg.has(me)
        and cfg.made_in_term == m.term
        and cfg.epoch == 1
    ):
        return Verdict("drop_bad_founding", reply=False)
    switch = hs.era is None or hs.config is None or hs.era == m.era or era_better(m.era, hs.era)
    if hs.established or not switch or (hs.era is not None and hs.era.generation > 0):
        return Verdict("foundings_refused", reply_term=m.term, hint=True)
    same_term_other = hs.era == m.era and m.term == hs.term and hs.voted_for not in ("", src)
    if sticky or (hs.era == m.era and m.term < hs.term) or same_term_other:
        return Verdict("foundings_refused", reply_term=m.term)
    return Verdict(
        "votes_granted", grant=True, state=HardState(m.era, m.term, src, cfg, False), reply_term=m.term
    )
