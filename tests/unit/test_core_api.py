"""The API.md contract: names, ids, snapshots, errors, event managers, options."""

from __future__ import annotations

import gc
import logging
import re

import pytest

import pubsubsse
from pubsubsse import (
    Client,
    ClientNotFound,
    EventManager,
    Group,
    GroupNotFound,
    GroupTopic,
    NotSubscribed,
    PubSubError,
    SSEPubSubService,
    Status,
    Topic,
    TopicNotFound,
    TopicType,
    errors,
)

from ..sse import drain

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def test_top_level_names():
    for name in [
        "SSEPubSubService",
        "Client",
        "Topic",
        "Group",
        "GroupTopic",
        "Status",
        "TopicType",
        "EventManager",
        "PubSubError",
        "ClientNotFound",
        "TopicNotFound",
        "NotSubscribed",
    ]:
        assert hasattr(pubsubsse, name), name
    for name in ["PubSubError", "ClientNotFound", "TopicNotFound", "GroupNotFound", "NotSubscribed"]:
        assert getattr(errors, name) is getattr(pubsubsse, name)
        assert issubclass(getattr(errors, name), PubSubError)


def test_ids_carry_prefixes(service):
    c = service.new_client()
    g = service.new_group()
    ids = {
        "S": service.id,
        "C": c.id,
        "T": service.new_public_topic().id,
        "G": g.id,
        "E": service.on_new_client.listen(lambda c: None),
    }
    for prefix, value in ids.items():
        assert re.fullmatch(prefix + "-" + UUID, value), value
    assert re.fullmatch("T-" + UUID, c.new_private_topic().id)
    assert re.fullmatch("T-" + UUID, g.new_topic().id)


def test_enums():
    assert [s.value for s in Status] == ["waiting", "receiving"]
    assert TopicType.PUBLIC == "public" and TopicType.PRIVATE == "private" and TopicType.GROUP == "group"
    assert isinstance(TopicType.GROUP, str)


def test_scalar_attributes_are_read_only(service):
    c = service.new_client()
    t = service.new_public_topic()
    gt = GroupTopic(t, service.new_group())
    for obj, attr in [(service, "id"), (c, "id"), (c, "status"), (t, "id"), (t, "type"), (gt, "topic")]:
        with pytest.raises(AttributeError):
            setattr(obj, attr, "x")


def test_types(service):
    c = service.new_client()
    g = service.new_group()
    assert isinstance(c, Client) and isinstance(g, Group)
    assert c.status is Status.WAITING
    assert service.new_public_topic().type is TopicType.PUBLIC
    assert c.new_private_topic().type is TopicType.PRIVATE
    assert isinstance(g.new_topic(), Topic)


def test_snapshots_are_new_dicts_and_lookups(service):
    c = service.new_client()
    p = service.new_public_topic()
    g = service.new_group()
    g.add_client(c)
    gt = g.new_topic()
    pt = c.new_private_topic()
    c.sub(p)
    snap = service.get_clients()
    snap.clear()
    assert service.get_clients() == {c.id: c}
    assert service.get_client_by_id(c.id) is c and service.get_client_by_id("C-x") is None
    assert service.get_public_topics() == {p.id: p}
    assert service.get_public_topic_by_id(p.id) is p and service.get_public_topic_by_id(gt.id) is None
    assert service.get_groups() == {g.id: g} and service.get_group_by_id(g.id) is g
    assert c.get_public_topics() == {p.id: p} and c.get_public_topic_by_id(p.id) is p
    assert c.get_private_topics() == {pt.id: pt} and c.get_private_topic_by_id(pt.id) is pt
    assert c.get_private_topic_by_id(p.id) is None
    assert c.get_groups() == {g.id: g} and c.get_group_by_id(g.id) is g
    assert list(c.get_all_topics()) == [p.id, gt.id, pt.id]
    assert c.get_topic_by_id(gt.id) is gt and c.get_topic_by_id("T-nope") is None
    assert c.get_subscribed_topics() == {p.id: p}
    assert p.get_clients() == {c.id: c} and p.is_subscribed(c) and not gt.is_subscribed(c)
    assert g.get_topics() == {gt.id: gt} and g.get_topic_by_id(gt.id) is gt
    assert g.get_clients() == {c.id: c} and g.get_client_by_id(c.id) is c


def test_visibility_errors(service):
    a = service.new_client()
    b = service.new_client()
    pa = a.new_private_topic()
    g = service.new_group()
    gt = g.new_topic()
    for t in (pa, gt):
        with pytest.raises(TopicNotFound):
            b.sub(t)
        with pytest.raises(TopicNotFound):
            b.unsub(t)
        assert b.get_topic_by_id(t.id) is None
    p = service.new_public_topic()
    with pytest.raises(NotSubscribed):
        b.unsub(p)
    b.sub(p)
    b.sub(p)
    b.unsub(p)
    with pytest.raises(NotSubscribed):
        b.unsub(p)


def test_removed_objects_raise_or_are_ignored(service):
    c = service.new_client()
    g = service.new_group()
    t = service.new_public_topic()
    service.remove_client(c)
    service.remove_client(c)
    for call in (c.new_private_topic, lambda: c.sub(t), lambda: c.unsub(t), c.stream, lambda: g.add_client(c)):
        with pytest.raises(ClientNotFound):
            call()
    service.remove_group(g)
    service.remove_group(g)
    with pytest.raises(GroupNotFound):
        g.new_topic()
    with pytest.raises(GroupNotFound):
        g.add_client(service.new_client())
    g.remove_client(c)
    service.remove_public_topic(t)
    with pytest.raises(TopicNotFound):
        t.pub(1)


@pytest.mark.parametrize("bad", [object(), {1, 2}, float("nan"), float("inf"), {"k": b"bytes"}])
def test_pub_rejects_unencodable_data_before_sending(service, bad):
    c = service.new_client()
    t = service.new_public_topic()
    c.sub(t)
    stream = c.stream()
    drain(stream)
    fired = []
    t.on_pub.listen(fired.append)
    with pytest.raises((TypeError, ValueError)):
        t.pub(bad)
    assert drain(stream).events == [] and fired == []


def test_event_manager_listen_remove_emit():
    m: EventManager[int] = EventManager()
    got = []
    first = m.listen(lambda x: got.append(("a", x)))
    second = m.listen(lambda x: got.append(("b", x)))
    assert m.get_listeners() == [first, second]
    gc.collect()  # lambdas are held strongly
    m.emit(1)
    assert sorted(got) == [("a", 1), ("b", 1)]
    m.remove(first)
    m.remove(first)
    m.remove("E-unknown")
    got.clear()
    m.emit(2)
    assert got == [("b", 2)] and m.get_listeners() == [second]
    with pytest.raises(TypeError):
        m.listen(42)


def test_a_failing_listener_is_logged_and_does_not_stop_others(service, caplog):
    got = []
    service.on_new_client.listen(lambda c: 1 / 0)
    service.on_new_client.listen(got.append)
    with caplog.at_level(logging.ERROR, logger="pubsubsse.events"):
        c = service.new_client()
    assert got == [c]
    assert "ZeroDivisionError" in caplog.text


def test_listener_may_remove_itself_and_add_others_while_emitting():
    m: EventManager[int] = EventManager()
    got = []

    def once(x):
        m.remove(ident)
        m.listen(got.append)
        got.append(("once", x))

    ident = m.listen(once)
    m.emit(1)
    m.emit(2)
    assert got == [("once", 1), 2]


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"heartbeat": 0}, ValueError),
        ({"heartbeat": "15"}, TypeError),
        ({"retry": -1}, ValueError),
        ({"replay_size": 1.5}, TypeError),
        ({"queue_size": 0}, ValueError),
        ({"client_timeout": 0}, ValueError),
        ({"client_timeout": True}, TypeError),
    ],
)
def test_bad_options_raise_clear_errors(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        SSEPubSubService(**kwargs)


def test_event_managers_are_created_on_first_access_and_are_read_only(service):
    c = service.new_client()
    assert getattr(c, "_on_sub_to_topic", None) is None  # nobody listened: no manager was made
    manager = c.on_sub_to_topic
    assert isinstance(manager, EventManager) and c.on_sub_to_topic is manager
    with pytest.raises(AttributeError):
        c.on_sub_to_topic = EventManager()
    with pytest.raises(AttributeError):
        service.on_new_client = EventManager()


def test_a_listener_may_listen_to_a_new_topic_within_the_same_change(service):
    service.new_client()
    seen = []
    service.on_new_public_topic.listen(lambda t: t.on_new_client.listen(seen.append))
    service.new_public_topic()
    assert len(seen) == 1  # the topic's own event fired after the service's, in the same change
