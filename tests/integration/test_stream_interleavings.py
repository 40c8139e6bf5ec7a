"""The stream state machine under every interleaving Hypothesis can find.

The real pieces (service, client record, stream, the direct writes, the timer's heartbeat, resync
on overflow, takeover, close) are driven one step at a time in an order Hypothesis chooses, the
way gunicorn's gevent worker could schedule them: a reader that parks on an empty queue and is
woken later, publishers that write to waiting streams directly, a direct-write callback that runs when
the publisher yields, a socket that takes only part of a write. The test plays the consumer (a
browser): it reads each connection's bytes, reconnects with ``Last-Event-ID`` after a close or a
takeover, and after every step asserts the promise of the README: each event arrives exactly
once, in id order, with the body that was published, or the gap is announced by an init message.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pubsubsse import SSEPubSubService
from pubsubsse.streams._stream import _DIRECT_WRITES

from ..sse import is_init

#: Callbacks the direct writes scheduled with ``call_soon``: they run when the test says the loop runs.
CALLBACKS: list[Any] = []


class Connection:
    """One /event connection: the stream's reader as a greenlet would run it, and its socket.

    Also the stream's direct writer. ``capacity`` is what the socket takes before it would block
    (``None``: everything), so direct writes can stop part-way and leave the rest to the reader.
    """

    def __init__(self, stream: Any, direct: bool, opened_with: int | None) -> None:
        self.stream = stream
        self.direct = direct
        self.opened_with = opened_with
        self.wire = bytearray()
        self.capacity: int | None = None
        self.state = "starting"  # then "running", "reader_waiting" (blocked in queue.get) or "ended"
        #: How much of ``wire`` the consumer read before it moved to another connection.
        self.read_until: int | None = None
        self._parsed: tuple[int, list[tuple[int, dict[str, Any]]]] = (-1, [])

    # The DirectWriter protocol (HTTP/1.0 framing: the body goes on the wire as it is).
    def frame(self, chunk: bytes) -> bytes:
        return chunk

    def send_nowait(self, data: bytes) -> int:
        n = len(data) if self.capacity is None else min(self.capacity, len(data))
        if self.capacity is not None:
            self.capacity -= n
        self.wire += data[:n]
        return n

    def call_soon(self, callback: Any) -> None:
        CALLBACKS.append(callback)

    # The reader: one step of _EventStreamBody.__next__ (a blocking sendall always completes).
    def step(self) -> None:
        stream = self.stream
        if self.state == "starting":
            self.wire += stream.read(timeout=0)  # the first chunk, sent by the server itself
            if self.direct:
                stream.write_directly(self)
            self.state = "running"
        elif self.state == "running":
            if stream._ended:
                self._end()
                return
            stream.reader_waiting = stream._writer is not None  # as Stream.read does before queue.get()
            if stream.queue.empty():
                self.state = "reader_waiting"
                return
            stream.reader_waiting = False
            self._handle(stream.queue.get_nowait())
        elif self.state == "reader_waiting" and not stream.queue.empty():  # woken by a put
            stream.reader_waiting = False
            self.state = "running"
            self._handle(stream.queue.get_nowait())

    def _handle(self, first: Any) -> None:
        chunk = self.stream._compose(first)
        self.wire += self.stream.take_unsent()
        if chunk is None:
            self._end()
        elif chunk:
            self.wire += chunk

    def _end(self) -> None:
        # What the server does once the body is exhausted: _EventStreamBody.close().
        self.state = "ended"
        self.stream.stop_writing_directly()
        self.stream.close()

    def events(self) -> list[tuple[int, dict[str, Any]]]:
        """The complete events the consumer read from this connection, as (id, message) pairs."""
        end = len(self.wire) if self.read_until is None else self.read_until
        if self._parsed[0] != end:
            self._parsed = (end, self._parse(bytes(self.wire[:end]).decode("utf-8")))
        return self._parsed[1]

    @staticmethod
    def _parse(text: str) -> list[tuple[int, dict[str, Any]]]:
        events, fields = [], {}
        for line in text.split("\n")[:-1]:  # the last piece is an incomplete line, or ""
            if line == "":
                if fields:
                    assert set(fields) == {"id", "data"}, fields
                    events.append((int(fields["id"]), json.loads(fields["data"])))
                fields = {}
            elif line.startswith(":") or line.startswith("retry: "):
                assert line == ":" or not fields, line
            else:
                name, _, value = line.partition(": ")
                assert name in ("id", "data") and name not in fields, line
                fields[name] = value
        return events


class StreamInterleavings(RuleBasedStateMachine):
    @initialize(queue_size=st.integers(1, 3), replay_size=st.sampled_from([0, 2, 5, 50]), direct=st.booleans())
    def start(self, queue_size: int, replay_size: int, direct: bool) -> None:
        # A callback dropped by an earlier example would leave the process's direct writes believing
        # one is scheduled, and no direct write would ever be flushed again.
        CALLBACKS.clear()
        _DIRECT_WRITES._dirty.clear()
        # heartbeat and client_timeout out of reach: the service's own timer thread does nothing,
        # and the test queues heartbeats itself (rule heartbeat).
        self.service = SSEPubSubService(
            heartbeat=1e6, client_timeout=None, queue_size=queue_size, replay_size=replay_size
        )
        self.direct = direct
        self.topic = self.service.new_public_topic()
        self.client = self.service.new_client()
        self.client.sub(self.topic)
        self.published = 0
        self.removed = False
        #: Every body given to the client, by event id, as JSON.
        self.oracle: dict[int, Any] = {}
        self.connections: list[Connection] = []
        self.connect(None)
        self.reader_runs(0)  # it sends the first chunk and parks, as a real reader does at once

    def teardown(self) -> None:
        if hasattr(self, "service"):
            self.settle()
            self.service._timer.stop()
        CALLBACKS.clear()

    # The consumer ------------------------------------------------------------------------------

    @property
    def current(self) -> Connection:
        return self.connections[-1]

    def last_seen(self) -> int | None:
        seen = [event_id for c in self.connections for event_id, _ in c.events()]
        return seen[-1] if seen else None

    def connect(self, last_event_id: int | None) -> None:
        if self.connections:
            self.current.read_until = len(self.current.wire)
        stream = self.client.stream(None if last_event_id is None else str(last_event_id))
        self.connections.append(Connection(stream, self.direct, last_event_id))

    def expect(self, message: dict[str, Any]) -> None:
        """Record what the change just made must have sent the client, under its event id."""
        self.oracle[self.service._core.position] = message  # the id of an event is its change's position

    # What happens on the server ----------------------------------------------------------------

    @rule(n=st.integers(1, 7))
    def publish(self, n: int) -> None:
        for _ in range(n):
            self.published += 1
            self.topic.pub(self.published)
            if not self.removed:
                self.expect({"sys": None, "updates": [{"topic": self.topic.id, "data": self.published}]})

    @rule(actions=st.lists(st.sampled_from(["publish", "loop", "reader", "socket full", "socket free"]), max_size=12))
    def busy_moment(self, actions: list[str]) -> None:
        """Several fine-grained things in a row, as under load: where races between them live."""
        for action in actions:
            if action == "publish":
                self.publish(1)
            elif action == "loop":
                self.loop_runs_callbacks()
            elif action == "reader":
                self.reader_runs(len(self.connections) - 1)
            else:
                self.socket_buffer(0 if action == "socket full" else None)

    @precondition(lambda self: not self.removed)
    @rule()
    def system_message(self) -> None:
        self.client.sub(self.topic)  # "subscribed" again: a sys message, no state change
        self.expect({"sys": [{"type": "subscribed", "list": [{"id": self.topic.id}]}], "updates": None})

    @rule(index=st.integers(0, 3))
    def reader_runs(self, index: int) -> None:
        """A reader greenlet is scheduled: it runs until it blocks on its empty queue, or ends."""
        live = [c for c in self.connections if c.state != "ended"]
        if live:
            connection = live[index % len(live)]
            for _ in range(100):
                connection.step()
                if connection.state in ("reader_waiting", "ended"):
                    break

    @rule()
    def loop_runs_callbacks(self) -> None:
        callbacks = CALLBACKS[:]
        CALLBACKS.clear()
        for callback in callbacks:
            callback()

    @rule(capacity=st.sampled_from([0, 1, 30, 120, 1000, None]))
    def socket_buffer(self, capacity: int | None) -> None:
        self.current.capacity = capacity

    @rule()
    def heartbeat(self) -> None:
        self.service._attachments.tick(time.monotonic() + 1e7)

    @precondition(lambda self: not self.removed)
    @rule()
    def peer_closes_and_reconnects(self) -> None:
        self.current.stream.close()  # what the disconnect watcher does
        self.connect(self.last_seen())

    @precondition(lambda self: not self.removed)
    @rule()
    def takeover(self) -> None:
        self.connect(self.last_seen())  # a new connection while the old one is still open

    @precondition(lambda self: not self.removed)
    @rule()
    def remove_client(self) -> None:
        """The client gets a final message, then its stream ends; publishes no longer reach it."""
        self.service.remove_client(self.client)
        self.removed = True
        unsubscribed = {"type": "unsubscribed", "list": [{"id": self.topic.id}]}
        self.expect({"sys": [{"type": "topics", "list": []}, unsubscribed], "updates": None})

    # What must hold ----------------------------------------------------------------------------

    @invariant()
    def each_event_once_in_order_or_an_announced_resync(self) -> None:
        if not hasattr(self, "service"):
            return
        for connection in self.connections:
            previous = connection.opened_with
            for event_id, message in connection.events():
                if is_init(message):
                    assert event_id <= self.service._core.position, (event_id, self.service._core.position)
                else:
                    assert previous is not None, f"event {event_id} without an init message first"
                    expected = min((n for n in self.oracle if n > previous), default=None)
                    assert event_id == expected, f"id {previous} followed by {event_id}, not {expected}: a silent gap"
                    assert message == self.oracle[event_id], (event_id, message, self.oracle[event_id])
                previous = event_id

    def settle(self) -> None:
        """Let everything run until nothing moves, then the consumer must have every event."""
        self.current.capacity = None
        for _ in range(1000):
            before = (len(CALLBACKS), [(len(c.wire), c.state) for c in self.connections])
            self.loop_runs_callbacks()
            for c in self.connections:
                if c.state != "ended":
                    c.step()
            if before == (len(CALLBACKS), [(len(c.wire), c.state) for c in self.connections]):
                break
        self.each_event_once_in_order_or_an_announced_resync()
        last = self.last_seen()
        assert last is not None and last >= max(self.oracle, default=0), "events stuck on the server"
        if self.removed:
            assert self.current.state == "ended", "the stream of a removed client did not end"


StreamInterleavings.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_stream_interleavings = StreamInterleavings.TestCase


def test_a_direct_write_never_overtakes_an_event_queued_while_the_reader_was_waiting():
    """The loss the adversarial round found, step by step (issue: ids jumping 6 -> 10, no init).

    A burst larger than queue_size fills the waiting stream's pending bytes and queues the rest;
    the direct writes send the pending bytes before the woken reader runs; the next publish must not
    be written directly ahead of the queued events (they were then skipped as already sent).
    """
    machine = StreamInterleavings()
    machine.start(queue_size=5, replay_size=1000, direct=True)
    try:
        assert machine.current.state == "reader_waiting"
        machine.publish(8)  # 5 go to the pending bytes, 3 to the queue
        machine.loop_runs_callbacks()  # the direct writes run first: the pending bytes are written
        machine.publish(8)  # the reader has not run yet
        machine.reader_runs(0)
        machine.loop_runs_callbacks()
        machine.reader_runs(0)
        machine.each_event_once_in_order_or_an_announced_resync()
        machine.settle()
    finally:
        machine.teardown()
