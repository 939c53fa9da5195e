"""The I/O vocabulary of the sans-IO cores: what a core asks its driver to send.

A core never touches a socket. It returns these values from `poll_transmit()`;
the driver (mesh/runtime.py on a device, sim/ in the simulator) seals them with
the envelope and puts them on the wire, and feeds what arrives back in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Datagram:
    """One UDP packet to send to `dst` ("host:port"); plaintext, sealed by the driver."""

    dst: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class StreamOpen:
    """Open a reliable stream to `dst`, send `payload`, read one reply frame.

    The driver answers with `handle_stream_reply(now, request_id, reply)`, where
    reply is None when the peer could not be reached or timed out.
    """

    dst: str
    request_id: int
    payload: bytes


Outbound = Datagram | StreamOpen
