"""Named topics and groups, the Publisher, and JSON of everyday types."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import logging
import threading
import uuid

import pytest
import redis as redis_py
from flask import Flask

from pubsubsse import BackendUnavailable, Publisher, SSEPubSubService, TopicType, create_blueprint
from pubsubsse.backends import RedisBackend
from pubsubsse.handles import NAME_RULE
from pubsubsse.publisher import MAX_BATCH

from ..conftest import Recorder
from ..sse import drain

BAD_NAMES = ["", "with space", "slash/inside", "é", "x" * 129, "new\nline", "T-ok?", 5, None]


def test_a_named_public_topic_is_one_topic_with_a_readable_id(service):
    rec = Recorder(service)
    client = service.new_client()
    rec.take()
    orders = service.public_topic("orders")
    assert orders.id == "T-orders" and orders.type is TopicType.PUBLIC
    assert orders is service.get_public_topic_by_id("T-orders")
    created = rec.take()
    assert created[(service, "on_new_public_topic", orders)] == 1
    assert created[(client, "on_new_topic", orders)] == 1
    assert service.public_topic("orders") is orders  # got, not made again: no events
    assert not rec.take()
    client.sub(orders)
    last = str(client._service._core.position)
    orders.pub({"n": 1})
    assert updates_since(client, last) == [{"n": 1}]
    assert "T-orders" in client.get_all_topics()


def test_named_groups_and_group_topics(service):
    room = service.group("room-42")
    assert room.id == "G-room-42" and service.group("room-42") is room
    chat = room.topic("chat")
    assert chat.id == "T-room-42/chat" and chat.type is TopicType.GROUP
    assert room.topic("chat") is chat and room.get_topic_by_id("T-room-42/chat") is chat
    other = service.group("room-43").topic("chat")
    assert other.id == "T-room-43/chat" and other is not chat
    member = service.new_client()
    room.add_client(member)
    assert set(member.get_all_topics()) >= {"T-room-42/chat"} and "T-room-43/chat" not in member.get_all_topics()
    service.remove_group(room)
    with pytest.raises(Exception, match="does not exist"):
        room.topic("chat")


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_raise_a_value_error_naming_the_rule(service, bad):
    for make in (service.public_topic, service.group, service.group("good").topic):
        with pytest.raises(ValueError, match="invalid name") as raised:
            make(bad)
        assert NAME_RULE in str(raised.value)
    assert set(service.get_public_topics()) == set() and set(service.get_groups()) == {"G-good"}


def test_random_id_topics_work_exactly_as_before(service):
    topic = service.new_public_topic()
    assert topic.id.startswith("T-") and len(topic.id) == 38
    group = service.new_group()
    assert group.id.startswith("G-") and group.new_topic().type is TopicType.GROUP


def test_two_processes_making_the_same_name_at_once_get_one_topic(redis_server):
    """Workers that each call public_topic("orders") at startup: one topic, created once, no error."""
    key = f"test:{uuid.uuid4()}"
    services = [
        SSEPubSubService(backend=RedisBackend(redis_server.url, key=key), client_timeout=None) for _ in range(4)
    ]
    try:
        created = []
        for svc in services:
            svc.on_new_public_topic.listen(created.append)
        barrier = threading.Barrier(len(services))
        topics: list = []

        def make(svc: SSEPubSubService) -> None:
            barrier.wait()
            topics.append(svc.public_topic("orders"))

        threads = [threading.Thread(target=make, args=(svc,)) for svc in services]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert [t.id for t in topics] == ["T-orders"] * 4
        assert len(created) == 1, "the creation's events fire once, in the process that made it"
        for svc in services:
            svc.sync()
            assert list(svc.get_public_topics()) == ["T-orders"]
    finally:
        for svc in services:
            svc.shutdown()


def test_names_over_http():
    app = Flask(__name__)
    service = SSEPubSubService(client_timeout=None)
    app.register_blueprint(create_blueprint(service, public_topic_creation=True, end_streams_on_sigterm=False))
    http = app.test_client()
    assert http.get("/add/topic/public/", query_string={"name": "orders"}).json == {
        "ok": "true",
        "topic_id": "T-orders",
    }
    assert http.post("/add/topic/public/", data={"name": "orders"}).json["topic_id"] == "T-orders"
    assert list(service.get_public_topics()) == ["T-orders"]
    for bad in ["with space", "a/b", "x" * 129, ""]:
        answer = http.get("/add/topic/public/", query_string={"name": bad})
        assert answer.status_code == 400 and NAME_RULE in answer.json["error"], bad
    client = http.get("/add/user").json["client_id"]
    assert http.get("/sub", query_string={"client_id": client, "topic": "T-orders"}).json == {"ok": "true"}
    assert http.get("/sub", query_string={"client_id": client, "topic": "T-missing"}).status_code == 400


# The Publisher ---------------------------------------------------------------------------------


@pytest.fixture
def shared(redis_server):
    key = f"test:{uuid.uuid4()}"
    service = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key), client_timeout=None)
    yield service, key
    service.shutdown()


def updates_since(client, last_event_id: str) -> list:
    """What the client was published after ``last_event_id``, read from a resumed stream."""
    client._service.sync()
    stream = client.stream(last_event_id=last_event_id)
    messages = drain(stream).messages
    stream.close()
    return [u["data"] for m in messages for u in m["updates"] or []]


def test_a_publisher_creates_named_topics_and_publishes_in_one_append(shared, redis_server):
    service, key = shared
    client = service.new_client()
    publisher = Publisher(redis_server.url, redis_key=key)
    try:
        publisher.publish("orders", {"n": 1})  # nobody made it: the publisher does
        service.sync()
        orders = service.get_public_topic_by_id("T-orders")
        assert orders is not None
        client.sub(orders)
        last = str(client._service._core.position)
        publisher.publish("orders", {"n": 2})
        publisher.publish("T-orders", {"n": 3})  # by id too
        private = client.new_private_topic()
        client.sub(private)
        publisher.publish(private.id, "only for one")
        service.sync()
        assert updates_since(client, last) == [{"n": 2}, {"n": 3}, "only for one"]
        for bad in ["with space", "x" * 129]:
            with pytest.raises(ValueError, match="invalid name"):
                publisher.publish(bad, 1)
        with pytest.raises(TypeError):
            publisher.publish("orders", object())
    finally:
        publisher.close()


def test_a_publisher_publishes_a_batch_in_order_in_one_append_or_nothing(shared, redis_server):
    service, key = shared
    client = service.new_client()
    orders = service.public_topic("orders")
    client.sub(orders)
    log = redis_py.Redis.from_url(redis_server.url)
    publisher = Publisher(redis_server.url, redis_key=key)
    try:
        service.sync()
        last, length = str(client._service._core.position), log.xlen(key)
        publisher.publish_many([("orders", i) for i in range(5)] + [("T-orders", "by id"), ("audit", "made")])
        assert log.xlen(key) == length + 7
        service.sync()
        assert updates_since(client, last) == [0, 1, 2, 3, 4, "by id"]
        assert service.get_public_topic_by_id("T-audit") is not None  # a name creates its topic
        # One bad message: nothing of the batch is sent.
        service.sync()  # the stream's detach is in the log (and the marker sync appends)
        length = log.xlen(key)
        with pytest.raises(TypeError):
            publisher.publish_many([("orders", 5), ("orders", object())])
        with pytest.raises(ValueError, match="invalid name"):
            publisher.publish_many([("orders", 5), ("no spaces", 6)])
        with pytest.raises(ValueError, match="at most 1000"):
            publisher.publish_many(("orders", i) for i in range(MAX_BATCH + 1))
        publisher.publish_many([])
        assert log.xlen(key) == length
    finally:
        publisher.close()
        log.close()


def test_a_publisher_refuses_a_log_that_no_process_started(redis_server):
    publisher = Publisher(redis_server.url, redis_key=f"test:{uuid.uuid4()}")
    try:
        with pytest.raises(BackendUnavailable, match="no process has started it") as raised:
            publisher.publish("orders", 1)
        assert not raised.value.outcome_unknown
    finally:
        publisher.close()


def test_a_publisher_needs_a_shared_backend():
    with pytest.raises(ValueError, match="either redis_url or backend"):
        Publisher()


def test_publishing_where_nobody_can_receive_it_warns_once(caplog):
    lonely = SSEPubSubService(client_timeout=None)
    topic = lonely.public_topic("orders")
    with caplog.at_level(logging.WARNING, logger="pubsubsse.service"):
        topic.pub(1)
        topic.pub(2)
    assert sum("no browser can receive it" in r.message for r in caplog.records) == 1
    caplog.clear()
    served = SSEPubSubService(client_timeout=None)
    create_blueprint(served, end_streams_on_sigterm=False)
    with caplog.at_level(logging.WARNING, logger="pubsubsse.service"):
        served.public_topic("orders").pub(1)
    assert not caplog.records


# JSON of everyday types ------------------------------------------------------------------------


@dataclasses.dataclass
class Order:
    id: int
    total: decimal.Decimal
    placed: datetime.datetime


EVERYDAY = {
    "when": datetime.datetime(2026, 12, 2, 15, 30, 5),
    "aware": datetime.datetime(2026, 12, 2, 16, 30, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
    "day": datetime.date(2026, 12, 2),
    "price": decimal.Decimal("19.90"),
    "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "order": Order(7, decimal.Decimal("1.5"), datetime.datetime(2026, 1, 1)),
}


def test_everyday_types_are_published_as_flasks_json_does(service):
    client = service.new_client()
    topic = service.new_public_topic()
    client.sub(topic)
    start = str(client._service._core.position)
    topic.pub(EVERYDAY)
    assert updates_since(client, start) == [json.loads(Flask(__name__).json.dumps(EVERYDAY))]


def test_json_dumps_chooses_the_encoding_and_must_keep_to_one_line():
    service = SSEPubSubService(client_timeout=None, json_dumps=lambda v: json.dumps(v, default=str))
    client = service.new_client()
    topic = service.new_public_topic()
    client.sub(topic)
    start = str(client._service._core.position)
    topic.pub({"when": datetime.date(2026, 12, 2)})
    assert updates_since(client, start) == [{"when": "2026-12-02"}]
    pretty = SSEPubSubService(client_timeout=None, json_dumps=lambda v: json.dumps(v, indent=2))
    with pytest.raises(ValueError, match="one line"):
        pretty.new_public_topic().pub({"a": 1})
    with pytest.raises(TypeError, match="json_dumps"):
        SSEPubSubService(json_dumps="not callable")
