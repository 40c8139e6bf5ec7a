from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from pubsubsse import Client, EventManager, Group, GroupTopic, SSEPubSubService, Topic


@pytest.fixture(scope="session")
def redis_server():
    from .redis_server import RedisServer

    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(params=["local", "redis"])
def service(request):
    """The service under test: in this process, or one replica of a service shared through Redis."""
    if request.param == "local":
        svc = SSEPubSubService(client_timeout=None)
    else:
        import uuid

        redis_server = request.getfixturevalue("redis_server")
        svc = SSEPubSubService(client_timeout=None, redis_url=redis_server.url, redis_key=f"test:{uuid.uuid4()}")
    yield svc
    svc.shutdown()


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


SERVER_KINDS = ["gevent", "threaded", "cluster"]


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request):
    """A real server: gunicorn with gevent, Werkzeug's threaded server, or a cluster on Redis."""
    from .servers import Cluster, Server

    env = {"PUBSUBSSE_HEARTBEAT": "1", "PUBSUBSSE_CLIENT_TIMEOUT": "none"}
    srv = Cluster(env) if request.param == "cluster" else Server(request.param, env=env)
    yield srv
    srv.stop()
