"""Direct writes: under gunicorn's gevent worker publishers write to idle streams' sockets themselves.

Read on raw sockets so the HTTP framing (chunked for HTTP/1.1, none for HTTP/1.0) is checked byte
for byte, with small receive buffers so that direct writes fill the socket and leave their rest
to the stream's reader.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time

import httpx
import pytest

from ..http_helpers import SSEReader, api, http, new_client, new_public_topic, publish, wait_for
from ..servers import Server
from ..sse import is_init

TIMEOUT = 30


class RawStream:
    """An /event response read from a plain socket, chunked framing undone, SSE events parsed."""

    def __init__(self, port: int, path: str, version: str = "1.1", rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self._raw = b""
        while b"\r\n\r\n" not in self._raw:
            self._recv()
        head, _, self._raw = self._raw.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1").lower()
        assert self.head.startswith("http/1.") and self.head[9:12] == "200", self.head
        self.chunked = "transfer-encoding: chunked" in self.head
        self.body = b""
        self.closed = False
        self._fields: dict[str, str] = {}
        self._data: list[str] = []

    def _recv(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("the server closed the stream")
        self._raw += data

    def _unframe(self) -> None:
        if not self.chunked:
            self.body, self._raw = self.body + self._raw, b""
            return
        while True:
            size_end = self._raw.find(b"\r\n")
            if size_end < 0:
                return
            size = int(self._raw[:size_end], 16)
            end = size_end + 2 + size
            if len(self._raw) < end + 2:
                return
            assert self._raw[end : end + 2] == b"\r\n", "broken chunk framing"
            if size == 0:
                self.closed = True
            self.body += self._raw[size_end + 2 : end]
            self._raw = self._raw[end + 2 :]

    def _parse(self) -> list[tuple[int, str]]:
        events = []
        *lines, rest = self.body.split(b"\n")
        self.body = rest
        for line in lines:
            if not line:
                if self._data:
                    events.append((int(self._fields["id"]), "\n".join(self._data)))
                self._data = []
            elif not line.startswith(b":"):
                name, _, value = line.decode().partition(": ")
                if name == "data":
                    self._data.append(value)
                else:
                    self._fields[name] = value
        return events

    def events(self, n: int) -> list[tuple[int, str]]:
        """Return the next ``n`` events as ``(id, data)`` pairs."""
        self._unframe()
        events = self._parse()
        deadline = time.monotonic() + TIMEOUT
        while len(events) < n:
            assert time.monotonic() < deadline, f"{len(events)} of {n} events"
            self._recv()
            self._unframe()
            events += self._parse()
        assert len(events) == n, events[n:]
        return events

    def until(self, last_id: int) -> list[tuple[int, str]]:
        """Return every event up to the one with id ``last_id`` (included)."""
        self._unframe()
        events = self._parse()
        deadline = time.monotonic() + TIMEOUT
        while not events or events[-1][0] < last_id:
            assert time.monotonic() < deadline, f"{len(events)} events, the last {events[-1:]}"
            self._recv()
            self._unframe()
            events += self._parse()
        assert events[-1][0] == last_id, events[-1]
        return events

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module", params=["gevent", "threaded"])
def single(request):
    srv = Server(request.param, env={"PUBSUBSSE_HEARTBEAT": "1", "PUBSUBSSE_CLIENT_TIMEOUT": "none"})
    yield srv
    srv.stop()


def subscribed_clients(server, n: int) -> tuple[list[str], str]:
    topic = new_public_topic(server)
    clients = [new_client(server) for _ in range(n)]
    for client in clients:
        assert api(server, "/sub", client_id=client, topic=topic).status_code == 200
    return clients, topic


def update(data: str):
    """Return the payload of a message with one update."""
    (item,) = json.loads(data)["updates"]
    return item["data"]


def stats(server) -> dict:
    return api(server, "/test/stats").json()


def test_only_the_gevent_worker_writes_directly_and_stops_when_the_stream_ends(single):
    (client,), topic = subscribed_clients(single, 1)
    reader = SSEReader("httpx-sse", single.url(f"/event?client_id={client}"))
    try:
        reader.next()
        publish(single, topic, "one")
        assert reader.next().json()["updates"][0]["data"] == "one"
        assert stats(single)["direct"] == (1 if single.kind == "gevent" else 0)
    finally:
        reader.close()
    wait_for(lambda: stats(single)["receiving"] == 0, what="stream detached")
    assert stats(single)["direct"] == 0


def test_full_sockets_lose_and_reorder_nothing(server):
    """6.4 MB to readers with 4 KB receive buffers: direct writes stop part-way, readers finish them."""
    clients, topic = subscribed_clients(server, 3)
    streams = [RawStream(server.port, f"/event?client_id={c}", rcvbuf=4096) for c in clients]
    try:
        first_ids = [stream.events(1)[0][0] for stream in streams]
        payload = "x" * 8000
        for batch in range(8):
            publish(server, topic, *[f"{batch * 100 + i} {payload}" for i in range(100)])
        for stream, first in zip(streams, first_ids):
            events = stream.events(800)
            assert [event_id for event_id, _ in events] == list(range(first + 1, first + 801))
            assert [update(data) for _, data in events] == [f"{i} {payload}" for i in range(800)]
    finally:
        for stream in streams:
            stream.close()


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_framing_follows_the_http_version(single, version):
    (client,), topic = subscribed_clients(single, 1)
    stream = RawStream(single.port, f"/event?client_id={client}", version=version)
    try:
        if single.kind == "gevent":  # Werkzeug chunks its answers to HTTP/1.0 requests as well
            assert stream.chunked == (version == "1.1")
        assert "content-length" not in stream.head
        ((init_id, _),) = stream.events(1)
        publish(single, topic, "a", "b")
        publish(single, topic, "c")
        events = stream.events(3)
        assert [event_id for event_id, _ in events] == [init_id + 1, init_id + 2, init_id + 3]
        assert [update(data) for _, data in events] == ["a", "b", "c"]
        publish(single, topic, "d")
        assert stream.events(1)[0][0] == init_id + 4
    finally:
        stream.close()


def test_one_publish_reaches_200_idle_streams_in_order(server):
    clients, topic = subscribed_clients(server, 200)
    streams = [RawStream(server.port, f"/event?client_id={c}") for c in clients]
    try:
        firsts = {stream.sock.fileno(): (stream, stream.events(1)[0][0]) for stream in streams}
        for n in range(5):
            publish(server, topic, *[f"m{n}.{i}" for i in range(4)])
        got = {fd: [] for fd in firsts}
        deadline = time.monotonic() + TIMEOUT
        while any(len(events) < 20 for events in got.values()):
            assert time.monotonic() < deadline, sorted(len(e) for e in got.values())[:5]
            waiting = [fd for fd, events in got.items() if len(events) < 20]
            ready, _, _ = select.select(waiting, [], [], 1)
            for fd in ready:
                stream = firsts[fd][0]
                stream._recv()
                stream._unframe()
                got[fd] += stream._parse()
        for fd, (_, first) in firsts.items():
            assert [event_id for event_id, _ in got[fd]] == list(range(first + 1, first + 21))
            assert [update(data) for _, data in got[fd]] == [f"m{n}.{i}" for n in range(5) for i in range(4)]
    finally:
        for stream in streams:
            stream.close()


def read_until_closed(stream: RawStream) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        stream._recv()


def assert_ended_properly(stream: RawStream) -> None:
    """The server ends the response (its last chunk, under HTTP/1.1) and closes the connection."""
    with pytest.raises(EOFError):
        read_until_closed(stream)
    stream._unframe()
    assert stream.closed or not stream.chunked, "no last chunk before the close"


def test_idle_streams_hold_no_greenlet_and_keep_delivering(single):
    """Under the gevent worker a stream takes its connection over and its request's greenlet ends.

    Released streams still deliver, get heartbeats, notice closed connections and end the
    response properly (the last chunk, then the connection closes) when their client goes.
    """
    clients, topic = subscribed_clients(single, 50)
    baseline = stats(single)["greenlets"]
    streams = [RawStream(single.port, f"/event?client_id={c}") for c in clients]
    try:
        firsts = [stream.events(1)[0][0] for stream in streams]
        wait_for(lambda: stats(single)["receiving"] == 50, what="50 streams")
        if single.kind == "gevent":
            extra = stats(single)["greenlets"] - baseline
            assert extra < 10, f"{extra} more greenlets for 50 idle streams"
        publish(single, topic, "to all")
        for stream, first in zip(streams, firsts):
            ((event_id, data),) = stream.events(1)
            assert (event_id, update(data)) == (first + 1, "to all")
        quiet = streams[1]
        deadline = time.monotonic() + TIMEOUT
        while b":\n" not in quiet.body:  # a heartbeat (every second here) on an idle stream
            assert time.monotonic() < deadline, "no heartbeat"
            quiet._recv()
            quiet._unframe()
        for stream in streams[:25]:
            stream.close()
        wait_for(lambda: stats(single)["receiving"] == 25, what="the 25 closed streams noticed")
        assert api(single, "/remove/user", client_id=clients[30]).status_code == 200
        removed = streams[30]
        final = json.loads(removed.events(1)[0][1])
        assert final["sys"][0] == {"type": "topics", "list": []}
        assert_ended_properly(removed)
    finally:
        for stream in streams:
            stream.close()
    wait_for(lambda: stats(single)["receiving"] == 0, what="every stream detached")


def test_a_publish_from_a_native_thread_does_not_wait_for_a_heartbeat():
    """Its flush used to be scheduled on that thread's idle hub, stalling direct writes until heartbeats."""
    srv = Server("gevent", env={"PUBSUBSSE_HEARTBEAT": "120", "PUBSUBSSE_CLIENT_TIMEOUT": "none"})
    try:
        (client,), topic = subscribed_clients(srv, 1)
        stream = RawStream(srv.port, f"/event?client_id={client}")
        ((init_id, _),) = stream.events(1)
        answer = http.post(srv.url("/test/pub-from-native-thread"), json={"topic": topic, "data": "from a thread"})
        assert answer.status_code == 200
        assert [update(data) for _, data in stream.until(init_id + 1)] == ["from a thread"]
        publish(srv, topic, "from a greenlet")  # and the process's direct writes still flow
        assert [update(data) for _, data in stream.until(init_id + 2)] == ["from a greenlet"]
        assert "a change was made from a native thread" in srv.output()
        stream.close()
    finally:
        srv.stop()


def test_bursts_larger_than_the_queue_lose_nothing():
    """The adversarial round's setup: queue_size 5, 300 subscribers, bursts of 8 at about 2,000/s.

    Before the fix most streams lost events with no init message (ids 6 -> 10): a direct write
    overtook events queued while the reader was waiting. Every stream must now get every event in
    id order, or a resync announced by an init message.
    """
    srv = Server("gevent", env={"PUBSUBSSE_HEARTBEAT": "5", "PUBSUBSSE_CLIENT_TIMEOUT": "none", "PUBSUBSSE_QUEUE": "5"})
    streams = []
    try:
        clients, topic = subscribed_clients(srv, 300)
        streams = [RawStream(srv.port, f"/event?client_id={c}") for c in clients]
        firsts = {stream.sock.fileno(): stream.events(1)[0][0] for stream in streams}
        bursts = 40
        for n in range(bursts):
            publish(srv, topic, *[f"{n}.{i}" for i in range(8)])
            time.sleep(0.004)  # 8 messages per 4 ms: about 2,000 per second
        last = {fd: first + bursts * 8 for fd, first in firsts.items()}
        got = {stream.sock.fileno(): [] for stream in streams}
        by_fd = {stream.sock.fileno(): stream for stream in streams}
        deadline = time.monotonic() + TIMEOUT
        while any(not events or events[-1][0] < last[fd] for fd, events in got.items()):
            waiting = [fd for fd, events in got.items() if not events or events[-1][0] < last[fd]]
            assert time.monotonic() < deadline, f"{len(waiting)} streams still short"
            ready, _, _ = select.select(waiting, [], [], 1)
            for fd in ready:
                by_fd[fd]._recv()
                by_fd[fd]._unframe()
                got[fd] += by_fd[fd]._parse()
        silent_gaps = []
        for fd, events in got.items():
            previous = firsts[fd]
            for event_id, data in events:
                message = json.loads(data)
                if is_init(message):
                    previous = event_id  # a resync, announced
                    continue
                if event_id != previous + 1:
                    silent_gaps.append((previous, event_id))
                previous = event_id
        assert not silent_gaps, f"{len(silent_gaps)} silent gaps, e.g. {silent_gaps[:5]}"
    finally:
        for stream in streams:
            stream.close()
        srv.stop()


@pytest.mark.timeout(120)
def test_max_requests_ends_released_streams_and_detaches_them(redis_server):
    """gunicorn's --max-requests stops a worker from inside, with no signal: its released streams got an EOF
    without the chunked terminator, and the other server kept their clients RECEIVING until the worker
    was judged dead. They must end as at SIGTERM."""
    import uuid

    from ..http_helpers import state

    env = {
        "PUBSUBSSE_REDIS_URL": redis_server.url,
        "PUBSUBSSE_REDIS_KEY": f"test:{uuid.uuid4()}",
        "PUBSUBSSE_HEARTBEAT": "30",
        "PUBSUBSSE_CLIENT_TIMEOUT": "none",
    }
    other = Server("gevent", env=env)
    stopping = Server("gevent", env={**env, "GUNICORN_CMD_ARGS": "--max-requests 40"})
    streams = []
    try:
        clients = [new_client(other) for _ in range(20)]
        streams = [RawStream(stopping.port, f"/event?client_id={c}") for c in clients]  # 20 requests
        wait_for(
            lambda: all(state(other)["clients"][c]["status"] == "receiving" for c in clients), what="all receiving"
        )
        for _ in range(100):  # past --max-requests: the worker stops by itself
            with contextlib.suppress(httpx.TransportError):  # the worker is on its way out
                http.get(stopping.url("/test/ready"))
            readable, _, _ = select.select([s.sock for s in streams], [], [], 0)
            if len(readable) == len(streams):
                break
        ends = []
        for s in streams:
            s.sock.settimeout(30)  # bounded; under load the end once took over 10 s
            raw = s._raw
            while True:
                data = s.sock.recv(1 << 16)
                if not data:
                    break
                raw += data
            ends.append(raw.endswith(b"0\r\n\r\n"))
        assert all(ends), f"{ends.count(False)} of {len(ends)} streams ended without the chunked terminator"
        wait_for(
            lambda: all(state(other)["clients"][c]["status"] == "waiting" for c in clients),
            timeout=5,  # well within alive (30 s), after which the other server would detach them anyway
            what="the other server to see the streams detached",
        )
    finally:
        for s in streams:
            s.sock.close()
        stopping.stop()
        other.stop()


def read_until(stream: RawStream, predicate, what: str) -> None:
    """Read ``stream`` (chunk framing undone into ``stream.body``) until ``predicate(body)``; bounded."""
    deadline = time.monotonic() + TIMEOUT
    stream._unframe()
    while not predicate(stream.body):
        assert time.monotonic() < deadline, f"no {what}: {stream.body[-300:]!r}"
        stream._recv()
        stream._unframe()


def test_shared_streams_hold_no_greenlet_and_keep_delivering(single):
    """``/event/shared`` (what the browser client uses by default) held a greenlet per connection under the
    gevent worker, 19.7 KB each, and counted against --worker-connections. Released like /event streams,
    they still deliver to each client, get heartbeats, notice closed connections, announce a removed
    client and end the response properly when their last client goes."""
    clients, topic = subscribed_clients(single, 40)
    pairs = list(zip(clients[::2], clients[1::2]))
    baseline = stats(single)["greenlets"]
    streams = [RawStream(single.port, f"/event/shared?clients={a},{b}") for a, b in pairs]
    try:
        for s in streams:
            read_until(s, lambda body: b"event: c0\n" in body and b"event: c1\n" in body, what="two inits")
            s.body = b""
        wait_for(lambda: stats(single)["receiving"] == 40, what="40 streams")
        if single.kind == "gevent":
            extra = stats(single)["greenlets"] - baseline
            assert extra < 10, f"{extra} more greenlets for 20 idle shared streams"
        publish(single, topic, "to all")
        for s in streams:
            read_until(s, lambda body: body.count(b'"data":"to all"') == 2, what="the update for both clients")
        quiet = streams[1]
        read_until(quiet, lambda body: b"\n:\n" in body or body.startswith(b":\n"), what="heartbeat")
        for s in streams[:5]:
            s.close()
        wait_for(lambda: stats(single)["receiving"] == 30, what="the 5 closed connections noticed")
        last = streams[15]
        assert api(single, "/remove/user", client_id=pairs[15][0]).status_code == 200
        read_until(last, lambda body: b'event: end\ndata: {"client": 0, "reason": "removed"}' in body, what="end")
        assert api(single, "/remove/user", client_id=pairs[15][1]).status_code == 200
        assert_ended_properly(last)
    finally:
        for s in streams:
            s.close()
    wait_for(lambda: stats(single)["receiving"] == 0, what="every stream detached")


@pytest.mark.timeout(60)
def test_shared_streams_do_not_count_against_worker_connections():
    """With --worker-connections 20, the 21st shared stream and every other request hung."""
    srv = Server(
        "gevent",
        env={
            "PUBSUBSSE_HEARTBEAT": "30",
            "PUBSUBSSE_CLIENT_TIMEOUT": "none",
            "GUNICORN_CMD_ARGS": "--worker-connections 20",
        },
    )
    streams = []
    try:
        clients = [new_client(srv) for _ in range(30)]
        for client in clients:
            streams.append(RawStream(srv.port, f"/event/shared?clients={client}"))
            read_until(streams[-1], lambda body: b"event: c0\n" in body, what="init")
        assert httpx.get(srv.url("/add/user"), timeout=5).status_code == 200
    finally:
        for s in streams:
            s.close()
        srv.stop()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("shared", [False, True], ids=["event", "event-shared"])
def test_a_stream_whose_reader_takes_nothing_is_ended_after_write_timeout(shared):
    """A client that never reads kept its stream, the kernel's buffer and queue_size events for good."""
    srv = Server(
        "gevent",
        env={"PUBSUBSSE_HEARTBEAT": "30", "PUBSUBSSE_CLIENT_TIMEOUT": "none", "PUBSUBSSE_WRITE_TIMEOUT": "1"},
    )
    try:
        (client,), topic = subscribed_clients(srv, 1)
        path = f"/event/shared?clients={client}" if shared else f"/event?client_id={client}"
        stuck = RawStream(srv.port, path, rcvbuf=4096)  # reads the head, then nothing
        wait_for(lambda: stats(srv)["receiving"] == 1, what="the stream")
        for _ in range(120):  # 6 MB: more than the socket's buffers hold
            publish(srv, topic, "x" * 50_000)
            if stats(srv)["receiving"] == 0:
                break
        wait_for(lambda: stats(srv)["receiving"] == 0, timeout=15, what="the stalled stream to be ended")
        stuck.sock.settimeout(10)
        with pytest.raises(EOFError):  # the server closed the connection
            read_until_closed(stuck)
    finally:
        srv.stop()
