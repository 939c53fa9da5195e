"""Signed votes and the leader's certificate: a claim of a term any node can check (pure).

A voter that grants a vote signs, with its Ed25519 node key, the bytes of
(region, era, term, candidate, the candidate's configuration). A leader keeps
a majority of those signatures as its certificate: with 5 voters that is 3
signatures, about 200 bytes plus the configuration. The certificate carries
the configuration it was made under, so a node that has never seen that
configuration can still check the claim (`verify_certificate`), and placement
records signed by the leader can carry it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.exceptions
import nacl.signing

from consensus.config import Era, VoterConfig
from gossip.wire import DecodeError, blob, ident, u64, unpack_versioned

CERT_VERSION = 0xC1
SIGNATURE_BYTES = 64
VOTERS_MAX = 16  # no configuration on the wire has more voters than this
CERT_MAX_BYTES = 2048
_VOTE_DOMAIN = b"murmur/election-vote/v1\x00"  # a vote signature is never valid as anything else


@dataclass(frozen=True, slots=True)
class LeaderClaim:
    """What a valid certificate proves: `leader` won `term` of `era` in `region` under `config`."""

    region: str
    era: Era
    term: int
    leader: str
    config: VoterConfig


def vote_bytes(region: str, era: Era, term: int, candidate: str, config: VoterConfig) -> bytes:
    """The canonical bytes a vote's signature covers."""
    body = [region, era.generation, era.founder, term, candidate, config.epoch, config.made_in_term]
    packed: bytes = msgpack.packb([*body, list(config.voters)])
    return _VOTE_DOMAIN + packed


def sign_vote(
    key: nacl.signing.SigningKey, region: str, era: Era, term: int, candidate: str, config: VoterConfig
) -> bytes:
    """A voter's signature over its vote."""
    return bytes(key.sign(vote_bytes(region, era, term, candidate, config)).signature)


def check_vote(
    public_key: bytes | None,
    signature: bytes,
    region: str,
    era: Era,
    term: int,
    candidate: str,
    config: VoterConfig,
) -> bool:
    """True if signature is public_key's vote for candidate; never raises."""
    if public_key is None or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(vote_bytes(region, era, term, candidate, config), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
    return True


def encode_config(config: VoterConfig) -> list[Any]:
    return [config.epoch, config.made_in_term, list(config.voters)]


def decode_config(v: Any) -> VoterConfig:
    """A configuration from the wire; raises only DecodeError."""
    if type(v) is not list or len(v) != 3 or type(v[2]) is not list or not 0 < len(v[2]) <= VOTERS_MAX:
        raise DecodeError("bad_config")
    voters = tuple(ident(x) for x in v[2])
    try:
        return VoterConfig(u64(v[0]), voters, u64(v[1]))
    except ValueError as exc:
        raise DecodeError("bad_config") from exc


def encode_certificate(
    era: Era, term: int, leader: str, config: VoterConfig, signatures: Mapping[str, bytes]
) -> bytes:
    """A certificate from a majority of votes (voter id -> signature); only a quorum is kept."""
    index = {v: i for i, v in enumerate(config.voters)}
    chosen = sorted(index[v] for v in signatures if v in index)[: config.quorum]
    sigs = [[i, signatures[config.voters[i]]] for i in chosen]
    # The leader is named by its index among the voters: every byte counts (1024 per message).
    body = [era.generation, era.founder, term, index[leader], encode_config(config), sigs]
    packed: bytes = msgpack.packb(body)
    return bytes([CERT_VERSION]) + packed


def certificate_head(cert: bytes) -> tuple[Era, int, str, VoterConfig]:
    """(era, term, leader, config) a certificate claims, NOT verified; raises only DecodeError."""
    era, term, leader, config, _sigs = _parse(cert)
    return era, term, leader, config


def _parse(cert: bytes) -> tuple[Era, int, str, VoterConfig, list[tuple[int, bytes]]]:
    if type(cert) is not bytes or len(cert) > CERT_MAX_BYTES:
        raise DecodeError("bad_certificate")
    try:
        body = unpack_versioned(cert, CERT_VERSION, CERT_MAX_BYTES, max_array_len=VOTERS_MAX)
    except DecodeError as exc:
        raise DecodeError("bad_certificate") from exc
    if type(body) is not list or len(body) != 6 or type(body[5]) is not list:
        raise DecodeError("bad_certificate")
    era = Era(u64(body[0]), ident(body[1]))
    term, leader_index, config = u64(body[2]), u64(body[3]), decode_config(body[4])
    if leader_index >= len(config.voters):
        raise DecodeError("bad_certificate")
    sigs: list[tuple[int, bytes]] = []
    for entry in body[5]:
        if type(entry) is not list or len(entry) != 2:
            raise DecodeError("bad_certificate")
        sigs.append((u64(entry[0]), blob(entry[1], SIGNATURE_BYTES)))
    return era, term, config.voters[leader_index], config, sigs


def verify_certificate(
    cert: bytes,
    region: str,
    config: VoterConfig | None,
    member_key: Callable[[str], bytes | None],
) -> LeaderClaim | None:
    """The claim cert proves, or None (malformed, too few valid signatures, another config).

    `config`: the configuration the checker expects the claim to be made under, or
    None to accept the one the certificate carries (its signatures bind it).
    """
    try:
        era, term, leader, carried, sigs = _parse(cert)
    except DecodeError:
        return None
    if config is not None and carried != config:
        return None
    signers: set[int] = set()
    for i, signature in sigs:
        if i >= len(carried.voters) or i in signers:
            return None
        voter = carried.voters[i]
        if not check_vote(member_key(voter), signature, region, era, term, leader, carried):
            return None
        signers.add(i)
    if len(signers) < carried.quorum:
        return None
    return LeaderClaim(region, era, term, leader, carried)
