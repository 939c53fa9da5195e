"""A composite node for agent tests driven without a network (SyncRuntime, FakeRuntime)."""

from __future__ import annotations

import random

from gossip.config import LOCAL
from gossip.kinds import DEFAULT_KINDS, KindTable
from gossip.node import GossipNode
from gossip.trust import Trust
from node.core import Node


def local_node(node_id: str, trust: Trust, *, seed: int = 1, kinds: KindTable = DEFAULT_KINDS) -> Node:
    """A node of region "north" at 127.0.0.1:1 (API 127.0.0.1:2), local timing."""
    return Node(
        GossipNode(
            node_id,
            "127.0.0.1:1",
            "north",
            random.Random(seed),
            region_config=LOCAL,
            fleet_config=LOCAL,
            api_addr="127.0.0.1:2",
            trust=trust,
            kinds=kinds,
        )
    )
