"""The Redis command log in-process: snapshots, trimming and late joiners."""

from __future__ import annotations

import time
import uuid

import redis as redis_py

from pubsubsse import SSEPubSubService


def exported(service):
    service.sync()
    with service._lock:
        return service._export_state()


def test_snapshots_bound_the_log_and_late_joiners_load_them(redis_server):
    key = f"test:{uuid.uuid4()}"
    a = SSEPubSubService(redis_url=redis_server.url, redis_key=key, client_timeout=None, redis_snapshot_every=50)
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
        late = SSEPubSubService(redis_url=redis_server.url, redis_key=key, client_timeout=None)
        try:
            assert exported(late) == exported(a)
            first = late.get_client_by_id(clients[0].id)
            seq = first._mailbox.seq
            stream = first.stream(last_event_id=str(seq - 2))
            chunk = stream.read(timeout=1)
            assert chunk.count(b"\nid: ") + chunk.startswith(b"id: ") == 2
            assert f"id: {seq}\n".encode() in chunk
            stream.close()
        finally:
            late.shutdown()
    finally:
        a.shutdown()
        for k in r.keys(key + "*"):
            r.delete(k)
