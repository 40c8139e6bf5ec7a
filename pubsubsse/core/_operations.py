"""The operations: one function per kind of change, and the table :func:`apply` dispatches on.

An operation takes ids, not objects (``apply(core, "sub", (client_id, topic_id))``),
so that a change can be described as data, written to a shared log and applied
in the same order by every process, with the same result everywhere.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Callable

from pubsubsse.core import _history, _presence
from pubsubsse.core._engine import Core, Effects
from pubsubsse.core._messages import id_list_item, topics_item
from pubsubsse.core._records import (
    AttachPlan,
    Change,
    ClientRecord,
    GroupRecord,
    Status,
    TopicRecord,
    TopicType,
    short_id,
)
from pubsubsse.errors import LimitReached, NotSubscribed, PubSubError, TopicClosed, TopicNotFound

__all__ = ["OPERATIONS", "apply"]

log = logging.getLogger(__name__)

#: Every operation :func:`apply` knows, with the types of its arguments (checked before a
#: change is applied, so that an entry of a shared log with the wrong shape changes nothing).
OPERATIONS: dict[str, tuple[type | tuple[type, ...], ...]] = {
    "new_client": (str, (str, type(None))),
    "remove_client": (str,),
    "expire_client": (str, int),
    "new_public_topic": (str,),
    "remove_public_topic": (str,),
    "new_private_topic": (str, str),
    "remove_private_topic": (str, str),
    "new_group": (str,),
    "remove_group": (str,),
    "new_group_topic": (str, str),
    "remove_group_topic": (str, str),
    "add_group_client": (str, str),
    "remove_group_client": (str, str),
    "sub": (str, str),
    "unsub": (str, str),
    "pub": (str, bytes),
    "attach": (str, str, (str, type(None))),
    "detach": (str, str),
    "noop": (),
    "ensure_public_topic": (str,),
    "ensure_group": (str,),
    "ensure_group_topic": (str, str),
    "pub_named": (str, bytes),
    "set_presence": (str, bool),
    "presence_flush": (str,),
    "sub_start": (str, str),
    "set_history": (str, int, (int, float)),
    "trim_history": (str, int),
    "close_topic": (str,),
    "remove_closed_topic": (str,),
}


def _keep(core: Core, topic: TopicRecord, position: int, body: bytes) -> None:
    """Add a message of ``topic`` to its history, and offer it to the streams held here."""
    topic.keep(position, body, topic.size(core.replay_size))
    if topic.marks is not None:
        _history.note_time(topic, position, core.now())
    for stream in topic.local.values():
        stream.offer(position, body)


# One function per kind of change -----------------------------------------------------------


def noop(core: Core, fx: Effects) -> None:
    """Change nothing (a marker in a shared log)."""


def new_client(core: Core, fx: Effects, client_id: str, user: str | None) -> ClientRecord:
    if len(core.clients) >= core.max_clients:
        log.warning("max_clients (%d) reached; refusing a new client", core.max_clients)
        raise LimitReached(f"max_clients: {core.max_clients} clients exist")
    if client_id in core.clients:
        raise PubSubError(f"client {short_id(client_id)} exists already")
    client = core.new_client_record(client_id, user)
    core.clients[client_id] = client
    core.waiting[client_id] = client
    fx.add(core.owner, "on_new_client", client)
    for topic in core.public.values():
        fx.add(topic, "on_new_client", client)
    log.debug("client %s created", short_id(client_id))
    return client


def remove_client(core: Core, fx: Effects, client_id: str) -> bool:
    """Return whether the client was there to remove (a removal made elsewhere may have come first)."""
    client = core.clients.pop(client_id, None)
    if client is None:
        return False
    core.waiting.pop(client_id, None)
    core.set_token(client, None)
    client.removed = True
    unsubscribed = list(client.subs.values())
    for topic in unsubscribed:
        core.unsubscribe(fx, client, topic)
    for topic in itertools.chain(core.public.values(), client.private.values()):
        core.lose_topic(fx, client, topic)
    for group in list(client.groups.values()):
        core.leave_group(fx, group, client, {})
    for topic in client.private.values():
        del core.topics[topic.id]
        topic.removed = True
    client.private.clear()
    final = core.sys_body([topics_item(()), id_list_item("unsubscribed", unsubscribed)])
    core.tell(client, final, tuple((topic, False) for topic in unsubscribed))
    if client.stream is not None:
        client.stream.end(superseded=False)
    fx.add(core.owner, "on_remove_client", client)
    log.debug("client %s removed", short_id(client_id))
    return True


def expire_client(core: Core, fx: Effects, client_id: str, detaches: int) -> None:
    # Applied only if the client has not attached (nor detached again) since the proposal.
    client = core.clients.get(client_id)
    if client is not None and client.status is Status.WAITING and client.detaches == detaches:
        log.info("client %s expired after %.0f s without a stream", short_id(client_id), core.client_timeout or 0)
        remove_client(core, fx, client_id)


def new_public_topic(core: Core, fx: Effects, topic_id: str) -> TopicRecord:
    if topic_id in core.topics:
        raise PubSubError(f"topic {topic_id} exists already")
    topic = core.add_topic(core.made_topic(TopicRecord(topic_id, TopicType.PUBLIC)))
    core.public[topic_id] = topic
    fx.add(core.owner, "on_new_public_topic", topic)
    shared_body: bytes | None = None
    for client in core.clients.values():
        core.gain_topic(fx, client, topic)
        if client.groups or client.private:
            core.send_topics(client)
        else:
            if shared_body is None:
                shared_body = core.sys_body([topics_item(core.public.values())])
            core.tell(client, shared_body)
    return topic


def ensure_public_topic(core: Core, fx: Effects, topic_id: str) -> TopicRecord:
    """Return the public topic with this id, creating it (with its events) if absent."""
    existing = core.topics.get(topic_id)
    if existing is None:
        return new_public_topic(core, fx, topic_id)
    if existing.type is not TopicType.PUBLIC:
        raise PubSubError(f"{topic_id} is the id of a {existing.type.value} topic")
    return existing


def remove_public_topic(core: Core, fx: Effects, topic_id: str) -> None:
    topic = core.public.pop(topic_id, None)
    if topic is None:
        return
    affected: dict[ClientRecord, list[TopicRecord]] = {}
    core.drop_topic(fx, topic, affected)
    core.notify(affected)
    fx.add(core.owner, "on_remove_public_topic", topic)


def new_private_topic(core: Core, fx: Effects, client_id: str, topic_id: str) -> TopicRecord:
    client = core.require_client(client_id)
    if len(client.private) >= core.max_private_topics:
        log.warning("max_private_topics (%d) reached by client %s", core.max_private_topics, short_id(client_id))
        raise LimitReached(f"max_private_topics: the client has {core.max_private_topics} private topics")
    if topic_id in core.topics:
        raise PubSubError(f"topic {topic_id} exists already")
    topic = core.add_topic(core.made(TopicRecord(topic_id, TopicType.PRIVATE, owner=client)))
    client.private[topic_id] = topic
    core.gain_topic(fx, client, topic)
    core.send_topics(client)
    return topic


def remove_private_topic(core: Core, fx: Effects, client_id: str, topic_id: str) -> bool:
    """Return whether the topic was there to remove."""
    client = core.clients.get(client_id)
    topic = None if client is None else client.private.pop(topic_id, None)
    if client is None or topic is None:
        return False
    affected: dict[ClientRecord, list[TopicRecord]] = {}
    core.drop_topic(fx, topic, affected)
    core.notify(affected)
    return True


def new_group(core: Core, fx: Effects, group_id: str) -> GroupRecord:
    if len(core.groups) >= core.max_groups:
        log.warning("max_groups (%d) reached; refusing a new group", core.max_groups)
        raise LimitReached(f"max_groups: {core.max_groups} groups exist")
    if group_id in core.groups:
        raise PubSubError(f"group {group_id} exists already")
    group = core.made_group(GroupRecord(group_id))
    core.groups[group_id] = group
    fx.add(core.owner, "on_new_group", group)
    return group


def ensure_group(core: Core, fx: Effects, group_id: str) -> GroupRecord:
    """Return the group with this id, creating it (with its event) if absent."""
    existing = core.groups.get(group_id)
    return existing if existing is not None else new_group(core, fx, group_id)


def remove_group(core: Core, fx: Effects, group_id: str) -> None:
    group = core.groups.pop(group_id, None)
    if group is None:
        return
    affected: dict[ClientRecord, list[TopicRecord]] = {}
    for topic in list(group.topics.values()):
        del group.topics[topic.id]
        core.drop_topic(fx, topic, affected)
        fx.add(group, "on_remove_group_topic", topic)
    for client in list(group.members.values()):
        core.leave_group(fx, group, client, affected)
    group.removed = True
    core.notify(affected)
    fx.add(core.owner, "on_remove_group", group)


def new_group_topic(core: Core, fx: Effects, group_id: str, topic_id: str) -> TopicRecord:
    group = core.require_group(group_id)
    if topic_id in core.topics:
        raise PubSubError(f"topic {topic_id} exists already")
    topic = core.add_topic(core.made_topic(TopicRecord(topic_id, TopicType.GROUP, group=group)))
    group.topics[topic_id] = topic
    fx.add(group, "on_new_group_topic", topic)
    for client in group.members.values():
        core.gain_topic(fx, client, topic)
        core.send_topics(client)
    return topic


def ensure_group_topic(core: Core, fx: Effects, group_id: str, topic_id: str) -> TopicRecord:
    """Return the group's topic with this id, creating it (with its events) if absent."""
    group = core.require_group(group_id)
    existing = core.topics.get(topic_id)
    if existing is None:
        return new_group_topic(core, fx, group_id, topic_id)
    if existing.group is not group:
        raise PubSubError(f"{topic_id} is the id of a topic outside group {group_id}")
    return existing


def remove_group_topic(core: Core, fx: Effects, group_id: str, topic_id: str) -> None:
    group = core.groups.get(group_id)
    topic = None if group is None else group.topics.pop(topic_id, None)
    if group is None or topic is None:
        return
    affected: dict[ClientRecord, list[TopicRecord]] = {}
    core.drop_topic(fx, topic, affected)
    core.notify(affected)
    fx.add(group, "on_remove_group_topic", topic)


def add_group_client(core: Core, fx: Effects, group_id: str, client_id: str) -> None:
    group = core.require_group(group_id)
    client = core.require_client(client_id)
    if client_id in group.members:
        return
    group.members[client_id] = client
    client.groups[group_id] = group
    fx.add(group, "on_new_client", client)
    fx.add(client, "on_new_group", group)
    for topic in group.topics.values():
        core.gain_topic(fx, client, topic)
    core.send_topics(client)


def remove_group_client(core: Core, fx: Effects, group_id: str, client_id: str) -> None:
    group = core.groups.get(group_id)
    client = core.clients.get(client_id)
    if group is None or client is None or client_id not in group.members:
        return
    affected: dict[ClientRecord, list[TopicRecord]] = {}
    core.leave_group(fx, group, client, affected)
    core.notify(affected)


def sub(core: Core, fx: Effects, client_id: str, topic_id: str, from_start: bool = False) -> None:
    client = core.require_client(client_id)
    topic = core.find_visible(client, topic_id)
    if topic is None:
        raise TopicNotFound(f"topic {topic_id} does not exist or is not visible to this client")
    changes: tuple[Change, ...] = ()
    if topic_id not in client.subs:
        core.subscribe(fx, client, topic)
        changes = topic.change(True)
    items = [id_list_item("subscribed", (topic,)), *_presence.full_items((topic,))]
    if from_start:  # the values kept so far, in this message: at its position, never twice
        upto, size = core.position, topic.size(core.replay_size)
        # Built only where the client's stream is: every other process keeps the reference alone.
        sent = _history.start_body(topic, size, items, upto, topic_id) if client.stream is not None else None
        core.tell(client, _history.reference(topic_id, upto, items), changes, sent)
    else:
        core.tell(client, core.sys_body(items), changes)


def sub_start(core: Core, fx: Effects, client_id: str, topic_id: str) -> None:
    """Subscribe, with every value the topic keeps in the message that says so (``since="start"``)."""
    sub(core, fx, client_id, topic_id, True)


def unsub(core: Core, fx: Effects, client_id: str, topic_id: str) -> None:
    client = core.require_client(client_id)
    topic = core.find_visible(client, topic_id)
    if topic is None:
        raise TopicNotFound(f"topic {topic_id} does not exist or is not visible to this client")
    if topic_id not in client.subs:
        raise NotSubscribed(f"the client is not subscribed to topic {topic_id}")
    core.unsubscribe(fx, client, topic)
    core.tell(client, core.sys_body([id_list_item("unsubscribed", (topic,))]), topic.change(False))


def pub(core: Core, fx: Effects, topic_id: str, body: bytes) -> None:
    topic = core.topics.get(topic_id)
    if topic is None:
        raise TopicNotFound(f"topic {topic_id} does not exist (removed or never created)")
    if topic.closed:
        raise TopicClosed(f"topic {topic_id} is closed: it takes no more messages")
    # Only the streams held here: a subscriber whose stream is elsewhere costs this process nothing.
    _keep(core, topic, core.next_position(), body)
    core.counters.published += 1
    core.counters.delivered += len(topic.local)


def pub_named(core: Core, fx: Effects, topic_id: str, body: bytes) -> None:
    """Publish to the public topic with this id, creating it first if absent (what a Publisher sends)."""
    ensure_public_topic(core, fx, topic_id)
    pub(core, fx, topic_id, body)


def attach(core: Core, fx: Effects, client_id: str, token: str, last_event_id: str | None) -> AttachPlan | None:
    """Attach a stream (held by the process that ``token`` names) and end the one before (takeover).

    For a stream held here, return the plan of the stream to open; the caller opens it and sets it
    as the client's stream before it releases the lock. ``None`` for a stream held elsewhere.
    """
    client = core.require_client(client_id)
    previous = client.stream
    if previous is not None:
        core.set_stream(client, None)
        previous.end(superseded=True)
    core.set_token(client, token)
    if client.status is not Status.RECEIVING:
        core.set_receiving(client)
        fx.add(client, "on_status_change", Status.RECEIVING)
    if not token.startswith(core.process_token + ":"):
        return None  # the stream is held by another process
    first, resumed = core.first_events(client, last_event_id)
    core.counters.streams_opened += 1
    if resumed:
        core.counters.resumes += 1
    elif last_event_id is not None:
        core.counters.resyncs += 1
    log.debug("stream attached for client %s (%s)", short_id(client_id), "resumed" if resumed else "init")
    return AttachPlan(client, first, core.position, token)


def detach(core: Core, fx: Effects, client_id: str, token: str) -> None:
    """Detach the stream ``token`` names, if it is still the client's; a stream held here ends."""
    client = core.clients.get(client_id)
    if client is None or client.stream_token != token:
        return
    core.set_token(client, None)
    stream = client.stream
    if stream is not None and stream.token == token:
        core.set_stream(client, None)
        # Ended here too: when another process detached it (this one was thought dead), its
        # browser must reconnect, or it would hold a stream that nothing is written to.
        stream.end(superseded=True)
    client.detaches += 1
    core.set_waiting(client)
    fx.add(client, "on_status_change", Status.WAITING)


def set_presence(core: Core, fx: Effects, topic_id: str, on: bool) -> None:
    """Turn live presence of a topic on or off (on: everyone connected is reported as joined)."""
    topic = core.topics.get(topic_id)
    if topic is None:
        raise TopicNotFound(f"topic {topic_id} does not exist (removed or never created)")
    if on:
        _presence.enable(core.presence_dirty, topic)
    else:
        _presence.disable(core.presence_dirty, topic)


def presence_flush(core: Core, fx: Effects, topic_id: str) -> None:
    """Tell a topic's subscribers who came and went since the last report, if anyone did (a topic message)."""
    topic = core.presence_dirty.pop(topic_id, None)
    if topic is None:
        topic = core.topics.get(topic_id)  # a replica that loaded a snapshot may not know it is dirty
        if topic is None:
            return
    item = _presence.report(topic)
    if item is None:
        return
    _keep(core, topic, core.next_position(), core.sys_body([item]))


def set_history(core: Core, fx: Effects, topic_id: str, size: int, ttl: float) -> None:
    """Set what a topic keeps: ``size`` messages (-1: the service's ``replay_size``), ``ttl`` seconds (0: no limit)."""
    topic = core.topics.get(topic_id)
    if topic is None:
        raise TopicNotFound(f"topic {topic_id} does not exist (removed or never created)")
    if not -1 <= size <= _history.MAX_HISTORY or not ttl >= 0:
        raise PubSubError(f"invalid history settings {size!r}, {ttl!r}")
    _history.configure(topic, None if size < 0 else size, float(ttl) or None, core.now())
    if topic.ttl is None:
        core.ttl_topics.pop(topic_id, None)
    else:
        core.ttl_topics[topic_id] = topic
    if topic.history_size is not None and len(topic.positions) > topic.history_size:
        topic.keep_only(topic.history_size)


def trim_history(core: Core, fx: Effects, topic_id: str, upto: int) -> None:
    """Drop a topic's messages up to position ``upto`` (proposed when their ttl has passed)."""
    topic = core.topics.get(topic_id)
    if topic is not None:
        _history.trimmed(topic, upto)


def close_topic(core: Core, fx: Effects, topic_id: str) -> None:
    """End a topic: it takes no more messages, and its subscribers are told (a topic message)."""
    topic = core.topics.get(topic_id)
    if topic is None:
        raise TopicNotFound(f"topic {topic_id} does not exist (removed or never created)")
    if topic.closed:
        return
    topic.closed = position = core.next_position()
    core.closed[topic_id] = (topic, core.now())
    _keep(core, topic, position, core.sys_body([_history.closed_item(topic_id)]))


def remove_closed_topic(core: Core, fx: Effects, topic_id: str) -> None:
    """Remove a closed topic, whatever its kind (proposed when its ttl has passed since it was closed)."""
    topic = core.topics.get(topic_id)
    if topic is None or not topic.closed:
        return
    if topic.type is TopicType.PUBLIC:
        remove_public_topic(core, fx, topic_id)
    elif topic.type is TopicType.GROUP and topic.group is not None:
        remove_group_topic(core, fx, topic.group.id, topic_id)
    elif topic.owner is not None:
        remove_private_topic(core, fx, topic.owner.id, topic_id)


#: Each operation's function (the shapes of their arguments are in OPERATIONS).
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "new_client": new_client,
    "remove_client": remove_client,
    "expire_client": expire_client,
    "new_public_topic": new_public_topic,
    "remove_public_topic": remove_public_topic,
    "new_private_topic": new_private_topic,
    "remove_private_topic": remove_private_topic,
    "new_group": new_group,
    "remove_group": remove_group,
    "new_group_topic": new_group_topic,
    "remove_group_topic": remove_group_topic,
    "add_group_client": add_group_client,
    "remove_group_client": remove_group_client,
    "sub": sub,
    "unsub": unsub,
    "pub": pub,
    "attach": attach,
    "detach": detach,
    "noop": noop,
    "ensure_public_topic": ensure_public_topic,
    "ensure_group": ensure_group,
    "ensure_group_topic": ensure_group_topic,
    "pub_named": pub_named,
    "set_presence": set_presence,
    "presence_flush": presence_flush,
    "sub_start": sub_start,
    "set_history": set_history,
    "trim_history": trim_history,
    "close_topic": close_topic,
    "remove_closed_topic": remove_closed_topic,
}


def apply(core: Core, operation: str, args: tuple[Any, ...]) -> tuple[Any, Effects]:
    """Apply one operation to ``core``; return its result and the events to fire.

    A refused change (a :class:`~pubsubsse.errors.PubSubError`: unknown
    client, limit reached, …) is returned as the result instead of raised,
    with no events, and has changed nothing. An unknown operation or
    arguments of the wrong shape raise :class:`ValueError` before anything
    changes.
    """
    shape = OPERATIONS.get(operation)
    if shape is None:
        raise ValueError(f"unknown operation {operation!r}")
    if len(args) != len(shape):
        raise ValueError(f"arguments of {operation!r} do not have the shape {shape}")
    for arg, kind in zip(args, shape):  # a loop, not all(<generator>): every publish passes here
        if not isinstance(arg, kind):
            raise ValueError(f"arguments of {operation!r} do not have the shape {shape}")
    effects = Effects(core.present)
    core.sent = False
    try:
        result = _FUNCTIONS[operation](core, effects, *args)
    except PubSubError as error:
        return error, Effects(core.present)
    return result, effects
