"""Benchmark: the CPU cost of authenticating a datagram to its sending member, per choice.

    .venv/bin/python bench/auth_cost.py [--json] [--payload-bytes N] [--rounds N]

Issue 8 asks that holding the network key no longer suffice to speak as a
member, and that the choice be measured. This times, on one core, per datagram
(seal at the sender plus open at the receiver), for a payload of a typical full
gossip packet (default 1,200 bytes):

- baseline: today's envelope, XSalsa20-Poly1305 under the shared network key
  (gossip.envelope.Keyring);
- pairwise: the same cipher under a key shared by the two members only, derived
  once per peer with X25519 from their Ed25519 node keys (nacl Box, precomputed);
- peer_envelope: what the drivers run (gossip.envelope.PeerEnvelope): pairwise,
  plus the lookups of the receiver's key and of the sender's by its id;
- signed: the network-key envelope plus an Ed25519 signature of the payload by
  the sender's node key, verified at the receiver.

Figures are ratios to the baseline measured in the same run, with the absolute
microseconds beside them. It opens no socket. No threshold: a measurement.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable

import nacl.bindings
import nacl.public
import nacl.signing
import nacl.utils

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from provenance import source_version

from gossip.envelope import Keyring, PeerEnvelope


def _per_op_us(fn: Callable[[], object], rounds: int) -> float:
    """Best of 5 runs of `rounds` calls, in microseconds per call (CPU time of this process)."""
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(rounds):
            fn()
        best = min(best, time.process_time() - start)
    return best / rounds * 1e6


def measure(payload_bytes: int, rounds: int) -> dict[str, object]:
    payload = nacl.utils.random(payload_bytes)
    ring = Keyring([nacl.utils.random(32)])

    def baseline() -> object:
        return ring.open(ring.seal(payload, nacl.utils.random(24)))

    a, b = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    a_curve = nacl.public.PrivateKey(
        nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(bytes(a) + bytes(a.verify_key))
    )
    b_pub_curve = nacl.public.PublicKey(
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(bytes(b.verify_key))
    )
    b_curve = nacl.public.PrivateKey(
        nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(bytes(b) + bytes(b.verify_key))
    )
    a_pub_curve = nacl.public.PublicKey(
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(bytes(a.verify_key))
    )
    box_ab, box_ba = nacl.public.Box(a_curve, b_pub_curve), nacl.public.Box(b_curve, a_pub_curve)

    def pairwise() -> object:
        return box_ba.decrypt(box_ab.encrypt(payload, nacl.utils.random(24)))

    env_a, env_b = PeerEnvelope(ring, a), PeerEnvelope(ring, b)
    a_pk, b_pk = bytes(a.verify_key), bytes(b.verify_key)
    keys = {hashlib.sha256(a_pk).hexdigest()[:16]: a_pk}

    def peer_envelope() -> object:
        plaintext, sender = env_b.open(env_a.seal(payload, nacl.utils.random(24), b_pk), keys.get)
        assert plaintext is not None and sender
        return plaintext

    vk = a.verify_key

    def signed() -> object:
        sealed = ring.seal(a.sign(payload).signature + payload, nacl.utils.random(24))
        opened = ring.open(sealed)
        assert opened is not None
        return vk.verify(opened[64:], opened[:64])

    def derive_pairwise_key() -> object:
        return nacl.public.Box(a_curve, b_pub_curve)

    base_us = _per_op_us(baseline, rounds)
    out: dict[str, object] = {
        "payload_bytes": payload_bytes,
        "rounds": rounds,
        "baseline_us": round(base_us, 2),
    }
    for name, fn, n in (
        ("pairwise", pairwise, rounds),
        ("peer_envelope", peer_envelope, rounds),
        ("signed", signed, max(rounds // 4, 1)),
        ("derive_pairwise_key_once_per_peer", derive_pairwise_key, max(rounds // 4, 1)),
    ):
        us = _per_op_us(fn, n)
        out[f"{name}_us"] = round(us, 2)
        out[f"{name}_ratio"] = round(us / base_us, 3)
    out["machine"] = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    out["source"] = source_version()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payload-bytes", type=int, default=1200)
    parser.add_argument("--rounds", type=int, default=4000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.payload_bytes, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
