"""The traps a new user met in the first hour, each with the test that shows it is gone."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from flask import Flask

from pubsubsse import BackendUnavailable, PubSubSSE, SSEPubSubService, TopicNotFound
from pubsubsse.backends import RedisBackend

from .sse import drain
from .http_helpers import wait_for
from .test_django import run_django


def updates(stream, topic_id: str) -> list:
    """The data of every update of ``topic_id`` that ``stream`` has ready."""
    return [u["data"] for m in drain(stream).messages for u in m.get("updates") or [] if u["topic"] == topic_id]


# 1. An id where a name goes means that object -------------------------------------------------


def test_names_and_ids_are_both_accepted_where_a_name_goes(service):
    orders = service.public_topic("orders")
    assert service.public_topic("T-orders") is orders
    room = service.group("room")
    assert service.group("G-room") is room
    assert room.topic("T-room/chat") is room.topic("chat")
    assert set(service.get_public_topics()) == {"T-orders"}  # no T-T-orders
    with pytest.raises(ValueError, match="invalid name"):
        service.public_topic("T-")


def test_the_flask_extension_publishes_to_a_topic_given_by_its_id():
    pubsub = PubSubSSE(client_timeout=None)
    app = Flask(__name__)
    pubsub.init_app(app)
    with app.app_context():
        service = pubsub.service
        client = service.new_client()
        client.sub(pubsub.public_topic("orders"))
        stream = client.stream()
        pubsub.publish("T-orders", {"n": 1})  # the id, as on the wire and in the browser
        pubsub.publish("orders", {"n": 2})
        private = client.new_private_topic()
        pubsub.publish(private.id, {"n": 3})  # any topic's id
        with pytest.raises(TopicNotFound):
            pubsub.publish("T-nowhere/chat", 1)
        assert set(service.get_public_topics()) == {"T-orders"}
        assert updates(stream, "T-orders") == [{"n": 1}, {"n": 2}]
        stream.close()


def test_django_publish_takes_an_id_too():
    result = run_django(
        """
        from pubsubsse.django import get_service, publish, public_topic
        client = get_service().new_client()
        client.sub(public_topic("orders"))
        stream = client.stream()
        stream.read(timeout=0)
        publish("T-orders", {"n": 1})
        print(sorted(get_service().get_public_topics()), stream.read(timeout=0))
        """,
        "",
    )
    assert result.returncode == 0, result.stderr
    assert "['T-orders']" in result.stdout
    assert '"data":{"n":1}' in result.stdout


# 6. Declaring a named topic while the shared log is down ---------------------------------------


@pytest.mark.parametrize("known", [False, True], ids=["new-topic", "topic-in-the-snapshot"])
def test_named_topics_are_declared_while_redis_is_down_and_work_once_it_is_back(known):
    """An app declaring its topics at startup boots while Redis is down; the handles it got are the real ones."""
    from .redis_server import RedisServer

    redis = RedisServer(persistent=True)
    key = f"test:{uuid.uuid4()}"
    services = []
    try:
        if known:  # another process made them and stored a snapshot
            other = SSEPubSubService(backend=RedisBackend(redis.url, key=key, snapshot_every=2), client_timeout=None)
            services.append(other)
            other.group("room").topic("chat")
            other.public_topic("orders")
            for _ in range(3):
                other.sync()
            wait_for(lambda: other.backend.load_snapshot() is not None, what="a snapshot")
        redis.stop()
        svc = SSEPubSubService(backend=RedisBackend(redis.url, key=key, timeout=0.5), client_timeout=None)
        services.append(svc)
        started = time.monotonic()
        orders = svc.public_topic("orders")
        room = svc.group("room")
        chat = room.topic("chat")
        assert time.monotonic() - started < 2  # no waiting on the log
        assert (orders.id, room.id, chat.id) == ("T-orders", "G-room", "T-room/chat")
        with pytest.raises(BackendUnavailable):
            orders.pub(1)
        published = []
        orders.on_pub.listen(published.append)
        redis.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                svc.sync()
                break
            except BackendUnavailable:
                assert time.monotonic() < deadline, "the log never became ready"
                time.sleep(0.1)
        assert svc.public_topic("orders") is orders and svc.group("room") is room and room.topic("chat") is chat
        assert svc.get_public_topic_by_id("T-orders") is orders
        client = svc.new_client()
        client.sub(orders)
        stream = client.stream()
        room.add_client(client)
        client.sub(chat)
        orders.pub({"n": 1})
        chat.pub({"n": 2})
        svc.sync()
        assert published == [{"n": 1}]
        assert orders.get_clients() == {client.id: client}
        assert updates(stream, "T-orders") == [{"n": 1}]
        stream.close()
        assert json.dumps(sorted(svc.get_public_topics())) == '["T-orders"]'
    finally:
        for s in services:
            s.shutdown()
        redis.close()
