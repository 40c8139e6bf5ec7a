"""Integration tests: real servers, Redis, PostgreSQL; the ``service`` fixture is a replica of a shared service."""

from __future__ import annotations

import pytest

from ..conftest import make_pair, make_service


@pytest.fixture(params=["redis", "postgres"])
def service(request):
    """The service under test: one replica of a service shared through Redis or PostgreSQL."""
    yield from make_service(request)


@pytest.fixture(params=["redis", "postgres"])
def pair(request):
    """Two replicas, two replicas of one service shared through Redis or PostgreSQL."""
    yield from make_pair(request)
