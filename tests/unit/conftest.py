"""Unit tests: no server, no Redis, no PostgreSQL; the ``service`` fixture is in this process."""

from __future__ import annotations

import pytest

from ..conftest import make_pair, make_service


@pytest.fixture(params=["local", "memory", "merged"])
def service(request):
    """The service under test: in-process, or a replica of a log in memory (one stream, or three merged)."""
    yield from make_service(request)


@pytest.fixture(params=["local", "memory", "merged"])
def pair(request):
    """Two replicas: the in-process service twice, or two of a log in memory (one stream, or three merged)."""
    yield from make_pair(request)
