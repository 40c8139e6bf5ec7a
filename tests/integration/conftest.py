"""Integration tests: real servers, Redis, PostgreSQL; the ``service`` fixture is a replica of a shared service."""

from __future__ import annotations

import pytest

from ..conftest import make_pair, make_service


@pytest.fixture(params=["redis", "redis-cluster", "redis-cluster-partitioned", "postgres"])
def service(request):
    """The service under test: a replica of a service shared through Redis, Redis Cluster or PostgreSQL."""
    yield from make_service(request)


@pytest.fixture(params=["redis", "redis-cluster", "redis-cluster-partitioned", "postgres"])
def pair(request):
    """Two replicas of one service shared through Redis, Redis Cluster (one stream or three) or PostgreSQL."""
    yield from make_pair(request)
