"""Unit tests: no server, no Redis, no PostgreSQL; the ``service`` fixture is in this process."""

from __future__ import annotations

import pytest

from ..conftest import make_pair, make_service


@pytest.fixture(params=["local", "memory"])
def service(request):
    """The service under test, in this process: in-process, or one replica of a log kept in memory."""
    yield from make_service(request)


@pytest.fixture(params=["local", "memory"])
def pair(request):
    """Two replicas, in this process: the same in-process service twice, or two replicas of a log kept in memory."""
    yield from make_pair(request)
