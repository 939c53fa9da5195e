"""Per-region leader election (sans-IO). Arrives with the consensus issue."""
