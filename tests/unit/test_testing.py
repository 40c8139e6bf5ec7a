"""pubsubsse.testing: reading a stream in a test returns in bounded time, with what came."""

from __future__ import annotations

import time

import pytest
from flask import Flask

from pubsubsse import PubSubSSE
from pubsubsse.testing import read_stream

pytest_plugins = ["pubsubsse.testing.pytest_plugin"]


def test_a_client_in_process_gets_its_init_and_updates(pubsub_service, pubsub_client):
    topic = pubsub_service.public_topic("orders")
    pubsub_client.sub(topic)
    topic.pub({"id": 7})
    received = read_stream(pubsub_client, messages=3)  # from the start: "topics", "subscribed", the update
    assert received.updates("T-orders") == [{"id": 7}] and received.updates("T-other") == []
    assert received.sys("topics") and received.sys("subscribed") and received.retry == 3000 and not received.reset
    assert pubsub_client.status.value == "waiting"  # the stream was closed: detached


def test_too_few_messages_fail_in_the_time_given_and_say_what_came(pubsub_client):
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"expected 3 message\(s\) within 0.3 s, got 1: \[\{'sys'"):
        read_stream(pubsub_client, messages=3, seconds=0.3, last_event_id="")  # a fresh stream: its init
    assert time.monotonic() - started < 2


def test_without_a_count_it_reads_for_the_time_given(pubsub_service, pubsub_client):
    pubsub_service.publish("news", "x")  # nobody subscribed: nothing for this client
    started = time.monotonic()
    received = read_stream(pubsub_client, seconds=0.3, last_event_id="")
    assert 0.3 <= time.monotonic() - started < 2 and len(received.messages) == 1


def test_a_resume_after_the_last_id_and_a_reset_for_an_unknown_one(pubsub_service, pubsub_client):
    topic = pubsub_service.public_topic("orders")
    pubsub_client.sub(topic)
    first = read_stream(pubsub_client, messages=1, last_event_id="")
    topic.pub(1)
    again = read_stream(pubsub_client, messages=1, last_event_id=first.last_event_id)
    assert again.updates() == [1]
    assert read_stream(pubsub_client, messages=1, last_event_id="999999999").reset


def test_a_flask_test_client_never_hangs_on_the_endless_response():
    pubsub = PubSubSSE(client_timeout=None, heartbeat=60)  # a heartbeat far away: the body blocks
    app = Flask(__name__)
    pubsub.init_app(app)
    with app.app_context():
        service = pubsub.service
        client = service.new_client()
        client.sub(service.public_topic("orders"))
        service.publish("orders", "shipped")
        started = time.monotonic()
        path = f"/sse/event?client_id={client.id}"
        received = read_stream(app.test_client(), path + "&last_event_id=0", messages=3)
        assert received.updates() == ["shipped"]
        idle = read_stream(
            app.test_client(), f"/sse/event?client_id={client.id}", seconds=0.5, last_event_id=received.last_event_id
        )
        assert idle.messages == [] and time.monotonic() - started < 5
        with pytest.raises(AssertionError, match="answered 400"):
            read_stream(app.test_client(), "/sse/event?client_id=nobody", messages=1)
        service.shutdown()


def test_the_parser_takes_events_split_anywhere():
    from pubsubsse.testing import Received, _Parser

    received = Received()
    parser = _Parser(received)
    raw = b'retry: 3000\nid: 4\ndata: {"sys":null,"updates":[{"topic":"T-a","data":1}]}\n\n'
    raw += b':\n\nevent: c0\nid: 5\ndata: "x"\n\n'
    for i in range(len(raw)):
        parser.feed(raw[i : i + 1])
    assert received.ids == ["4", "5"] and received.updates() == [1] and received.comments == 1
    assert received.messages[1].event == "c0" and received.messages[1].data == "x" and received.retry == 3000


def test_updates_counts_published_values_whatever_system_messages_come_first(pubsub_service):
    orders = pubsub_service.public_topic("orders")
    client = pubsub_service.new_client()  # made after the topic: no "topics" message of its own
    client.sub(orders)
    orders.pub(1)
    orders.pub(2)
    assert read_stream(client, updates=2).updates() == [1, 2]
    with pytest.raises(AssertionError, match=r"expected 3 published value\(s\) within 0.2 s, got 2"):
        read_stream(client, updates=3, seconds=0.2)
