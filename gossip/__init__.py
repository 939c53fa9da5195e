"""Gossip layer: wire codec, envelope, SWIM membership with Lifeguard, broadcasts (sans-IO)."""
