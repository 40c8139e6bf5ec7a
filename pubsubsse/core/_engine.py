"""The state machine: registries, visibility rules, operations and the messages they send.

:class:`Core` holds every client, topic and group of one service and applies
*operations* to them: named changes that take ids, not objects
(``apply("sub", client_id, topic_id)``), so that a change can be described as
data, written to a shared log and applied in the same order by every process.
Applying an operation is deterministic: the same operations in the same order
give the same state, the same event ids and the same message bytes. Each
operation that sends something takes the next *position* (``Core.position``):
it is the id of every event the operation sends, in every process.

This module does no I/O and takes no lock. The caller
(:class:`~pubsubsse.service.SSEPubSubService`) holds its lock around every
call, and gets back the events to fire once the lock is released
(:class:`Effects`). The state is the records of ``_records``: a published
message goes into its topic's history and is offered to the streams held here
(``TopicRecord.local``); a system message goes into its client's journal and
to its stream, through the ``AttachedStream`` protocol. How a stream gets it to
a socket is not this package's business.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any, Callable, TypeVar

from pubsubsse.core import _history, _presence
from pubsubsse.core._messages import RESET_ITEM, encode_sys, id_list_item, topics_item
from pubsubsse.core._records import (
    AttachedStream,
    Change,
    ClientRecord,
    GroupRecord,
    Status,
    TopicInGroup,
    TopicRecord,
    TopicType,
    short_id,
)
from pubsubsse.errors import ClientNotFound, GroupNotFound
from pubsubsse.events import emit

__all__ = ["Core", "Effects", "Counters", "parse_event_id", "numbers", "count_clients"]

log = logging.getLogger(__name__)

_R = TypeVar("_R", ClientRecord, TopicRecord, GroupRecord)

_MAX_EVENT_ID_LENGTH = 20
_RECENT_BODIES = 256


def parse_event_id(value: object) -> int | None:
    """Return the event id a consumer last saw, or ``None`` if it is absent or not one of ours."""
    if not isinstance(value, str) or not (0 < len(value) <= _MAX_EVENT_ID_LENGTH):
        return None
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value)


class Effects:
    """Event emissions collected while an operation is applied, fired after the lock is released."""

    __slots__ = ("events", "present")

    def __init__(self, present: Callable[[Any], Any]) -> None:
        self.events: list[tuple[Any, str, Any]] = []
        #: Turns a record (or a pair of them) into what listeners get: its handle.
        self.present = present

    def add(self, owner: Any, attribute: str, item: Any) -> None:
        """Collect the emission of ``owner.<attribute>`` with ``item``."""
        self.events.append((owner, attribute, item))

    def fire(self) -> None:
        """Call the listeners. Never with a lock held."""
        # Looked up at fire time, not when collected: a listener of an earlier event in the batch
        # (say service.on_new_public_topic) may start listening to a later one (the topic's).
        present = self.present
        for owner, attribute, item in self.events:
            emit(present(owner), attribute, present(item))


class Counters:
    """What this process has done since it started, for :meth:`~pubsubsse.SSEPubSubService.stats`."""

    __slots__ = ("published", "delivered", "queue_overflows", "resumes", "resyncs", "streams_opened")

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.queue_overflows = 0
        self.resumes = 0
        self.resyncs = 0
        self.streams_opened = 0


class Core:
    """Every client, topic and group of one service, and the operations that change them.

    ``owner`` is what the service-wide events are emitted on (the service);
    ``make_view`` makes the handle of a new record (kept as its ``view``) and
    ``present`` turns what an event carries into what listeners get (records
    into their handles). ``process_token`` names this process's attachments, and
    the ``attach`` operation returns the plan of a stream held here (the
    caller opens it). Each topic keeps its last ``replay_size`` messages.
    """

    def __init__(
        self,
        owner: object,
        *,
        make_view: Callable[[ClientRecord | TopicRecord | GroupRecord], Any],
        present: Callable[[Any], Any],
        process_token: str,
        now: Callable[[], float],
        replay_size: int,
        client_timeout: float | None,
        max_clients: int,
        max_private_topics: int,
        max_groups: int,
    ) -> None:
        self.owner = owner
        self.make_view = make_view
        self.present = present
        self.process_token = process_token
        self.now = now
        self.replay_size = replay_size
        self.client_timeout = client_timeout
        self.max_clients = max_clients
        self.max_private_topics = max_private_topics
        self.max_groups = max_groups
        self.clients: dict[str, ClientRecord] = {}
        self.public: dict[str, TopicRecord] = {}
        self.groups: dict[str, GroupRecord] = {}
        #: Every live topic of any type, for lookups by id.
        self.topics: dict[str, TopicRecord] = {}
        #: The ``WAITING`` clients, longest waiting first: expiry looks at the front only.
        self.waiting: dict[str, ClientRecord] = {}
        #: Handles of named topics and groups returned while the shared log could not be reached
        #: (see :meth:`declare`): the records created later with these ids are these objects.
        self.declared: dict[str, TopicRecord | GroupRecord] = {}
        self.counters = Counters()
        #: The position of the last operation that sent events: the id of those events.
        self.position = 0
        #: Whether the operation being applied has taken its position.
        self.sent = False
        #: Positions up to this one are not known here (before a snapshot this process loaded).
        self.floor = 0
        #: The clients with a stream attached, by the process that holds it (the prefix of the
        #: stream's token): liveness is checked per process, and heartbeats only walk our own.
        self.holders: dict[str, dict[str, ClientRecord]] = {}
        #: The topics with a subscriber whose stream is held here, and a count of the changes to
        #: that set: a shared log wakes this process only for publishes to those topics.
        self.held: dict[str, TopicRecord] = {}
        self.local_version = 0
        #: Topics with live presence whose connected subscribers changed since their last report.
        self.presence_dirty: dict[str, TopicRecord] = {}
        #: Topics with a ttl, and closed topics with when this process closed them (see ``core/_history``).
        self.ttl_topics: dict[str, TopicRecord] = {}
        self.closed: dict[str, tuple[TopicRecord, float]] = {}
        #: Recently encoded system messages, to share identical bodies (see sys_body).
        self._recent_bodies: dict[bytes, bytes] = {}

    # Lookups (callers hold the lock) --------------------------------------------------------------

    def can_see(self, client: ClientRecord, topic: TopicRecord) -> bool:
        """Return whether ``client`` can see ``topic``: public, its own private one, or its groups'."""
        if topic.type is TopicType.PUBLIC:
            return True
        if topic.type is TopicType.PRIVATE:
            return topic.owner is client
        return topic.group is not None and topic.group.id in client.groups

    def find_visible(self, client: ClientRecord, topic_id: str) -> TopicRecord | None:
        """Return the topic with this id if ``client`` can see it."""
        topic = self.topics.get(topic_id)
        if topic is None or not self.can_see(client, topic):
            return None
        return topic

    def visible_topics(self, client: ClientRecord) -> Iterator[TopicRecord]:
        """Return the topics ``client`` sees, in the protocol's order: public, group, private."""
        return itertools.chain(
            self.public.values(),
            (t for g in client.groups.values() for t in g.topics.values()),
            client.private.values(),
        )

    # Streams --------------------------------------------------------------------------------------

    def first_events(self, client: ClientRecord, last_event_id: str | None) -> tuple[list[tuple[int, bytes]], bool]:
        """Return the first events of a new stream and whether it resumes (else they are an init message)."""
        last_id = parse_event_id(last_event_id)
        events = None if last_id is None else self.since(client, last_id)
        if events is None:
            return [self.init_event(client, reset=last_event_id is not None)], False
        return events, True

    def init_event(self, client: ClientRecord, reset: bool = False) -> tuple[int, bytes]:
        """Return the init message of ``client`` and the event id it carries.

        The init message describes the state as of the current position and
        carries it, without taking a new one: a consumer resuming from it needs
        exactly the events after it, and the ids stay a pure function of the
        changes, so every process gives the same ones. With ``reset``, it ends
        with a ``reset`` element: the consumer had messages and may have missed
        some since (a resume from a position no longer held, a stream that fell
        behind), so what it shows must be fetched again.
        """
        items = [topics_item(self.visible_topics(client)), id_list_item("subscribed", client.subs.values())]
        items += _presence.full_items(client.subs.values())
        if reset:
            items.append(RESET_ITEM)
        return self.position, self.sys_body(items)

    def catch_up(self, client: ClientRecord, cursor: int) -> tuple[list[tuple[int, bytes]], int]:
        """Return the events a stream at ``cursor`` must send to catch up, and its new cursor.

        From the histories when they still hold them all, else an init message (a resync).
        """
        events = self.since(client, cursor)
        if events is None:
            log.info("client %s fell behind what is kept; resyncing", short_id(client.id))
            self.counters.resyncs += 1
            events = [self.init_event(client, reset=True)]
        return events, self.position

    def since(self, client: ClientRecord, last_id: int) -> list[tuple[int, bytes]] | None:
        """Return the client's events after position ``last_id``, or ``None`` if some are no longer kept.

        Its system messages come from its journal; its published messages from the
        histories of the topics it was subscribed to, each over the positions it was
        (the journal says when a subscription began or ended).
        """
        if last_id > self.position or last_id < self.floor or last_id < client.journal_floor:
            return None
        journal = client.entries()
        start = len(journal)
        while start and journal[start - 1][0] > last_id:
            start -= 1
        later = journal[start:]
        # The subscriptions as of last_id: today's, with the later changes undone.
        subscribed = dict(client.subs)
        for _, _, changes in reversed(later):
            for topic, joined in changes:
                if joined:
                    subscribed.pop(topic.id, None)
                else:
                    subscribed[topic.id] = topic
        since = {topic_id: last_id for topic_id in subscribed}
        spans: list[tuple[TopicRecord, int, int]] = []
        events: list[tuple[int, bytes]] = []
        for position, body, changes in later:
            events.append((position, _history.expand(self.topics, body, self.replay_size)))
            for topic, joined in changes:
                if joined:
                    subscribed[topic.id] = topic
                    since[topic.id] = position
                elif topic.id in subscribed:
                    spans.append((subscribed.pop(topic.id), since.pop(topic.id), position))
        spans.extend((topic, since[topic_id], self.position) for topic_id, topic in subscribed.items())
        for topic, after, upto in spans:
            kept = topic.between(after, upto, topic.size(self.replay_size))
            if kept is None:
                return None
            events += kept
        if len(events) > 1:
            events.sort(key=_position_of)
        return events

    # Messages -------------------------------------------------------------------------------------

    def sys_body(self, items: list[dict[str, Any]]) -> bytes:
        """Encode a system message, sharing one bytes object among identical messages.

        Many clients hold the same init or topic-list message in their replay
        buffers; sharing the bytes keeps an idle client's memory small.
        """
        body = encode_sys(items)
        shared = self._recent_bodies.get(body)
        if shared is not None:
            return shared
        if len(self._recent_bodies) >= _RECENT_BODIES:
            self._recent_bodies.clear()
        self._recent_bodies[body] = body
        return body

    def next_position(self) -> int:
        """Return the position of the events of the operation being applied (taken at its first event)."""
        if not self.sent:
            self.sent = True
            self.position += 1
        return self.position

    def tell(
        self, client: ClientRecord, body: bytes, changes: tuple[Change, ...] = (), sent: bytes | None = None
    ) -> None:
        """Send the client a system message (with the subscription changes it announces; ``sent``: see ``note``)."""
        client.note(self.next_position(), body, changes, sent)

    def send_topics(self, client: ClientRecord, unsubscribed: list[TopicRecord] | None = None) -> None:
        """Send the client its topic list, followed by what it was unsubscribed from, in one message."""
        items = [topics_item(self.visible_topics(client))]
        if unsubscribed:
            items.append(id_list_item("unsubscribed", unsubscribed))
            changes = (
                unsubscribed[0].change(False) if len(unsubscribed) == 1 else tuple((t, False) for t in unsubscribed)
            )
            self.tell(client, self.sys_body(items), changes)
        else:
            self.tell(client, self.sys_body(items))

    def set_token(self, client: ClientRecord, token: str | None) -> None:
        """Record which attachment (in whichever process) the client's stream is, or ``None``."""
        old = client.stream_token
        if old is not None:
            process = old.partition(":")[0]
            held = self.holders.get(process)
            if held is not None:
                held.pop(client.id, None)
                if not held:
                    del self.holders[process]
        client.stream_token = token
        if token is not None:
            self.holders.setdefault(token.partition(":")[0], {})[client.id] = client

    def set_stream(self, client: ClientRecord, stream: AttachedStream | None) -> None:
        """Attach (or, with ``None``, forget) the stream held here for ``client``; publishes follow it."""
        client.stream = stream
        for topic in client.subs.values():
            if stream is None:
                _withdraw(self, topic, client.id)
            else:
                _offer(self, topic, client.id, stream)

    def notify(self, affected: dict[ClientRecord, list[TopicRecord]]) -> None:
        for client, unsubscribed in affected.items():
            if not client.removed:
                self.send_topics(client, unsubscribed)

    # Helpers of the operations --------------------------------------------------------------------

    def require_client(self, client_id: str) -> ClientRecord:
        client = self.clients.get(client_id)
        if client is None:
            raise ClientNotFound(f"client {short_id(client_id)} does not exist (removed or never created)")
        return client

    def require_group(self, group_id: str) -> GroupRecord:
        group = self.groups.get(group_id)
        if group is None:
            raise GroupNotFound(f"group {group_id} does not exist (removed or never created)")
        return group

    def new_client_record(self, client_id: str, user: str | None = None) -> ClientRecord:
        return self.made(ClientRecord(client_id, self.now(), user))

    def made(self, record: _R) -> _R:
        """Give a new record its handle (made by the service); return the record."""
        record.view = self.make_view(record)
        return record

    def add_topic(self, topic: TopicRecord) -> TopicRecord:
        self.topics[topic.id] = topic
        return topic

    def declare(self, kind: str, object_id: str, group_id: str | None = None) -> TopicRecord | GroupRecord:
        """Return a handle for a named public topic, group or group topic that the log will create.

        For a shared service whose log cannot be reached: the app gets its handle at once (an
        app declaring its topics at startup must boot while the log is down), and the record
        that the log's entry creates later, or that a snapshot holds, is this same object.
        """
        known = self.groups.get(object_id) if kind == "group" else self.topics.get(object_id)
        if known is not None:
            return known
        handle = self.declared.get(object_id)
        if handle is None:
            if kind == "group":
                handle = self.made(GroupRecord(object_id))
            elif kind == "public":
                handle = self.made(TopicRecord(object_id, TopicType.PUBLIC))
            else:
                assert group_id is not None
                group = self.declare("group", group_id)
                assert isinstance(group, GroupRecord)
                handle = self.made(TopicRecord(object_id, TopicType.GROUP, group=group))
            self.declared[object_id] = handle
        return handle

    def made_topic(self, made: TopicRecord) -> TopicRecord:
        """Return the declared record with ``made``'s id, type and group, if there is one, else ``made``."""
        declared = self.declared.get(made.id)
        if not isinstance(declared, TopicRecord) or declared.type is not made.type or declared.group is not made.group:
            return self.made(made)
        del self.declared[made.id]
        return declared

    def made_group(self, made: GroupRecord) -> GroupRecord:
        """Return the declared record of the group with ``made``'s id, if there is one, else ``made``."""
        declared = self.declared.get(made.id)
        if not isinstance(declared, GroupRecord):
            return self.made(made)
        del self.declared[made.id]
        return declared

    def subscribe(self, fx: Effects, client: ClientRecord, topic: TopicRecord) -> None:
        client.subs[topic.id] = topic
        topic.subscribers[client.id] = client
        if client.stream is not None:
            _offer(self, topic, client.id, client.stream)
        if client.status is Status.RECEIVING:
            _presence.connect(self.presence_dirty, topic, client)
        fx.add(client, "on_sub_to_topic", topic)
        fx.add(topic, "on_new_sub_of_client", client)

    def unsubscribe(self, fx: Effects, client: ClientRecord, topic: TopicRecord) -> None:
        del client.subs[topic.id]
        del topic.subscribers[client.id]
        _withdraw(self, topic, client.id)
        if client.status is Status.RECEIVING:
            _presence.disconnect(self.presence_dirty, topic, client)
        fx.add(client, "on_unsub_from_topic", topic)
        fx.add(topic, "on_unsub_of_client", client)

    def gain_topic(self, fx: Effects, client: ClientRecord, topic: TopicRecord) -> None:
        """Fire the events of ``client`` starting to see ``topic``."""
        fx.add(client, "on_new_topic", topic)
        fx.add(*_typed(client, topic, "new"))
        fx.add(topic, "on_new_client", client)

    def lose_topic(self, fx: Effects, client: ClientRecord, topic: TopicRecord) -> None:
        """Fire the events of ``client`` no longer seeing ``topic``."""
        fx.add(client, "on_remove_topic", topic)
        fx.add(*_typed(client, topic, "remove"))
        fx.add(topic, "on_remove_client", client)

    def drop_topic(self, fx: Effects, topic: TopicRecord, affected: dict[ClientRecord, list[TopicRecord]]) -> None:
        """Unregister ``topic``: unsubscribe its subscribers, then fire the events of everyone who saw it.

        ``affected`` collects, per client that saw it, the topics it was unsubscribed from.
        """
        del self.topics[topic.id]
        topic.removed = True
        subscribers = list(topic.subscribers.values())
        for client in subscribers:
            self.unsubscribe(fx, client, topic)
        self.presence_dirty.pop(topic.id, None)
        self.ttl_topics.pop(topic.id, None)
        self.closed.pop(topic.id, None)
        viewers: Iterator[ClientRecord] | list[ClientRecord]
        if topic.type is TopicType.PUBLIC:
            viewers = iter(self.clients.values())
        elif topic.type is TopicType.PRIVATE:
            assert topic.owner is not None
            viewers = [topic.owner]
        else:
            assert topic.group is not None
            viewers = iter(topic.group.members.values())
        for client in viewers:
            self.lose_topic(fx, client, topic)
            affected.setdefault(client, [])
        for client in subscribers:
            affected[client].append(topic)

    def leave_group(
        self, fx: Effects, group: GroupRecord, client: ClientRecord, affected: dict[ClientRecord, list[TopicRecord]]
    ) -> None:
        """Take ``client`` out of ``group`` with its implicit unsubscriptions and events."""
        del group.members[client.id]
        del client.groups[group.id]
        unsubscribed = affected.setdefault(client, [])
        for topic in group.topics.values():
            if topic.id in client.subs:
                self.unsubscribe(fx, client, topic)
                unsubscribed.append(topic)
        for topic in group.topics.values():
            self.lose_topic(fx, client, topic)
        fx.add(client, "on_remove_group", group)
        fx.add(group, "on_remove_client", client)

    def set_receiving(self, client: ClientRecord) -> None:
        """Mark the client as having a stream attached (somewhere): it is present in its topics."""
        client.status = Status.RECEIVING
        self.waiting.pop(client.id, None)
        _presence.connect_client(self.presence_dirty, client)

    def set_waiting(self, client: ClientRecord) -> None:
        if client.status is Status.RECEIVING:
            _presence.disconnect_client(self.presence_dirty, client)
        client.status = Status.WAITING
        client.waiting_since = self.now()
        self.waiting.pop(client.id, None)  # to the end: the waiting list stays in waiting order
        self.waiting[client.id] = client


def _offer(core: Core, topic: TopicRecord, client_id: str, stream: AttachedStream) -> None:
    """Offer ``topic``'s publishes to a stream held here."""
    topic.local[client_id] = stream
    if topic.id not in core.held:
        core.held[topic.id] = topic
        core.local_version += 1


def _withdraw(core: Core, topic: TopicRecord, client_id: str) -> None:
    """Stop offering ``topic``'s publishes to ``client_id``'s stream (if it was held here)."""
    if topic.local.pop(client_id, None) is not None and not topic.local:
        core.held.pop(topic.id, None)
        core.local_version += 1


def _typed(client: ClientRecord, topic: TopicRecord, change: str) -> tuple[ClientRecord, str, Any]:
    """Return the typed client event of ``change`` ("new" or "remove") for ``topic``."""
    if topic.type is TopicType.GROUP:
        assert topic.group is not None
        return client, f"on_{change}_group_topic", TopicInGroup(topic, topic.group)
    return client, f"on_{change}_{topic.type.value}_topic", topic


def numbers(core: Core) -> tuple[dict[str, int], list[ClientRecord]]:
    """Return the sizes and counters of :meth:`~pubsubsse.SSEPubSubService.stats`, and the clients to count."""
    counters = core.counters
    result = {
        "clients": len(core.clients),
        "public_topics": len(core.public),
        "topics": len(core.topics),
        "groups": len(core.groups),
        "messages_published": counters.published,
        "messages_delivered": counters.delivered,
        "streams_opened": counters.streams_opened,
        "resumes": counters.resumes,
        "resyncs": counters.resyncs,
        "queue_overflows": counters.queue_overflows,
        "history_messages": 0,
        "history_bytes": 0,
    }
    for topic in core.topics.values():  # one pass, under the lock
        result["history_messages"] += len(topic.positions)
        result["history_bytes"] += topic.kept_bytes
    return result, list(core.clients.values())


def _position_of(event: tuple[int, bytes]) -> int:
    return event[0]


def count_clients(clients: list[ClientRecord]) -> dict[str, int]:
    """Count receiving and waiting clients and attached streams; without the lock.

    A status read mid-change is as good as one read a moment later, and a scrape
    must not hold up publishers: one pass over a copy of the client list.
    """
    receiving = streams = 0
    for client in clients:
        if client.status is Status.RECEIVING:
            receiving += 1
        if client.stream is not None:
            streams += 1
    return {"clients_receiving": receiving, "clients_waiting": len(clients) - receiving, "streams": streams}
