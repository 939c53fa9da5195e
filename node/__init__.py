"""The composite node core (sans-IO): one `Node` hosts the gossip layer and the cores above it.

Drivers (mesh/'s asyncio runtime, the simulator, the test harness) build a
`node.core.Node` and drive only it; see docs/core-api.md.
"""
