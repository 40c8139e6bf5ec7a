"""The Redis command log in-process: snapshots, trimming and late joiners."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid

import pytest
import redis as redis_py

from pubsubsse import BackendUnavailable, SSEPubSubService, TopicNotFound
from pubsubsse.backends import RedisBackend
from pubsubsse.testing import read_stream

from ..http_helpers import wait_for
from ..sse import parse


def exported(service):
    """The state a shared log determines, as the service exports it for snapshots."""
    service.sync()
    return list(service.export_state())


def test_snapshots_bound_the_log_and_late_joiners_load_them(redis_server):
    key = f"test:{uuid.uuid4()}"
    a = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key, snapshot_every=50), client_timeout=None)
    r = redis_py.Redis.from_url(redis_server.url)
    try:
        topics = [a.new_public_topic() for _ in range(3)]
        group = a.new_group()
        group_topic = group.new_topic()
        clients = [a.new_client() for _ in range(10)]
        for c in clients:
            group.add_client(c)
            c.new_private_topic()
            c.sub(group_topic)
            for t in topics:
                c.sub(t)
        published = 0
        for _ in range(4):
            for i in range(100):
                topics[0].pub(i)
                published += 1
            time.sleep(1.2)  # positions are reported once a second; trimming follows them
        assert r.exists(key + ":snapshot")
        assert r.xlen(key) < 250 < published  # bounded by the snapshot interval, not by history
        late = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key), client_timeout=None)
        try:
            assert exported(late) == exported(a)
            first = late.get_client_by_id(clients[0].id)
            seq = late._core.position  # the last two positions are two publishes the client got
            received = read_stream(first, seconds=0.5, last_event_id=str(seq - 2))
            assert len(received.messages) == 2 and received.ids[-1] == str(seq)
        finally:
            late.shutdown()
    finally:
        a.shutdown()
        for k in r.keys(key + "*"):
            r.delete(k)


def test_streams_of_a_dead_process_are_detached_and_their_clients_expire(redis_server):
    import threading

    from pubsubsse import Status
    from pubsubsse.backends import RedisBackend

    key = f"test:{uuid.uuid4()}"
    a = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key, alive=1.5), client_timeout=None)
    b = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key, alive=1.5), client_timeout=1.0, heartbeat=0.5)
    r = redis_py.Redis.from_url(redis_server.url)
    try:
        keeper = b.new_client()
        b_stream = b.get_client_by_id(keeper.id).stream()  # starts b's timer; a receiving client stays
        orphan = a.new_client()
        orphan.stream()  # a holds this stream, then dies without detaching it
        a.backend.close()  # a dies: no more reports, no detach of its streams
        assert b.get_client_by_id(orphan.id).status is Status.RECEIVING
        gone = threading.Event()
        b.on_remove_client.listen(lambda c: gone.set() if c.id == orphan.id else None)
        assert gone.wait(15)  # detached once a's reports went stale, then expired after client_timeout
        assert b.get_client_by_id(keeper.id).status is Status.RECEIVING
        b_stream.close()
    finally:
        b.shutdown()
        for k in r.keys(key + "*"):
            r.delete(k)


def test_a_service_built_while_redis_is_unreachable_starts_and_loads_when_it_answers(redis_server, caplog):
    """A gunicorn worker that raised at import would halt the whole server; it must start unready instead."""
    key = f"test:{uuid.uuid4()}"
    a = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key), client_timeout=None)
    client = a.new_client()
    topic = a.new_public_topic()
    client.sub(topic)
    os.kill(redis_server.proc.pid, signal.SIGSTOP)  # connections are accepted, nothing is answered
    try:
        with caplog.at_level(logging.WARNING, logger="pubsubsse.backends.log"):
            late = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key, timeout=0.5), client_timeout=None)
        assert "cannot reach the pubsubsse log" in caplog.text
        with pytest.raises(BackendUnavailable, match="not loaded yet"):
            late.new_client()
        with pytest.raises(BackendUnavailable, match="not loaded yet"):
            late.get_client_by_id(client.id)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)

    def loaded():
        try:
            return late.get_client_by_id(client.id)
        except BackendUnavailable:
            return None

    try:
        found = wait_for(loaded, timeout=15, what="the late service to load the shared state")
        assert list(found.get_subscribed_topics()) == [topic.id]
        assert exported(late) == exported(a)
        late.new_client()
    finally:
        late.shutdown()
        a.shutdown()


def test_a_publish_returns_once_the_log_holds_it_and_one_that_reaches_no_topic_says_so(redis_server, caplog):
    key = f"test:{uuid.uuid4()}"
    # Short timeouts: a publish that waited for its own apply would fail here within seconds.
    a = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key, timeout=1.0, outcome_timeout=1.0))
    b = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key), client_timeout=None)
    try:
        topic = a.new_public_topic()
        b.sync()
        # a's reader applies nothing until the gate opens.
        gate = threading.Event()
        apply = a.apply

        def gated_apply(operation, args):
            assert gate.wait(30)
            return apply(operation, args)

        a.apply = gated_apply
        with caplog.at_level(logging.WARNING, logger="pubsubsse.backends.log"):
            # While a's reader cannot apply anything, b removes the topic; a still knows it and
            # publishes. The publish returns: it waits for the log, not for a's own apply.
            try:
                b.remove_public_topic(b.get_public_topic_by_id(topic.id))
                topic.pub("too late")
            finally:
                gate.set()
            a.sync()
        # The removal came first in the log: every process skipped the publish, and a says so.
        assert any("a publish reached no one" in r.getMessage() and topic.id in r.getMessage() for r in caplog.records)
        assert a.get_public_topic_by_id(topic.id) is None
        # A topic a knows removed is refused at once, before anything is appended.
        with pytest.raises(TopicNotFound):
            topic.pub("again")
    finally:
        a.shutdown()
        b.shutdown()


@pytest.mark.timeout(120)
def test_a_snapshot_stores_a_published_body_once_however_many_clients_got_it(redis_server):
    """6,000 subscribers x 100 bodies of 1 KB made a 600 MB snapshot (Redis refuses 512 MB: the log was never
    trimmed again), and a process loading one held a copy per client (+123 MB where the running one had +8 MB).
    A body is kept once, in its topic's history, and a snapshot stores that history."""
    key = f"test:{uuid.uuid4()}"
    backend = RedisBackend(redis_server.url, key=key, snapshot_every=10**9)
    a = SSEPubSubService(backend=backend, client_timeout=None, replay_size=50)
    r = redis_py.Redis.from_url(redis_server.url)
    try:
        topic = a.public_topic("big")
        clients = [a.new_client() for _ in range(1000)]
        for c in clients:
            c.sub(topic)
        for n in range(50):
            topic.pub({"n": n, "pad": "x" * 1000})
        a.sync()
        backend.snapshot_every = 0  # the next maintenance round stores one
        wait_for(lambda: r.exists(key + ":snapshot"), what="a snapshot")
        size = r.strlen(key + ":snapshot")
        assert size < 2_000_000, f"{size:,} bytes for 50 bodies of 1 KB held by 1,000 clients"
        late = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key), client_timeout=None, replay_size=50)
        try:
            assert exported(late) == exported(a)
            kept = late.get_public_topic_by_id("T-big")._record.bodies
            assert kept == topic._record.bodies and len(kept) == 50  # the history, loaded whole
            resumed = late.get_client_by_id(clients[0].id).stream(last_event_id=str(late._core.position - 3))
            assert [m["updates"][0]["data"]["n"] for m in parse(resumed.read(timeout=1)).messages] == [47, 48, 49]
            resumed.close()
        finally:
            late.shutdown()
    finally:
        a.shutdown()


@pytest.mark.parametrize(("log", "process"), [(3, 1), (1, 3), (3, 2)])
def test_a_process_built_for_other_partitions_refuses_the_log_instead_of_reading_part_of_it(redis_server, log, process):
    # A worker deployed with another partitions= would read some of the streams, or none of the
    # others': its state would part from the service's, silently. It stays unready, and says why.
    from pubsubsse import Publisher

    key = f"test:{uuid.uuid4()}"
    first = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key, partitions=log), client_timeout=None)
    other = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key, partitions=process), client_timeout=None)
    publisher = Publisher(backend=RedisBackend(redis_server.url, key=key, partitions=process))
    plain = Publisher(redis_server.url, redis_key=key)
    try:
        client = first.new_client()
        client.sub(first.public_topic("orders"))
        with pytest.raises(BackendUnavailable, match=f"in {log} partition.*built for {process}"):
            other.new_client()
        if process > 1:  # a Publisher built for another number is refused, and says nothing was sent
            with pytest.raises(BackendUnavailable, match="partition") as refused:
                publisher.publish("orders", "refused")
            assert not refused.value.outcome_unknown
        plain.publish("orders", "from a plain Publisher")  # one without partitions= appends to `key`
        first.sync()
        assert b"from a plain Publisher" in first._core.since(first._core.clients[client.id], 0)[-1][1]
    finally:
        publisher.close()
        plain.close()
        first.shutdown()
        other.shutdown()
