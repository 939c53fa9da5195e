"""The node: composes the cores; identity, persistence, asyncio runtime, API, CLI."""
