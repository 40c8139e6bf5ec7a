"""The stream loop without HTTP: resume, takeover, slow consumers, heartbeats, expiry."""

from __future__ import annotations

import gc
import threading

import pytest

from pubsubsse import SSEPubSubService, Status

from ..sse import drain, is_init, is_reset, parse


def updates(parsed):
    return [m["updates"][0]["data"] for m in parsed.messages if m["updates"]]


@pytest.fixture
def subscribed(service):
    c = service.new_client()
    t = service.new_public_topic()
    c.sub(t)
    return c, t


def test_resume_replays_exactly_what_was_missed(subscribed):
    c, t = subscribed
    first = drain(c.stream())
    t.pub("seen")
    c._service.sync()  # a shared log: the publish returned once the log held it; now it is applied here
    last_seen = drain(c._record.stream).events[-1][0]
    c._record.stream.close()
    for i in range(50):
        t.pub(i)
    resumed = drain(c.stream(last_event_id=last_seen))
    assert resumed.retry == 3000
    assert updates(resumed) == list(range(50))
    assert not any(is_init(m) for m in resumed.messages)
    # Ids are positions: the 50 publishes were 50 operations in a row, after the one last seen.
    assert resumed.ids == list(range(resumed.ids[0], resumed.ids[0] + 50)) and resumed.ids[0] > int(last_seen)
    assert first.ids[0] < int(last_seen)


def test_resume_at_the_head_sends_only_the_retry_field(subscribed):
    c, t = subscribed
    stream = c.stream()
    last = drain(stream).events[-1][0]
    assert stream.read(timeout=0) == b""
    again = c.stream(last_event_id=last)
    assert again.read(timeout=0) == b"retry: 3000\n"
    t.pub(1)
    c._service.sync()
    assert updates(drain(again)) == [1]


@pytest.mark.parametrize("bad_id", ["999999", "abc", "-1", "1" * 30, "１２", "\ud800", "7\x00"])
def test_unknown_or_malformed_ids_get_a_full_init_that_says_reset(subscribed, bad_id):
    c, _ = subscribed
    parsed = drain(c.stream(last_event_id=bad_id))
    assert len(parsed.messages) == 1 and is_reset(parsed.messages[0])


@pytest.mark.parametrize("no_id", [None, ""])  # "": what an `id:` line without a value sets
def test_a_stream_that_resumes_nothing_gets_an_init_without_reset(subscribed, no_id):
    c, t = subscribed
    t.pub("before")
    parsed = drain(c.stream(last_event_id=no_id))
    assert len(parsed.messages) == 1 and is_init(parsed.messages[0]) and not is_reset(parsed.messages[0])


def test_too_old_id_gets_a_full_init_with_current_state():
    service = SSEPubSubService(replay_size=5, client_timeout=None)
    c = service.new_client()
    t = service.new_public_topic()
    c.sub(t)
    first = drain(c.stream())
    c._record.stream.close()
    for i in range(10):
        t.pub(i)
    parsed = drain(c.stream(last_event_id=first.events[-1][0]))
    assert parsed.messages == [
        {
            "sys": [
                {"type": "topics", "list": [{"id": t.id, "type": "public"}]},
                {"type": "subscribed", "list": [{"id": t.id}]},
                {"type": "reset"},
            ],
            "updates": None,
        }
    ]
    service.close()


def test_waiting_client_gets_what_was_published_while_away(subscribed):
    c, t = subscribed
    t.pub("before first connect")
    parsed = drain(c.stream(last_event_id="0"))
    assert len(parsed.ids) == 3 and parsed.ids == sorted(set(parsed.ids))
    assert parsed.messages == [
        {"sys": [{"type": "topics", "list": [{"id": t.id, "type": "public"}]}], "updates": None},
        {"sys": [{"type": "subscribed", "list": [{"id": t.id}]}], "updates": None},
        {"sys": None, "updates": [{"topic": t.id, "data": "before first connect"}]},
    ]


def test_takeover_ends_the_older_stream(subscribed):
    c, t = subscribed
    old = c.stream()
    drain(old)
    new = c.stream()
    t.pub("x")
    c._service.sync()
    assert old.read(timeout=1) is None and old.ended
    assert updates(drain(new)) == ["x"]
    assert c.status is Status.RECEIVING


def test_a_blocked_reader_is_woken_by_close_from_another_thread(subscribed):
    c, _ = subscribed
    stream = c.stream()
    drain(stream)
    result = []
    reader = threading.Thread(target=lambda: result.append(list(stream)))
    reader.start()
    stream.close()
    reader.join(5)
    assert not reader.is_alive() and result == [[]]
    c._service.sync()  # with a shared backend the detach is applied after close() returns
    assert c.status is Status.WAITING


def test_slow_consumer_overflow_catches_up_from_replay():
    service = SSEPubSubService(queue_size=10, replay_size=100, client_timeout=None)
    c = service.new_client()
    t = service.new_public_topic()
    c.sub(t)
    stream = c.stream()
    drain(stream)
    for i in range(60):
        t.pub(i)
    assert stream.queue.qsize() <= 11
    assert updates(drain(stream)) == list(range(60))
    service.close()


def test_slow_consumer_beyond_replay_gets_init_and_memory_stays_bounded():
    service = SSEPubSubService(queue_size=10, replay_size=20, client_timeout=None)
    c = service.new_client()
    t = service.new_public_topic()
    c.sub(t)
    stream = c.stream()
    drain(stream)
    for i in range(1000):
        t.pub(i)
        assert stream.queue.qsize() <= 11 and len(t._record.positions) <= 20 + 20 // 8  # trimmed in steps
    parsed = drain(stream)
    assert len(parsed.messages) == 1 and is_reset(parsed.messages[0])
    t.pub("live")
    assert updates(drain(stream)) == ["live"]
    service.close()


def test_heartbeats_are_sent_by_the_one_timer_while_idle():
    service = SSEPubSubService(heartbeat=0.05, client_timeout=None)
    c = service.new_client()
    stream = c.stream()
    stream.read(timeout=0)
    chunk = stream.read(timeout=5)
    assert chunk == b":\n"
    assert parse(chunk).comments == 1 and parse(chunk).events == []
    threads = [t for t in threading.enumerate() if t.name == "pubsubsse-timer"]
    assert len(threads) >= 1
    service.close()


def test_waiting_clients_expire_after_client_timeout():
    service = SSEPubSubService(client_timeout=0.2, heartbeat=1)
    removed = threading.Event()
    keeper = service.new_client()
    c = service.new_client()
    service.on_remove_client.listen(lambda x: removed.set() if x is c else None)
    stream = keeper.stream()  # starts the timer; a receiving client never expires
    assert removed.wait(5)
    assert service.get_client_by_id(c.id) is None
    assert service.get_client_by_id(keeper.id) is keeper
    stream.close()
    service.close()


def test_expiry_takes_exactly_the_clients_that_waited_long_enough(service):
    """The timer looks only at the front of the waiting list: its order must follow the waiting time."""
    import time

    timeout = 1000.0  # the real timer never expires anyone here; the test drives _tick itself
    service._attachments.client_timeout = timeout
    _first, second, attached, back = (service.new_client() for _ in range(4))
    streams = [attached.stream(), back.stream()]
    for stream in streams:
        stream.read(timeout=0)
    # Times 10 ms apart, so that float rounding of "now - waiting_since" cannot decide the outcome.
    moment = second._record.waiting_since + 0.01
    while time.monotonic() <= moment + 0.01:  # `back` starts waiting 10 ms after `moment` at least
        pass
    streams[1].close()  # `back` waited first of all, but starts waiting again now
    service.sync()  # with a shared backend, detaches and expiries are applied after they are proposed
    assert service.get_client_by_id(back.id).status is Status.WAITING
    service._attachments.tick(moment + timeout)
    service.sync()
    remaining = set(service.get_clients())
    assert remaining == {attached.id, back.id}, "the two that waited the full time, and only they, expire"
    service._attachments.tick(back._record.waiting_since + 0.01 + timeout)
    service.sync()
    assert set(service.get_clients()) == {attached.id}
    streams[0].close()


class TakesAll:
    """A direct writer whose socket takes everything (the DirectWriter protocol, HTTP/1.0 framing)."""

    def __init__(self) -> None:
        self.wire = bytearray()
        self.callbacks: list = []

    def frame(self, chunk: bytes) -> bytes:
        return chunk

    def send_nowait(self, data: bytes) -> int:
        self.wire += data
        return len(data)

    def call_soon(self, callback) -> None:
        self.callbacks.append(callback)

    def run_callbacks(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


def test_a_publish_to_waiting_streams_makes_nothing_per_stream_for_the_garbage_collector():
    """A container per stream per publish made the cyclic GC run full collections (25-30 ms with
    1,000 streams, every few seconds at 40 publishes/s), stalling every stream of the process."""
    service = SSEPubSubService(heartbeat=1e6, client_timeout=None)
    topic = service.new_public_topic()
    writer = TakesAll()
    streams = []
    for _ in range(300):
        client = service.new_client()
        client.sub(topic)
        stream = client.stream()
        stream.read(timeout=0)  # the init message, as the server sends it
        stream.write_directly(writer)
        stream.reader_waiting = True  # as the reader does before it waits
        streams.append(stream)
    topic.pub("warm-up")
    writer.run_callbacks()
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        topic.pub("once")
        topic.pub("twice")  # a second event before the flush: the pending text grows in place
        made = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert made < 30, f"{made} objects tracked by the GC for 300 streams"
    writer.run_callbacks()
    assert writer.wire.count(b'"data":"once"') == writer.wire.count(b'"data":"twice"') == 300
    for stream in streams:
        stream.close()
