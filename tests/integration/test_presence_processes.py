"""Presence across two processes on Redis and PostgreSQL: this one and a child holding its own streams.

Counts, subscribers and users are equal in both once each has synced; a subscriber here hears
who joins and leaves there, in coalesced reports.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import uuid

import pytest

from pubsubsse import SSEPubSubService
from pubsubsse.backends import RedisBackend
from pubsubsse.testing import read_stream

from ..conftest import POSTGRES_DSN, drop_postgres_tables
from ..servers import ROOT

CHILD = textwrap.dedent(
    """
    import json, sys
    from pubsubsse import SSEPubSubService
    kind, where, name = sys.argv[1:4]
    if kind == "redis":
        from pubsubsse.backends import RedisBackend
        backend = RedisBackend(where, key=name)
    else:
        from pubsubsse.backends.postgres import PostgresBackend
        backend = PostgresBackend(where, name=name)
    service = SSEPubSubService(backend=backend, client_timeout=None)
    service.sync()
    room = service.public_topic("room")
    clients = [service.new_client(user=u) for u in ("carol", "carol", "dave")]
    for client in clients:
        client.sub(room)
    streams = [client.stream() for client in clients]
    service.sync()
    view = [room.subscriber_count(), sorted(c.id for c in room.subscribers()), room.present_users()]
    print(json.dumps(view), flush=True)
    sys.stdin.readline()  # until the parent has looked
    for stream in streams:
        stream.close()
    service.sync()
    print(json.dumps(room.present_users()), flush=True)
    sys.stdin.readline()
    service.shutdown()
    """
)


@pytest.fixture(params=["redis", "postgres"])
def backend(request):
    name = f"t_{uuid.uuid4().hex[:16]}"
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
        yield request.param, url, name, RedisBackend(url, key=name)
        return
    from pubsubsse.backends.postgres import PostgresBackend

    yield request.param, POSTGRES_DSN, name, PostgresBackend(POSTGRES_DSN, name=name)
    drop_postgres_tables(name)


@pytest.mark.timeout(90)
def test_two_processes_agree_on_who_is_there_and_hear_each_other(backend) -> None:
    kind, where, name, made = backend
    service = SSEPubSubService(backend=made, client_timeout=None)
    child = None
    try:
        room = service.public_topic("room", presence=True)
        here = [service.new_client(user="alice"), service.new_client()]
        for client in here:
            client.sub(room)
        held = here[0].stream()  # alice is connected here; the other client subscribed only
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, where, name],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        there = json.loads(child.stdout.readline())
        service.sync()
        view = [room.subscriber_count(), sorted(c.id for c in room.subscribers()), room.present_users()]
        assert view == there
        assert view[0] == 5 and view[2] == ["alice", "carol", "dave"]
        # A subscriber here is told who is there, in a few messages.
        got = read_stream(here[1], until=lambda r: r.present_users("T-room") == ["alice", "carol", "dave"])
        assert len(got.sys("presence")) <= 4
        child.stdin.write("\n")
        child.stdin.flush()
        assert json.loads(child.stdout.readline()) == ["alice"]  # the child's streams closed
        service.sync()
        assert room.present_users() == ["alice"]
        left = read_stream(here[1], until=lambda r: r.present_users("T-room") == ["alice"])
        assert {u for item in left.sys("presence") for u in item.get("left", ())} == {"carol", "dave"}
        held.close()
    finally:
        if child is not None:
            with contextlib.suppress(BrokenPipeError):  # a child that failed has gone already
                child.communicate("\n", timeout=30)
        service.shutdown()
