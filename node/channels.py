"""The one table of application channels: which hosted core an application message is for.

An application message (gossip.codec.AppMessage) names a channel; the composite
node (node/core.py) hands it to the hosted core that owns that channel. A
channel number is on the wire: never reuse one for another purpose.
"""

from __future__ import annotations

from enum import IntEnum

from gossip.codec import APP_CHANNEL_MAX


class Channel(IntEnum):
    """Channel numbers of the hosted cores (0 is never used)."""

    ELECTION = 1  # consensus/: per-region leader election
    PLACEMENT = 2  # inference/: placement records and replica state
    ROLLOUT = 3  # inference/: rollout coordination
    KEYS = 4  # node/netkeys.py: the network key, sealed to each receiver
    # Test cores (tests/node/) use channels from here up.
    TEST_FIRST = 200


assert max(Channel) <= APP_CHANNEL_MAX
