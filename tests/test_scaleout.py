"""Scale-out on Redis: worker death, Redis restarts and late joiners, on real gunicorn servers."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import httpx
import psutil
import pytest
import redis as redis_py
from httpx_sse import connect_sse

from .http_helpers import SSEReader, api, http, new_client, new_public_topic, publish, state, wait_for
from .redis_server import RedisServer
from .servers import Server


@pytest.fixture(params=[False], ids=["in-memory"])
def redis(request):
    server = RedisServer(persistent=request.param)
    yield server
    server.close()


def shared_env(redis, **extra):
    return {
        "PUBSUBSSE_REDIS_URL": redis.url,
        "PUBSUBSSE_REDIS_KEY": f"t:{uuid.uuid4()}",
        "PUBSUBSSE_HEARTBEAT": "1",
        **extra,
    }


class ResumingReader(threading.Thread):
    """An SSE consumer that, when its connection breaks, resumes on the next server with Last-Event-ID."""

    def __init__(self, client_id, servers, expected):
        super().__init__(daemon=True)
        self.client_id = client_id
        self.servers = servers
        self.expected = expected
        self.updates = []
        self.last_id = None
        self.reconnects = 0
        self.done = threading.Event()

    def run(self):
        deadline = time.monotonic() + 60
        index = 0
        while len(self.updates) < self.expected and time.monotonic() < deadline:
            server = self.servers[min(index, len(self.servers) - 1)]
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                with (
                    httpx.Client(timeout=httpx.Timeout(5, read=10)) as client,
                    connect_sse(
                        client, "GET", server.url(f"/event?client_id={self.client_id}"), headers=headers
                    ) as source,
                ):
                    for event in source.iter_sse():
                        self.last_id = event.id
                        message = event.json()
                        self.updates += [u["data"] for u in message["updates"] or []]
                        if len(self.updates) >= self.expected:
                            break
            except (httpx.HTTPError, ValueError):
                pass
            if len(self.updates) >= self.expected:
                break
            index += 1
            self.reconnects += 1
        self.done.set()


@pytest.mark.timeout(180)
def test_sigkill_of_the_worker_holding_20_streams_loses_nothing(redis):
    env = shared_env(redis)
    a = Server("gevent", env=env, workers=1)
    b = Server("gevent", env=env, workers=2)
    try:
        topic = new_public_topic(a)
        clients = [new_client(a) for _ in range(20)]
        for c in clients:
            api(b, "/sub", client_id=c, topic=topic)
        total = 300
        readers = [ResumingReader(c, [a, b], total) for c in clients]
        for r in readers:
            r.start()
        wait_for(lambda: all(s["status"] == "receiving" for s in state(b)["clients"].values()), what="20 streams")
        worker = psutil.Process(a.proc.pid).children()[0]

        def publisher():
            for i in range(total):
                publish(b, topic, i)
                if i == 100:
                    worker.send_signal(signal.SIGKILL)
                time.sleep(0.01)

        thread = threading.Thread(target=publisher)
        thread.start()
        thread.join(60)
        for r in readers:
            assert r.done.wait(60)
        for r in readers:
            assert r.updates == list(range(total)), (r.reconnects, len(r.updates))
        assert all(r.reconnects >= 1 for r in readers)
    finally:
        a.stop()
        b.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("redis", [False, True], ids=["in-memory", "persistent"], indirect=True)
def test_redis_restart_keeps_streams_and_recovers(redis):
    """Open streams survive a Redis restart; a server started while Redis is down starts and waits.

    Persistent, Redis comes back with the log and everyone goes on. In memory, it comes back
    empty: a process that holds the state stores it as the base of a new log, every process loads
    it (every stream gets an init message, an announced resync) and the late server serves the
    client too.
    """
    env = shared_env(redis)
    a = Server("gevent", env=env, workers=2)
    b = Server("gevent", env=env, workers=2)
    servers = [a, b]
    try:
        client = new_client(a)
        topic = new_public_topic(a)
        api(b, "/sub", client_id=client, topic=topic)
        reader = ResumingReader(client, [a], 2)
        reader.start()
        wait_for(lambda: state(b)["clients"][client]["status"] == "receiving", what="stream")
        publish(b, topic, "before")
        wait_for(lambda: reader.updates == ["before"], what="first update")
        redis.stop()
        r = http.get(a.url("/sub"), params={"client_id": client, "topic": topic})
        assert r.status_code == 503
        assert r.json() == {"ok": "false", "error": "backend unavailable"}
        # A worker that boots now (a restart, a new server) must start and answer 503 until Redis is back.
        late = Server("gevent", env=env, workers=1)
        servers.append(late)
        assert api(late, "/sub", client_id=client, topic=topic).status_code == 503
        time.sleep(2.5)  # two heartbeats go by while Redis is down: the stream must stay open
        assert reader.reconnects == 0 and reader.is_alive()
        redis.start()
        wait_for(lambda: api(b, "/sub", client_id=client, topic=topic).status_code == 200, what="Redis back")
        wait_for(lambda: api(late, "/sub", client_id=client, topic=topic).status_code == 200, what="late loaded")
        publish(late, topic, "after")
        assert reader.done.wait(20)
        assert reader.updates == ["before", "after"] and reader.reconnects == 0
        assert all(s.proc.poll() is None for s in servers)
    except Exception:
        for s in servers:
            print(f"server on port {s.port}:", s.output())  # shown by pytest on failure
        raise
    finally:
        for s in servers:
            s.stop()


@pytest.mark.timeout(180)
def test_a_server_started_after_1000_changes_serves_the_same_state(redis):
    env = shared_env(redis, PUBSUBSSE_REDIS_SNAPSHOT_EVERY="100")
    a = Server("gevent", env=env, workers=2)
    try:
        topics = [new_public_topic(a) for _ in range(20)]
        clients = [new_client(a) for _ in range(30)]
        changes = 50
        while changes < 1000:
            for c in clients:
                for t in topics[:8]:
                    api(a, "/sub", client_id=c, topic=t)
                    changes += 1
                api(a, "/unsub", client_id=c, topic=topics[0])
                changes += 1
                if changes >= 1000:
                    break
        publish(a, topics[1], *range(20))
        time.sleep(1.5)  # positions are reported once a second; the next snapshot trims behind them
        publish(a, topics[1], *range(120))
        log_length = redis_py.Redis.from_url(redis.url).xlen(env["PUBSUBSSE_REDIS_KEY"])
        assert log_length < 500 < changes  # snapshots keep the log short; the late server loads one
        first = SSEReader("httpx-sse", a.url(f"/event?client_id={clients[0]}"))
        last_id = first.next().id
        first.close()
        publish(a, topics[1], "x", "y", "z")
        late = Server("gevent", env=env, workers=1)
        try:
            assert state(late) == state(a)
            resumed = SSEReader(
                "httpx-sse", late.url(f"/event?client_id={clients[0]}"), headers={"Last-Event-ID": last_id}
            )
            try:
                events = resumed.take(3)
                assert [e.json()["updates"][0]["data"] for e in events] == ["x", "y", "z"]
                assert [int(e.id) for e in events] == [int(last_id) + 1, int(last_id) + 2, int(last_id) + 3]
            finally:
                resumed.close()
        finally:
            late.stop()
    finally:
        a.stop()
