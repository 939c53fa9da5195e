"""The node: composes the cores; identity, persistence, the artifact store, inventory collection,
asyncio runtime, API, CLI."""
