"""The runtime's pairwise envelope on real sockets (loopback): members prove who they are.

Three admitted nodes on 127.0.0.1 form a region; then an attacker who holds the
network key (and a node key of its own, never admitted) tries to speak as a
member from its own socket.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable

import nacl.signing
import nacl.utils

from gossip import codec
from gossip.config import LAN, WAN
from gossip.envelope import SEALED_REPLY_VERSION, Keyring, PeerEnvelope
from gossip.events import MemberState
from gossip.node import GossipNode
from gossip.records import encode_record
from mesh.service.runtime import Runtime, frame, read_frame
from node.core import Node
from tests.gossip.test_admission import admission_of, node_key, trust

KEY = b"\x11" * 32


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


def _alive(observer: Node, subject: Node) -> bool:
    return any(v.node_id == subject.node_id and v.state == MemberState.ALIVE for v in observer.members())


async def _region(count: int) -> tuple[list[Runtime], list[Node]]:
    loop = asyncio.get_running_loop()
    runtimes, nodes = [], []
    for i in range(count):
        rt = Runtime(
            Keyring([KEY]),
            packet_max_bytes=1400,
            stream_max_bytes=1 << 20,
            stream_timeout_s=2.0,
            node_key=node_key(i),
        )
        addr = await rt.bind("127.0.0.1", 0)
        node = Node(
            GossipNode(
                admission_of(node_key(i)).key,
                addr,
                "r0",
                random.Random(i),
                region_config=LAN,
                fleet_config=WAN,
                now=loop.time(),
                trust=trust(),
                admission=admission_of(node_key(i)),
                node_key=node_key(i),
            )
        )
        rt.attach(node, peers=node)
        runtimes.append(rt)
        nodes.append(node)
    for rt, node in zip(runtimes[1:], nodes[1:], strict=True):
        rt.drive(lambda now, node=node: node.join(now, [runtimes[0].addr]))
    await _until(lambda: all(_alive(a, b) for a in nodes for b in nodes if a is not b))
    return runtimes, nodes


async def _flood(target: Runtime, frames: list[bytes]) -> None:
    """Send frames to target in batches its socket buffer holds, each read before the next
    goes (a loaded machine reads slowly: a fixed pause would lose datagrams, not test limits)."""
    start = target.counters["datagrams_in"]
    for i in range(0, len(frames), 25):
        for data in frames[i : i + 25]:
            _send(data, target.addr)
        sent = i + len(frames[i : i + 25])
        await _until(lambda sent=sent: target.counters["datagrams_in"] - start >= sent - 5)  # type: ignore[misc]


def _send(data: bytes, dst: str) -> None:
    host, port = dst.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, (host, int(port)))


async def test_members_speak_pairwise_and_a_network_key_holder_is_only_a_stranger() -> None:
    runtimes, nodes = await _region(3)
    a, b, c = nodes
    try:
        incarnation_before = b.incarnation
        pairwise_before = runtimes[0].counters["datagrams_pairwise_in"]
        await asyncio.sleep(1.0)
        assert runtimes[0].counters["datagrams_pairwise_in"] > pairwise_before  # probes, acks, gossip

        accusation = codec.encode_packet(
            codec.POOL_REGION,
            "r0",
            [codec.encode_message(codec.Suspect(b.incarnation, b.node_id, c.node_id))],
        )
        # 1. Sealed with the network key, from its own socket: a stranger's packet.
        strangers = a.counters.get("region.drop_from_stranger", 0)
        _send(Keyring([KEY]).seal(accusation, nacl.utils.random(24)), runtimes[0].addr)
        await _until(lambda: a.counters.get("region.drop_from_stranger", 0) > strangers)

        # 2. A pairwise frame with C's id written in: it does not open.
        attacker = PeerEnvelope(Keyring([KEY]), node_key(9))
        forged = bytearray(attacker.seal(accusation, nacl.utils.random(24), a.peer_key(a.node_id)))
        forged[1:9] = bytes.fromhex(c.node_id)
        _send(bytes(forged), runtimes[0].addr)
        await _until(lambda: runtimes[0].counters["drop_datagram_unsealed"] >= 1)

        # 3. Its own pairwise frame: its key is no member's.
        _send(attacker.seal(accusation, nacl.utils.random(24), a.peer_key(a.node_id)), runtimes[0].addr)
        await _until(lambda: runtimes[0].counters["drop_datagram_sender_unknown"] >= 1)

        await asyncio.sleep(0.5)
        assert all(_alive(x, b) for x in (a, c))
        assert b.incarnation == incarnation_before  # never suspected, so it never had to refute
    finally:
        for rt in runtimes:
            await rt.close()


async def test_a_replayed_join_reads_nothing() -> None:
    """A network-key holder who sniffed a member's join (its entry and admission) replays it."""
    runtimes, nodes = await _region(3)
    a, b = nodes[0], nodes[1]
    try:
        entry = next(m for m in a.gossip.region_pool.members() if m.node_id == b.node_id)
        join = codec.PushPull(
            codec.POOL_REGION,
            "r0",
            True,
            (codec.MemberEntry(b.node_id, entry.addr, entry.meta, entry.incarnation, 0, entry.signature),),
            (),
            records=(encode_record(admission_of(node_key(1))),),
        )
        network_key_only = PeerEnvelope(Keyring([KEY]))
        for claim in (b.node_id, "0123456789abcdef"):  # naming the joiner, or anyone else
            nonce = bytes.fromhex(claim) + nacl.utils.random(16)
            answer = await _ask(runtimes[0].addr, network_key_only.seal(codec.encode_frame(join), nonce))
            opened = Keyring([KEY]).open(answer)
            if claim == b.node_id:
                # Sealed to B's key: the network key does not open it.
                assert answer[0] == SEALED_REPLY_VERSION and opened is None
            else:
                # Under the network key, but empty: the join does not name its entry's node.
                assert opened is not None
                assert codec.decode_frame(opened, max_bytes=1 << 20).states == ()
        # B and C joined through A the same way, and read the answers sealed to them.
        assert runtimes[0].counters["answers_sealed_to_joiner"] >= 3  # theirs and the replay's
        assert all(rt.counters["drop_frame_unsealed"] == 0 for rt in runtimes[1:])
        assert a.counters["region.drop_push_pull_not_sender"] >= 1
    finally:
        for rt in runtimes:
            await rt.close()


async def _ask(addr: str, sealed: bytes) -> bytes:
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(frame(sealed))
        await writer.drain()
        return await read_frame(reader, 1 << 21)
    finally:
        writer.close()


async def test_a_flood_of_made_up_keys_is_bounded_and_members_carry_on() -> None:
    """Introducing frames make the receiver derive a key each; made-up keys are rate limited."""
    runtimes, nodes = await _region(2)
    a, b = nodes
    try:
        target = a.peer_key(a.node_id)
        packet = codec.encode_packet(codec.POOL_REGION, "r0", [codec.encode_message(codec.Ack(1))])
        frames = [
            PeerEnvelope(Keyring([KEY]), nacl.signing.SigningKey.generate()).seal(
                packet, nacl.utils.random(24), target, introduce=True
            )
            for _ in range(700)
        ]
        await _flood(runtimes[0], frames)
        # A burst of 256 new keys, then 64 a second: most of the 700 are refused unopened.
        assert runtimes[0].counters["drop_datagram_new_key_refused"] >= 100  # even at 5 s of sending
        # Members' frames still open (their keys are known), and they stay alive to each other.
        pairwise = runtimes[0].counters["datagrams_pairwise_in"]
        await _until(lambda: runtimes[0].counters["datagrams_pairwise_in"] > pairwise + 5)
        assert _alive(a, b) and _alive(b, a)
    finally:
        for rt in runtimes:
            await rt.close()


async def test_made_up_keys_with_garbage_cost_a_token_each_too() -> None:
    """A frame that introduces a new key but does not open still made the receiver derive it."""
    runtimes, nodes = await _region(2)
    try:
        target = nodes[0].peer_key(nodes[0].node_id)
        frames = []
        for _ in range(700):
            frame = bytearray(
                PeerEnvelope(Keyring([KEY]), nacl.signing.SigningKey.generate()).seal(
                    b"x" * 64, nacl.utils.random(24), target, introduce=True
                )
            )
            frame[-1] ^= 1  # the tag no longer verifies
            frames.append(bytes(frame))
        await _flood(runtimes[0], frames)
        assert runtimes[0].counters["drop_datagram_new_key_refused"] >= 100
        assert runtimes[0].counters["drop_datagram_unsealed"] <= 600
    finally:
        for rt in runtimes:
            await rt.close()
