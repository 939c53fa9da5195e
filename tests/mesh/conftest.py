"""Fixtures shared by the /v2 API tests (test_v2api.py, test_inference_metrics.py,
test_remote_replicas.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.mesh.test_v2api import Mesh


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    """Nodes' /v2 APIs on loopback test servers sharing one placement view; closed after the test."""
    m = Mesh()
    yield m
    await m.close()
