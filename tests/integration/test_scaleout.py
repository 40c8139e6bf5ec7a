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

from ..http_helpers import SSEReader, api, http, new_client, new_public_topic, publish, state, wait_for
from ..redis_server import RedisServer
from ..servers import Server, print_outputs, stop_all


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

    def __init__(self, client_id, servers, expected, read_timeout: float = 10):
        super().__init__(daemon=True)
        self.read_timeout = read_timeout
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
                    httpx.Client(timeout=httpx.Timeout(5, read=self.read_timeout)) as client,
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


def test_400_concurrent_changes_on_one_worker_all_succeed(redis):
    """redis-py's pool allowed 100 connections per process: 296 of 400 concurrent /sub got 503."""
    import socket

    srv = Server("gevent", env=shared_env(redis), workers=1)
    try:
        topic = new_public_topic(srv)
        clients = [new_client(srv) for _ in range(400)]
        sockets = []
        for client in clients:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            s.sendall(
                f"GET /sub?client_id={client}&topic={topic} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            sockets.append(s)
        statuses = []
        for s in sockets:
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
            s.close()
            statuses.append(int(reply.split(b" ", 2)[1]))
        assert statuses == [200] * 400, {status: statuses.count(status) for status in set(statuses)}
        assert all(topic in c["subscribed"] for c in state(srv)["clients"].values())
    finally:
        srv.stop()


@pytest.mark.timeout(120)
def test_a_worker_paused_past_alive_ends_its_streams_when_it_wakes(redis):
    """The others detach its clients; waking, it must end those streams, or browsers wait forever."""
    env = shared_env(redis, PUBSUBSSE_REDIS_ALIVE="2", PUBSUBSSE_CLIENT_TIMEOUT="none")
    a = Server("gevent", env=env, workers=1)
    b = Server("gevent", env=env, workers=1)
    try:
        client = new_client(a)
        topic = new_public_topic(a)
        api(a, "/sub", client_id=client, topic=topic)
        # Holds its stream on b, reconnects to a. Like EventSource, it never gives up on a silent
        # stream by itself (heartbeats come every second from a live server).
        reader = ResumingReader(client, [b, a], 2, read_timeout=120)
        reader.start()
        wait_for(lambda: state(a)["clients"][client]["status"] == "receiving", what="the stream on b")
        publish(a, topic, "before")
        wait_for(lambda: reader.updates == ["before"], what="the first update")
        worker = http.get(b.url("/test/ready")).json()["pid"]
        psutil.Process(worker).suspend()  # SIGSTOP: a long GC pause, a VM migration
        try:
            wait_for(lambda: state(a)["clients"][client]["status"] == "waiting", timeout=20, what="a to detach it")
        finally:
            psutil.Process(worker).resume()
        wait_for(lambda: reader.reconnects >= 1, timeout=10, what="b to end the stream when it wakes")
        wait_for(lambda: state(a)["clients"][client]["status"] == "receiving", what="the stream again, on a")
        publish(a, topic, "after")
        assert reader.done.wait(20)
        assert reader.updates == ["before", "after"]
    except Exception:
        for s in (a, b):
            print(f"server on port {s.port}:", s.output())
        raise
    finally:
        a.stop()
        b.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("paused", ["a worker", "redis"])
def test_a_pause_past_alive_ends_no_stream_of_the_processes_that_did_not_pause(redis, paused):
    """A worker waking from a pause longer than alive judged liveness from reports read before it: every other
    process looked dead and it detached their streams, a cluster-wide reconnect storm after one GC pause or VM
    migration. With the log away that long nobody could report, and at recovery all streams were ended."""
    env = shared_env(redis, PUBSUBSSE_REDIS_ALIVE="2", PUBSUBSSE_CLIENT_TIMEOUT="none")
    a = Server("gevent", env=env, workers=1)
    b = Server("gevent", env=env, workers=1)
    try:
        holders = [a] * 10 if paused == "a worker" else [a] * 5 + [b] * 5
        clients = [new_client(server) for server in holders]
        readers = [ResumingReader(c, [server], 1, read_timeout=120) for c, server in zip(clients, holders)]
        for reader in readers:
            reader.start()
        wait_for(lambda: all(state(b)["clients"][c]["status"] == "receiving" for c in clients), what="streams")
        pid = http.get(b.url("/test/ready")).json()["pid"] if paused == "a worker" else redis.proc.pid
        psutil.Process(pid).suspend()  # SIGSTOP: a long GC pause, a VM migration, a stalled Redis
        try:
            time.sleep(5)  # longer than alive
        finally:
            psutil.Process(pid).resume()
        wait_for(lambda: http.get(b.url("/test/ready")).status_code == 200, what="b to answer again")
        deadline = time.monotonic() + 5  # the timers run every second: watch through several of them
        while time.monotonic() < deadline:
            assert all(r.reconnects == 0 for r in readers), "a stream was ended"
            time.sleep(0.2)
        assert all(state(a)["clients"][c]["status"] == "receiving" for c in clients)
    except Exception:
        print_outputs([a, b])
        raise
    finally:
        stop_all([a, b])
