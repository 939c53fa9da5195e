"""Developer tools: a loopback mesh of real agents (`murmur demo`, the real-process tests)."""
