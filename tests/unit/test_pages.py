"""Render, then stream: the page's stream starts at the position its data was read at."""

from __future__ import annotations

import pytest

from pubsubsse import SSEPubSubService, TopicNotFound
from pubsubsse.pages import page_stream

from ..sse import drain, is_init, is_reset


def updates(parsed):
    return [m["updates"][0]["data"] for m in parsed.messages if m["updates"]]


def test_what_is_published_after_the_subscription_reaches_a_stream_that_starts_later(service):
    topic = service.public_topic("orders")
    topic.pub("before: in the rendered data")
    live = page_stream(service, ["orders"])
    for n in range(3):  # between the query and the moment the page's script starts the stream
        topic.pub(n)
    service.sync()
    parsed = drain(live.client.stream(last_event_id=live.last_event_id))
    assert updates(parsed) == [0, 1, 2]
    assert not any(is_init(m) for m in parsed.messages)
    assert [int(i) for i in parsed.ids] == sorted(int(i) for i in parsed.ids)
    assert all(int(i) > int(live.last_event_id) for i in parsed.ids)  # ids are positions: later ones
    assert live.as_dict() == {"client_id": live.client.id, "last_event_id": live.last_event_id, "topics": ["T-orders"]}


def test_without_the_position_the_stream_starts_with_the_state_and_misses_them(service):
    """The gap the helper closes: a plain first connection misses what came before it."""
    topic = service.public_topic("orders")
    live = page_stream(service, [topic])
    topic.pub("between")
    service.sync()
    parsed = drain(live.client.stream())
    assert updates(parsed) == [] and is_init(parsed.messages[0]) and not is_reset(parsed.messages[0])


def test_a_stream_that_starts_after_the_histories_gets_a_reset():
    service = SSEPubSubService(replay_size=2, client_timeout=None)
    client = service.new_client()
    live = page_stream(service, ["orders", "T-news"], client=client)
    assert live.client is client and live.client_id == client.id
    assert set(client.get_subscribed_topics()) == {"T-orders", "T-news"}
    for n in range(5):
        service.publish("orders", n)
    parsed = drain(client.stream(last_event_id=live.last_event_id))
    assert len(parsed.messages) == 1 and is_reset(parsed.messages[0])
    service.close()


def test_the_id_of_a_group_topic_that_does_not_exist_is_refused(service):
    with pytest.raises(TopicNotFound):
        page_stream(service, ["T-nowhere/chat"])


def test_the_stream_url_starts_after_the_position_with_the_client_or_a_ticket(service):
    from pubsubsse import StreamTickets

    live = page_stream(service, ["orders"])
    assert live.stream_url() == f"/sse/event?client_id={live.client.id}&last_event_id={live.last_event_id}"
    tickets = StreamTickets("secret")
    url = live.stream_url("/live/", tickets)
    ticket = url.split("ticket=")[1].split("&")[0]
    assert url.startswith("/live/event?ticket=") and tickets.client_id(ticket) == live.client.id
