"""The Go original's bugs, each shown absent."""

from __future__ import annotations

import threading
import time
import traceback

import pytest

from pubsubsse import PubSubError, SSEPubSubService, TopicNotFound

from ..sse import drain
from ..stress_workload import check_invariants


def run_threads(*targets, join=20):
    errors = []

    def wrap(fn):
        def inner():
            try:
                fn()
            except Exception:
                errors.append(traceback.format_exc())

        return inner

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join)
    assert not any(t.is_alive() for t in threads), "deadlock: threads still running"
    assert errors == [], errors[0]


@pytest.mark.timeout(60)
def test_publishing_while_clients_disconnect_does_not_crash(service):
    topic = service.new_public_topic()
    stop = time.monotonic() + 2

    def publisher():
        n = 0
        while time.monotonic() < stop:
            topic.pub(n)
            n += 1

    def churner():
        while time.monotonic() < stop:
            c = service.new_client()
            c.sub(topic)
            stream = c.stream()
            stream.read(timeout=0)
            stream.read(timeout=0.001)
            stream.close()
            service.remove_client(c)

    def remover():
        while time.monotonic() < stop:
            c = service.new_client()
            c.sub(topic)
            s = c.stream()
            service.remove_client(c)
            list(s)

    run_threads(publisher, publisher, churner, churner, remover)
    assert service.get_clients() == {}


@pytest.mark.timeout(60)
def test_concurrent_remove_client_and_topic_listing_cannot_deadlock(service):
    topics = [service.new_public_topic() for _ in range(5)]
    group = service.new_group()
    clients = [service.new_client() for _ in range(400)]
    for c in clients:
        group.add_client(c)
        for t in topics:
            c.sub(t)
    group.new_topic()

    def remove():
        for c in clients:
            service.remove_client(c)

    def listing():
        for _ in range(300):
            for c in list(service.get_clients().values())[:20]:
                c.get_all_topics()
                c.get_subscribed_topics()
            service.get_public_topics()
            for t in topics:
                t.get_clients()
            group.get_clients()
            group.get_topics()

    def listener_calls_back():
        service.on_remove_client.listen(lambda c: (service.get_public_topics(), c.get_all_topics()))

    run_threads(listener_calls_back, remove, listing, listing)
    assert service.get_clients() == {}
    assert all(t.get_clients() == {} for t in topics)


def test_a_removed_client_leaves_its_groups(service):
    c = service.new_client()
    groups = [service.new_group() for _ in range(3)]
    for g in groups:
        g.add_client(c)
        c.sub(g.new_topic())
    service.remove_client(c)
    for g in groups:
        assert g.get_clients() == {} and g.get_client_by_id(c.id) is None
        assert all(t.get_clients() == {} for t in g.get_topics().values())


def test_a_private_topic_is_never_subscribable_or_visible_to_another_client(service):
    owner = service.new_client()
    other = service.new_client()
    group = service.new_group()
    group.add_client(owner)
    group.add_client(other)
    private = owner.new_private_topic()
    stream = other.stream()
    with pytest.raises(TopicNotFound):
        other.sub(private)
    with pytest.raises(TopicNotFound):
        other.unsub(private)
    assert other.get_topic_by_id(private.id) is None
    assert private.id not in other.get_all_topics()
    assert other.get_private_topic_by_id(private.id) is None
    other.remove_private_topic(private)  # not its own: ignored, the owner keeps it
    assert owner.get_private_topic_by_id(private.id) is private
    owner.sub(private)
    private.pub("secret")
    owner.new_private_topic()
    assert private.id not in str(drain(stream).messages)
    assert private.get_clients() == {owner.id: owner}


@pytest.mark.timeout(60)
def test_a_slow_client_does_not_delay_publishing_to_others():
    service = SSEPubSubService(queue_size=100, replay_size=100, client_timeout=None)
    topic = service.new_public_topic()
    slow, fast = service.new_client(), service.new_client()
    slow.sub(topic)
    fast.sub(topic)
    slow_stream = slow.stream()
    slow_stream.read(timeout=0)
    socket_unblocked = threading.Event()  # the slow reader is stuck "in a write" until the end
    fast_stream = fast.stream()
    fast_stream.read(timeout=0)
    received = []
    progress = threading.Condition()

    def slow_reader():
        socket_unblocked.wait(30)
        drain(slow_stream)

    def fast_reader():
        while len(received) < 5000:
            chunk = fast_stream.read(timeout=10)
            assert chunk
            with progress:
                received.extend(m["updates"][0]["data"] for m in drain_chunk(chunk))
                progress.notify_all()

    slow_thread = threading.Thread(target=slow_reader, daemon=True)
    slow_thread.start()
    reader = threading.Thread(target=fast_reader, daemon=True)
    reader.start()
    for batch in range(100):
        for i in range(batch * 50, batch * 50 + 50):
            topic.pub(i)
        with progress:
            assert progress.wait_for(lambda n=batch: len(received) >= n * 50 + 50, timeout=10)
    reader.join(30)
    assert received == list(range(5000))
    assert slow_thread.is_alive(), "the slow reader was still blocked while everything was published"
    assert slow_stream.queue.qsize() <= 101 and len(topic._record.positions) <= 100 + 100 // 8  # trimmed in steps
    socket_unblocked.set()
    slow_thread.join(10)
    service.close()


def drain_chunk(chunk):
    from ..sse import parse

    return [m for m in parse(chunk).messages if m["updates"]]


def test_invariant_checker_detects_corruption(service):
    c = service.new_client()
    t = service.new_public_topic()
    c.sub(t)
    assert check_invariants(service, {"clients": set(), "topics": set(), "groups": set()}) == []
    with service._lock:
        del service._core.clients[c.id]  # a dangling subscriber, as a buggy removal would leave
    problems = check_invariants(service, {"clients": {c.id}, "topics": set(), "groups": set()})
    assert any("unregistered subscriber" in p for p in problems)


def test_errors_raised_in_races_are_library_errors(service):
    c = service.new_client()
    t = service.new_public_topic()
    service.remove_public_topic(t)
    with pytest.raises(PubSubError):
        c.sub(t)
