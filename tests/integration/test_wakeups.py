"""A process is woken for the publishes to topics it holds streams of, not for the others'.

Two replicas of one service on Redis (and on a Redis Cluster). A holds a stream of a subscriber
of ``near``; B holds none. Publishes to ``far`` (subscribed to, with streams held nowhere) wake
neither reader: each reads them later, many in one read; publishes to ``near`` reach A's stream
one by one. Before, every publish woke every process's reader (one read of the log each).
"""

from __future__ import annotations

import time
import uuid

import pytest

from pubsubsse import Publisher, SSEPubSubService
from pubsubsse.backends import RedisBackend
from pubsubsse.testing import read_stream


@pytest.mark.parametrize("where", ["redis", "redis-cluster"])
def test_publishes_to_topics_held_elsewhere_do_not_wake_a_process(request, where):
    cluster = where == "redis-cluster"
    url = request.getfixturevalue("redis_cluster" if cluster else "redis_server").url
    key = f"test:{uuid.uuid4()}"
    a, b = (SSEPubSubService(backend=RedisBackend(url, key=key, cluster=cluster), client_timeout=None) for _ in "ab")
    publisher = Publisher(backend=RedisBackend(url, key=key, cluster=cluster))
    try:
        near, far = a.public_topic("near"), a.public_topic("far")
        held, elsewhere = a.new_client(), b.new_client()
        held.sub(near)
        elsewhere.sub(far)  # its stream is held nowhere
        stream = held.stream()
        b.sync()
        reads_a, reads_b = a.backend.transport.reads, b.backend.transport.reads
        for n in range(40):
            publisher.publish("far", n)
            time.sleep(0.01)  # one at a time: each would be a read of its own if it woke the readers
        for service in (a, b):
            service.sync()
            assert len(service._core.topics[far.id].bodies) == 40  # applied everywhere all the same
        # Woken by the two syncs' markers and the 250 ms reads at most, not by 40 publishes.
        assert a.backend.transport.reads - reads_a < 15
        assert b.backend.transport.reads - reads_b < 15
        for n in range(5):
            publisher.publish("near", n)
        got = read_stream(stream, updates=5, seconds=10)
        assert got.updates(near.id) == [0, 1, 2, 3, 4]
    finally:
        publisher.close()
        a.shutdown()
        b.shutdown()


def test_registering_the_held_topics_anew_drops_the_ones_no_longer_held(redis_server):
    import redis

    from pubsubsse.backends.redis import RedisTransport

    key = f"test:{uuid.uuid4()}"
    transport = RedisTransport(redis_server.url, key=key)
    transport.serve("P-one")
    transport.hold({"T-a", "T-b"})
    # After a reload the process knows only what it holds now, not what Redis still has for it.
    transport.hold({"T-a"}, again=True)
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.smembers(f"{key}:wants:T-a") == {b"P-one"}
        assert client.smembers(f"{key}:wants:T-b") == set()  # else publishes to T-b would still wake it
        assert client.smembers(f"{key}:held:P-one") == {b"T-a"}
    finally:
        client.close()
        transport.disconnect()


def test_wake_ups_do_not_pile_up_while_a_reader_follows_a_storm_of_changes(redis_server):
    """After a change the reader waits in ``XREAD BLOCK``; the wake-ups of the changes it reads so
    must not stay unread on its wake-up connection (a storm of reconnects would pile up one per
    change there and in Redis's output buffer, to be parsed later in one go)."""
    from pubsubsse.backends.redis import RedisTransport

    key = f"test:{uuid.uuid4()}"
    follower, writer = RedisTransport(redis_server.url, key=key), RedisTransport(redis_server.url, key=key)
    follower.serve("P-follower")
    writer.serve("P-writer")
    writer.create_epoch("E")
    try:
        position = (0, 0)
        assert follower.read(position, 0.05, 1000) == []  # subscribed to its wake-ups from here
        for n in range(200):
            writer.append([{"o": str(n).encode()}], "E", writer.now_ms() + 10_000, 0)  # a change: wakes all
            records = follower.read(position, 1.0, 1000)
            assert [record.fields[b"o"] for record in records] == [str(n).encode()]
            position = records[-1].position
        wake = follower._wake_connection
        left = 0
        while wake.can_read(timeout=0.2) and left < 1000:
            wake.read_response()
            left += 1
        assert left <= 2  # the last change's wake-up may come after its read; not 200 of them
    finally:
        follower.disconnect()
        writer.disconnect()
