"""The node service behind `murmur agent`: runtime, API, persistence, discovery, inventory."""
