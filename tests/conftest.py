from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any

import pytest

from pubsubsse import Client, EventManager, Group, GroupTopic, SSEPubSubService, Topic
from pubsubsse.backends import RedisBackend


@pytest.fixture(scope="session")
def redis_server():
    from .redis_server import RedisServer

    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster():
    """A Redis Cluster of three masters with a replica each (tests/redis_cluster.py)."""
    from .redis_cluster import RedisCluster

    cluster = RedisCluster()
    yield cluster
    cluster.close()


#: The PostgreSQL the tests use (this machine kind runs one on loopback, trust authentication).
POSTGRES_DSN = os.environ.get("PUBSUBSSE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


#: Where the ``service`` fixture's service lives. tests/unit/ takes "local" and "memory" (the shared-log
#: engine over a log in memory); tests/integration/ runs the unit modules that use the fixture again on
#: the shared backends (test_shared_*.py).
BACKENDS = ["local", "redis", "postgres"]


@pytest.fixture(params=BACKENDS)
def service(request):
    """The service under test: in this process, or one replica of a service shared through Redis or PostgreSQL."""
    yield from make_service(request)


def make_service(request):
    if request.param == "local":
        svc = SSEPubSubService(client_timeout=None)
        yield svc
        svc.shutdown()
        return
    backends, cleanup = log_backends(request, 1)
    svc = SSEPubSubService(backend=backends[0], client_timeout=None)
    yield svc
    svc.shutdown()
    cleanup()


def make_pair(request):
    """Two replicas of one service: in-process (the same service twice), or two backends over one log."""
    if request.param == "local":
        svc = SSEPubSubService(client_timeout=None)
        yield svc, svc
        svc.shutdown()
        return
    backends, cleanup = log_backends(request, 2)
    pair = [SSEPubSubService(backend=backend, client_timeout=None) for backend in backends]
    yield pair[0], pair[1]
    for svc in pair:
        svc.shutdown()
    cleanup()


def log_backends(request, count: int):
    """Return ``count`` backends over one new log, and a cleanup.

    The log: "memory", "merged" (three streams in memory), "redis", "redis-cluster",
    "redis-cluster-partitioned" (three streams merged, each on its own slot) or "postgres".
    """
    import uuid

    if request.param == "memory":
        from pubsubsse.backends.log import LogBackend
        from pubsubsse.backends.memory import MemoryTransport

        transport = MemoryTransport()
        return [LogBackend(transport) for _ in range(count)], lambda: None
    if request.param == "merged":  # three streams in memory, one clock 2 ms ahead; each backend appends to its own
        from pubsubsse.backends._merged import MergedTransport
        from pubsubsse.backends.log import LogBackend
        from pubsubsse.backends.memory import MemoryTransport

        streams = [MemoryTransport(), MemoryTransport(lambda: int(time.time() * 1000) + 2), MemoryTransport()]
        return [LogBackend(MergedTransport(streams, home=n % 3)) for n in range(count)], lambda: None
    if request.param == "redis":
        url, key = request.getfixturevalue("redis_server").url, f"test:{uuid.uuid4()}"
        return [RedisBackend(url, key=key) for _ in range(count)], lambda: None
    if request.param in ("redis-cluster", "redis-cluster-partitioned"):
        url, key = request.getfixturevalue("redis_cluster").url, f"test:{uuid.uuid4()}"
        partitions = 3 if request.param == "redis-cluster-partitioned" else 1
        return [RedisBackend(url, key=key, cluster=True, partitions=partitions) for _ in range(count)], lambda: None
    from pubsubsse.backends.postgres import PostgresBackend

    name = f"t_{uuid.uuid4().hex[:16]}"
    return [PostgresBackend(POSTGRES_DSN, name=name) for _ in range(count)], lambda: drop_postgres_tables(name)


def drop_postgres_tables(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(
            f"DROP TABLE IF EXISTS {name}_log, {name}_state, {name}_reports, {name}_outbox; "
            f"DROP SEQUENCE IF EXISTS {name}_commits; "
            f"DROP FUNCTION IF EXISTS {name}_append(text, bigint, bigint, bytea[]), {name}_drain(), {name}_committing()"
        )


def _key(item: Any) -> Any:
    if isinstance(item, (dict, list)):
        return ("json", json.dumps(item, sort_keys=True))
    return item


class Recorder:
    """Listens to every event manager of every object it discovers; counts emissions exactly.

    Objects are discovered through the items of the events it sees, so a topic
    created by the change being recorded is instrumented as soon as the first
    event naming it fires (the service-level or client-level ``on_new_*``
    event always fires before the topic's own events).
    """

    def __init__(self, service: SSEPubSubService) -> None:
        self.records: list[tuple[Any, str, Any]] = []
        self._seen: set[int] = set()
        self.watch(service)

    def watch(self, obj: Any) -> None:
        if isinstance(obj, GroupTopic):
            self.watch(obj.topic)
            self.watch(obj.group)
            return
        if not isinstance(obj, (SSEPubSubService, Client, Topic, Group)) or id(obj) in self._seen:
            return
        self._seen.add(id(obj))
        for name in dir(obj):
            if name.startswith("on_"):
                manager = getattr(obj, name)
                assert isinstance(manager, EventManager)
                manager.listen(self._listener(obj, name))

    def _listener(self, owner: Any, name: str):
        def record(item: Any) -> None:
            self.records.append((owner, name, _key(item)))
            self.watch(item)

        return record

    def take(self) -> Counter:
        out = Counter(self.records)
        self.records.clear()
        return out


#: The servers and adapters the HTTP suites run against: the Flask adapter under gunicorn's gevent
#: worker, Werkzeug's threaded server and a cluster on Redis, Redis Cluster (its log in one stream,
#: or in three merged: "cluster-rcp") or PostgreSQL; the plain WSGI adapter and the Django adapter
#: under gunicorn's gevent worker.
SERVER_KINDS = ["gevent", "threaded", "cluster", "cluster-rc", "cluster-rcp", "cluster-pg", "wsgi", "django"]


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request):
    """A real server running the test app (tests/server_app.py) with one of the adapters."""
    from .servers import Cluster, Server

    env = {"PUBSUBSSE_HEARTBEAT": "1", "PUBSUBSSE_CLIENT_TIMEOUT": "none"}
    if request.param.startswith("cluster"):
        rc = request.getfixturevalue("redis_cluster") if request.param.startswith("cluster-rc") else None
        backend = "postgres" if request.param == "cluster-pg" else "redis"
        srv = Cluster(env, backend=backend, redis_cluster=rc, partitions=3 if request.param == "cluster-rcp" else 1)
    elif request.param in ("wsgi", "django"):
        srv = Server("gevent", env={**env, "PUBSUBSSE_ADAPTER": request.param})
        srv.kind = request.param
    else:
        srv = Server(request.param, env=env)
    yield srv
    srv.stop()
