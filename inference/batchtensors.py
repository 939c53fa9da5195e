"""Requests' tensors joined into one batch and its outputs split back, along the batch
dimension (the first), for the dynamic batcher (inference/batching.py decides when).

numpy is imported here, not by the model lanes that call it (mesh/service/modellanes.py):
they import this module with their first batch, whose arrays have loaded numpy already.
"""

from __future__ import annotations

import numpy as np

from inference.v2tensors import Array


def batch_rows(inputs: dict[str, Array]) -> int:
    """How many rows (the batch dimension's size) a request's inputs hold."""
    return int(next(iter(inputs.values())).shape[0])


def join_batch(requests: list[dict[str, Array]]) -> dict[str, Array] | None:
    """The requests' inputs joined along the batch dimension, or None when they cannot be
    (different inputs, datatypes or shapes after the first dimension)."""
    first = requests[0]
    for inputs in requests:
        if list(inputs) != list(first) or any(
            a.ndim == 0 or a.dtype != first[k].dtype or a.shape[1:] != first[k].shape[1:]
            for k, a in inputs.items()
        ):
            return None
        if len({a.shape[0] for a in inputs.values()}) != 1:
            return None
    return {k: np.concatenate([inputs[k] for inputs in requests]) for k in first}


def split_batch(outputs: dict[str, Array], rows: list[int]) -> list[dict[str, Array]]:
    """A batch's outputs back to each request's share (`rows` each); ValueError when an output
    is not batched."""
    total = sum(rows)
    if any(a.ndim == 0 or a.shape[0] != total for a in outputs.values()):
        raise ValueError("an output has no batch dimension of the batch's size")
    bounds = np.cumsum(rows)[:-1]
    pieces = {k: np.split(a, bounds) for k, a in outputs.items()}
    return [{k: pieces[k][i] for k in outputs} for i in range(len(rows))]
