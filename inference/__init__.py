"""Placement, artifacts, the onnxruntime backend and the router. Arrives with the inference issues."""
