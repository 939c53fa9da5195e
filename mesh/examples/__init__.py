"""Example models and manifests (models/), and the command that rebuilds them (build_models)."""
