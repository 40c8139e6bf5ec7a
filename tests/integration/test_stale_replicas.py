"""A removal decided on a replica that has not yet seen the same removal made by another process.

Replicas apply the shared log in the same order, so the second removal is applied after the first
everywhere and removes nothing: it must say so (``False``), and the HTTP layer answers 400 as for
any client or topic that is gone, instead of 200 (seen in CI: ``/remove/user`` twice, on two
workers, answered 200 twice).
"""

from __future__ import annotations

import uuid

import pytest

from pubsubsse import SSEPubSubService
from pubsubsse.backends import RedisBackend
from pubsubsse.backends.postgres import PostgresBackend

from ..conftest import POSTGRES_DSN, drop_postgres_tables


@pytest.fixture(params=["redis", "postgres"])
def replicas(request):
    """Two services sharing one log, as two gunicorn workers do."""
    if request.param == "redis":
        url, key = request.getfixturevalue("redis_server").url, f"test:{uuid.uuid4()}"
        services = [SSEPubSubService(backend=RedisBackend(url, key=key), client_timeout=None) for _ in range(2)]
    else:
        name = f"t_{uuid.uuid4().hex[:16]}"
        services = [
            SSEPubSubService(backend=PostgresBackend(POSTGRES_DSN, name=name), client_timeout=None) for _ in range(2)
        ]
    yield services
    for service in services:
        service.shutdown()
    if request.param == "postgres":
        drop_postgres_tables(name)


def test_a_removal_made_elsewhere_first_is_reported_by_the_late_one(replicas):
    a, b = replicas
    client = a.new_client()
    private = client.new_private_topic()
    b.sync()
    seen_by_b = b.get_client_by_id(client.id)
    topic_seen_by_b = seen_by_b.get_private_topic_by_id(private.id)
    assert seen_by_b is not None and topic_seen_by_b is not None

    assert client.remove_private_topic(private) is True
    assert seen_by_b.remove_private_topic(topic_seen_by_b) is False  # applied after a's, everywhere

    assert a.remove_client(client) is True
    assert b.remove_client(seen_by_b) is False
    assert a.remove_client(client) is False  # and twice in one process, as before: a no-op
    a.sync()
    assert a.get_client_by_id(client.id) is None and b.get_client_by_id(client.id) is None
