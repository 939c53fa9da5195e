"""The inference core, sans-IO: deployment manifests and their `desired` records, the node
inventory schema and its republish rules; placement, the router and rollout arrive with the
inference issues. Files, onnxruntime and psutil belong to mesh/."""
