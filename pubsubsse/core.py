"""The state machine: registries, visibility rules, operations and the messages they send.

:class:`Core` holds every client, topic and group of one service and applies
*operations* to them: named changes that take ids, not objects
(``apply("sub", client_id, topic_id)``), so that a change can be described as
data, written to a shared log and applied in the same order by every process.
Applying an operation is deterministic: the same operations in the same order
give the same state, the same event ids and the same message bytes.

This module does no I/O and takes no lock. The caller
(:class:`~pubsubsse.service.SSEPubSubService`) holds its lock around every
call, and gets back the events to fire once the lock is released
(:class:`Effects`). Messages for a client go into its :class:`Mailbox`, which
hands each one to the attached stream, if any, through the :class:`Sink`
protocol; how a stream gets them to a socket is not this module's business.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .encoding import encode_sys, frame, id_list_item, retry_field, topics_item
from .errors import ClientNotFound, GroupNotFound, LimitReached, NotSubscribed, PubSubError, TopicNotFound
from .events import emit
from .model import Client, Group, GroupTopic, Status, Topic, TopicType, short_id

if TYPE_CHECKING:
    from .service import SSEPubSubService

__all__ = ["Core", "Effects", "Mailbox", "Sink", "OPERATIONS", "OPERATIONS_V1", "parse_event_id"]

log = logging.getLogger(__name__)

_MAX_EVENT_ID_LENGTH = 20
_RECENT_BODIES = 256

#: Every operation :meth:`Core.apply` knows, with the types of its arguments (checked before a
#: change is applied, so that an entry of a shared log with the wrong shape changes nothing).
OPERATIONS: dict[str, tuple[type | tuple[type, ...], ...]] = {
    "new_client": (str,),
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
}

#: The operations pubsubsse 0.1.0 knows (entry format 1): a log shared with such a process can carry no other.
OPERATIONS_V1 = frozenset(OPERATIONS) - {
    "noop",
    "ensure_public_topic",
    "ensure_group",
    "ensure_group_topic",
    "pub_named",
}


def parse_event_id(value: object) -> int | None:
    """Return the event id a consumer last saw, or ``None`` if it is absent or not one of ours."""
    if not isinstance(value, str) or not (0 < len(value) <= _MAX_EVENT_ID_LENGTH):
        return None
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value)


class Sink(Protocol):
    """Where a client's mailbox hands its events while a stream is attached (a :class:`~pubsubsse.stream.Stream`)."""

    token: str

    def offer(self, event_id: int, body: bytes) -> None:
        """Take one event; never block. Called with the service lock held."""
        ...

    def end(self, superseded: bool) -> None:
        """End the stream. Lock held.

        ``superseded``: it is no longer the client's stream (a takeover, a
        detach decided elsewhere) and sends nothing more. Otherwise (the client
        was removed) it first sends everything the client was given.
        """
        ...


class Mailbox:
    """Outgoing messages of one client: its event counter, its replay buffer and its attached stream."""

    __slots__ = ("seq", "replay", "stream", "replay_size")

    def __init__(self, replay_size: int) -> None:
        #: Id of the last event given to this client; ids are 1, 2, 3, …
        self.seq = 0
        #: Bodies of the last events, oldest first; the last one has id ``seq``. A list trimmed in
        #: steps rather than a deque: a deque costs a 64-slot block even for the one or two events
        #: an idle client holds, and there may be tens of thousands of idle clients.
        self.replay: list[bytes] = []
        #: The attached stream, or ``None`` while the client is ``WAITING``.
        self.stream: Sink | None = None
        self.replay_size = replay_size

    def deliver(self, body: bytes) -> int:
        """Give the client one event with this encoded body; return its id. Never blocks."""
        self.seq += 1
        replay = self.replay
        replay.append(body)
        if len(replay) > self.replay_size + (self.replay_size >> 3):
            del replay[: len(replay) - self.replay_size]
        if self.stream is not None:
            self.stream.offer(self.seq, body)
        return self.seq

    def since(self, last_id: int) -> list[tuple[int, bytes]] | None:
        """Return the events after ``last_id``, or ``None`` if the replay buffer no longer holds them all."""
        held = min(len(self.replay), self.replay_size)
        first = self.seq - held + 1
        if last_id < first - 1 or last_id > self.seq:
            return None
        start = len(self.replay) - (self.seq - last_id)
        return list(zip(itertools.count(last_id + 1), self.replay[start:]))


class Effects:
    """Event emissions collected while an operation is applied, fired after the lock is released."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[tuple[Any, str, Any]] = []

    def add(self, owner: Any, attribute: str, item: Any) -> None:
        """Collect the emission of ``owner.<attribute>`` with ``item``."""
        self.events.append((owner, attribute, item))

    def fire(self) -> None:
        """Call the listeners. Never with a lock held."""
        # Looked up at fire time, not when collected: a listener of an earlier event in the batch
        # (say service.on_new_public_topic) may start listening to a later one (the topic's).
        for owner, attribute, item in self.events:
            emit(owner, attribute, item)


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


#: ``open_stream(client, first_chunk, cursor, token)``: makes the stream of an attachment held here.
OpenStream = Callable[[Client, bytes, int, str], Sink]


class Core:
    """Every client, topic and group of one service, and the operations that change them.

    ``owner`` is the service the handles (:class:`~pubsubsse.model.Client` and
    friends) belong to; ``process_token`` names this process's attachments, and
    ``open_stream`` makes the stream of an attachment held here.
    """

    def __init__(
        self,
        owner: SSEPubSubService,
        *,
        process_token: str,
        open_stream: OpenStream,
        now: Callable[[], float],
        retry: float,
        replay_size: int,
        client_timeout: float | None,
        max_clients: int,
        max_private_topics: int,
        max_groups: int,
    ) -> None:
        self._owner = owner
        self._process_token = process_token
        self._open_stream = open_stream
        self._now = now
        self._retry = retry
        self.replay_size = replay_size
        self._client_timeout = client_timeout
        self._max_clients = max_clients
        self._max_private_topics = max_private_topics
        self._max_groups = max_groups
        self.clients: dict[str, Client] = {}
        self.public: dict[str, Topic] = {}
        self.groups: dict[str, Group] = {}
        #: Every live topic of any type, for lookups by id.
        self.topics: dict[str, Topic] = {}
        #: The ``WAITING`` clients, longest waiting first: expiry looks at the front only.
        self.waiting: dict[str, Client] = {}
        #: Handles of named topics and groups returned while the shared log could not be reached
        #: (see :meth:`declare`): the records created later with these ids are these objects.
        self.declared: dict[str, Topic | Group] = {}
        self.counters = Counters()
        #: Recently encoded system messages, to share identical bodies (see _sys_body).
        self._recent_bodies: dict[bytes, bytes] = {}

    # Applying operations --------------------------------------------------------------------------

    def apply(self, operation: str, args: tuple[Any, ...]) -> tuple[Any, Effects]:
        """Apply one operation; return its result and the events to fire.

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
        effects = Effects()
        try:
            result = getattr(self, "_op_" + operation)(effects, *args)
        except PubSubError as error:
            return error, Effects()
        return result, effects

    # Lookups (callers hold the lock) --------------------------------------------------------------

    def can_see(self, client: Client, topic: Topic) -> bool:
        """Return whether ``client`` can see ``topic``: public, its own private one, or its groups'."""
        if topic._type is TopicType.PUBLIC:
            return True
        if topic._type is TopicType.PRIVATE:
            return topic._owner is client
        return topic._group is not None and topic._group._id in client._groups

    def find_visible(self, client: Client, topic_id: str) -> Topic | None:
        """Return the topic with this id if ``client`` can see it."""
        topic = self.topics.get(topic_id)
        if topic is None or not self.can_see(client, topic):
            return None
        return topic

    def visible_topics(self, client: Client) -> Iterator[Topic]:
        """Return the topics ``client`` sees, in the protocol's order: public, group, private."""
        return itertools.chain(
            self.public.values(),
            (t for g in client._groups.values() for t in g._topics.values()),
            client._private.values(),
        )

    # Streams --------------------------------------------------------------------------------------

    def first_chunk(self, client: Client, last_event_id: str | None) -> tuple[bytes, bool]:
        """Return the first chunk of a new stream and whether it resumes (else it starts with an init)."""
        mailbox = client._mailbox
        last_id = parse_event_id(last_event_id)
        events = None if last_id is None else mailbox.since(last_id)
        resumed = events is not None
        if events is None:
            events = [self.init_event(client)]
        pieces = [retry_field(self._retry)]
        for event_id, body in events:
            pieces += frame(event_id, body)
        return b"".join(pieces), resumed

    def init_event(self, client: Client) -> tuple[int, bytes]:
        """Return the init message of ``client`` and the event id it carries.

        The init message describes the state as of the client's last event and
        carries that event's id, without taking a new one: a consumer resuming
        from it needs exactly the events after it, and the ids stay a pure
        function of the changes, so every process gives the same ones.
        """
        return client._mailbox.seq, self._sys_body(
            [topics_item(self.visible_topics(client)), id_list_item("subscribed", client._subs.values())]
        )

    def catch_up(self, client: Client, cursor: int) -> tuple[list[tuple[int, bytes]], int]:
        """Return the events a stream at ``cursor`` must send to catch up, and its new cursor.

        From the replay buffer when it still holds them all, else an init message (a resync).
        """
        mailbox = client._mailbox
        events = mailbox.since(cursor)
        if events is None:
            log.info("client %s fell behind its replay buffer; resyncing", short_id(client._id))
            self.counters.resyncs += 1
            events = [self.init_event(client)]
        return events, mailbox.seq

    # Messages -------------------------------------------------------------------------------------

    def _sys_body(self, items: list[dict[str, Any]]) -> bytes:
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

    def _send_topics(self, client: Client, unsubscribed: list[Topic] | None = None) -> None:
        """Send the client its topic list, followed by what it was unsubscribed from, in one message."""
        items = [topics_item(self.visible_topics(client))]
        if unsubscribed:
            items.append(id_list_item("unsubscribed", unsubscribed))
        client._mailbox.deliver(self._sys_body(items))

    def _notify(self, affected: dict[Client, list[Topic]]) -> None:
        for client, unsubscribed in affected.items():
            if not client._removed:
                self._send_topics(client, unsubscribed)

    # Helpers of the operations --------------------------------------------------------------------

    def _client(self, client_id: str) -> Client:
        client = self.clients.get(client_id)
        if client is None:
            raise ClientNotFound(f"client {short_id(client_id)} does not exist (removed or never created)")
        return client

    def _group(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            raise GroupNotFound(f"group {group_id} does not exist (removed or never created)")
        return group

    def _new_client(self, client_id: str) -> Client:
        return Client(self._owner, client_id, Mailbox(self.replay_size), self._now())

    def _add_topic(self, topic: Topic) -> Topic:
        self.topics[topic._id] = topic
        return topic

    def declare(self, kind: str, object_id: str, group_id: str | None = None) -> Topic | Group:
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
                handle = Group(self._owner, object_id)
            elif kind == "public":
                handle = Topic(self._owner, object_id, TopicType.PUBLIC)
            else:
                assert group_id is not None
                group = self.declare("group", group_id)
                assert isinstance(group, Group)
                handle = Topic(self._owner, object_id, TopicType.GROUP, group=group)
            self.declared[object_id] = handle
        return handle

    def _made_topic(self, made: Topic) -> Topic:
        """Return the declared handle with ``made``'s id, type and group, if there is one, else ``made``."""
        declared = self.declared.get(made._id)
        if not isinstance(declared, Topic) or declared._type is not made._type or declared._group is not made._group:
            return made
        del self.declared[made._id]
        return declared

    def _made_group(self, made: Group) -> Group:
        """Return the declared handle of the group with ``made``'s id, if there is one, else ``made``."""
        declared = self.declared.get(made._id)
        if not isinstance(declared, Group):
            return made
        del self.declared[made._id]
        return declared

    def _unsubscribe(self, fx: Effects, client: Client, topic: Topic) -> None:
        del client._subs[topic._id]
        del topic._subscribers[client._id]
        fx.add(client, "on_unsub_from_topic", topic)
        fx.add(topic, "on_unsub_of_client", client)

    @staticmethod
    def _typed(client: Client, topic: Topic, change: str) -> tuple[Client, str, Any]:
        """Return the typed client event of ``change`` ("new" or "remove") for ``topic``."""
        if topic._type is TopicType.GROUP:
            assert topic._group is not None
            return client, f"on_{change}_group_topic", GroupTopic(topic, topic._group)
        return client, f"on_{change}_{topic._type.value}_topic", topic

    def _gain_topic(self, fx: Effects, client: Client, topic: Topic) -> None:
        """Fire the events of ``client`` starting to see ``topic``."""
        fx.add(client, "on_new_topic", topic)
        fx.add(*self._typed(client, topic, "new"))
        fx.add(topic, "on_new_client", client)

    def _lose_topic(self, fx: Effects, client: Client, topic: Topic) -> None:
        """Fire the events of ``client`` no longer seeing ``topic``."""
        fx.add(client, "on_remove_topic", topic)
        fx.add(*self._typed(client, topic, "remove"))
        fx.add(topic, "on_remove_client", client)

    def _drop_topic(self, fx: Effects, topic: Topic, affected: dict[Client, list[Topic]]) -> None:
        """Unregister ``topic``: unsubscribe its subscribers, then fire the events of everyone who saw it.

        ``affected`` collects, per client that saw it, the topics it was unsubscribed from.
        """
        del self.topics[topic._id]
        topic._removed = True
        subscribers = list(topic._subscribers.values())
        for client in subscribers:
            self._unsubscribe(fx, client, topic)
        viewers: Iterator[Client] | list[Client]
        if topic._type is TopicType.PUBLIC:
            viewers = iter(self.clients.values())
        elif topic._type is TopicType.PRIVATE:
            assert topic._owner is not None
            viewers = [topic._owner]
        else:
            assert topic._group is not None
            viewers = iter(topic._group._members.values())
        for client in viewers:
            self._lose_topic(fx, client, topic)
            affected.setdefault(client, [])
        for client in subscribers:
            affected[client].append(topic)

    def _leave_group(self, fx: Effects, group: Group, client: Client, affected: dict[Client, list[Topic]]) -> None:
        """Take ``client`` out of ``group`` with its implicit unsubscriptions and events."""
        del group._members[client._id]
        del client._groups[group._id]
        unsubscribed = affected.setdefault(client, [])
        for topic in group._topics.values():
            if topic._id in client._subs:
                self._unsubscribe(fx, client, topic)
                unsubscribed.append(topic)
        for topic in group._topics.values():
            self._lose_topic(fx, client, topic)
        fx.add(client, "on_remove_group", group)
        fx.add(group, "on_remove_client", client)

    def _set_waiting(self, client: Client) -> None:
        client._status = Status.WAITING
        client._waiting_since = self._now()
        self.waiting.pop(client._id, None)  # to the end: the waiting list stays in waiting order
        self.waiting[client._id] = client

    # Operations: one per kind of change -----------------------------------------------------------

    def _op_noop(self, fx: Effects) -> None:
        """Change nothing (a marker in a shared log)."""

    def _op_new_client(self, fx: Effects, client_id: str) -> Client:
        if len(self.clients) >= self._max_clients:
            log.warning("max_clients (%d) reached; refusing a new client", self._max_clients)
            raise LimitReached(f"max_clients: {self._max_clients} clients exist")
        if client_id in self.clients:
            raise PubSubError(f"client {short_id(client_id)} exists already")
        client = self._new_client(client_id)
        self.clients[client_id] = client
        self.waiting[client_id] = client
        fx.add(self._owner, "on_new_client", client)
        for topic in self.public.values():
            fx.add(topic, "on_new_client", client)
        log.debug("client %s created", short_id(client_id))
        return client

    def _op_remove_client(self, fx: Effects, client_id: str) -> bool:
        """Return whether the client was there to remove (a removal made elsewhere may have come first)."""
        client = self.clients.pop(client_id, None)
        if client is None:
            return False
        self.waiting.pop(client_id, None)
        client._removed = True
        unsubscribed = list(client._subs.values())
        for topic in unsubscribed:
            self._unsubscribe(fx, client, topic)
        for topic in itertools.chain(self.public.values(), client._private.values()):
            self._lose_topic(fx, client, topic)
        for group in list(client._groups.values()):
            self._leave_group(fx, group, client, {})
        for topic in client._private.values():
            del self.topics[topic._id]
            topic._removed = True
        client._private.clear()
        mailbox = client._mailbox
        mailbox.deliver(self._sys_body([topics_item(()), id_list_item("unsubscribed", unsubscribed)]))
        if mailbox.stream is not None:
            mailbox.stream.end(superseded=False)
        fx.add(self._owner, "on_remove_client", client)
        log.debug("client %s removed", short_id(client_id))
        return True

    def _op_expire_client(self, fx: Effects, client_id: str, detaches: int) -> None:
        # Applied only if the client has not attached (nor detached again) since the proposal.
        client = self.clients.get(client_id)
        if client is not None and client._status is Status.WAITING and client._detaches == detaches:
            log.info("client %s expired after %.0f s without a stream", short_id(client_id), self._client_timeout or 0)
            self._op_remove_client(fx, client_id)

    def _op_new_public_topic(self, fx: Effects, topic_id: str) -> Topic:
        if topic_id in self.topics:
            raise PubSubError(f"topic {topic_id} exists already")
        topic = self._add_topic(self._made_topic(Topic(self._owner, topic_id, TopicType.PUBLIC)))
        self.public[topic_id] = topic
        fx.add(self._owner, "on_new_public_topic", topic)
        shared_body: bytes | None = None
        for client in self.clients.values():
            self._gain_topic(fx, client, topic)
            if client._groups or client._private:
                self._send_topics(client)
            else:
                if shared_body is None:
                    shared_body = self._sys_body([topics_item(self.public.values())])
                client._mailbox.deliver(shared_body)
        return topic

    def _op_ensure_public_topic(self, fx: Effects, topic_id: str) -> Topic:
        """Return the public topic with this id, creating it (with its events) if absent."""
        existing = self.topics.get(topic_id)
        if existing is None:
            return self._op_new_public_topic(fx, topic_id)
        if existing._type is not TopicType.PUBLIC:
            raise PubSubError(f"{topic_id} is the id of a {existing._type.value} topic")
        return existing

    def _op_remove_public_topic(self, fx: Effects, topic_id: str) -> None:
        topic = self.public.pop(topic_id, None)
        if topic is None:
            return
        affected: dict[Client, list[Topic]] = {}
        self._drop_topic(fx, topic, affected)
        self._notify(affected)
        fx.add(self._owner, "on_remove_public_topic", topic)

    def _op_new_private_topic(self, fx: Effects, client_id: str, topic_id: str) -> Topic:
        client = self._client(client_id)
        if len(client._private) >= self._max_private_topics:
            log.warning("max_private_topics (%d) reached by client %s", self._max_private_topics, short_id(client_id))
            raise LimitReached(f"max_private_topics: the client has {self._max_private_topics} private topics")
        if topic_id in self.topics:
            raise PubSubError(f"topic {topic_id} exists already")
        topic = self._add_topic(Topic(self._owner, topic_id, TopicType.PRIVATE, owner=client))
        client._private[topic_id] = topic
        self._gain_topic(fx, client, topic)
        self._send_topics(client)
        return topic

    def _op_remove_private_topic(self, fx: Effects, client_id: str, topic_id: str) -> bool:
        """Return whether the topic was there to remove."""
        client = self.clients.get(client_id)
        topic = None if client is None else client._private.pop(topic_id, None)
        if client is None or topic is None:
            return False
        affected: dict[Client, list[Topic]] = {}
        self._drop_topic(fx, topic, affected)
        self._notify(affected)
        return True

    def _op_new_group(self, fx: Effects, group_id: str) -> Group:
        if len(self.groups) >= self._max_groups:
            log.warning("max_groups (%d) reached; refusing a new group", self._max_groups)
            raise LimitReached(f"max_groups: {self._max_groups} groups exist")
        if group_id in self.groups:
            raise PubSubError(f"group {group_id} exists already")
        group = self._made_group(Group(self._owner, group_id))
        self.groups[group_id] = group
        fx.add(self._owner, "on_new_group", group)
        return group

    def _op_ensure_group(self, fx: Effects, group_id: str) -> Group:
        """Return the group with this id, creating it (with its event) if absent."""
        existing = self.groups.get(group_id)
        return existing if existing is not None else self._op_new_group(fx, group_id)

    def _op_remove_group(self, fx: Effects, group_id: str) -> None:
        group = self.groups.pop(group_id, None)
        if group is None:
            return
        affected: dict[Client, list[Topic]] = {}
        for topic in list(group._topics.values()):
            del group._topics[topic._id]
            self._drop_topic(fx, topic, affected)
            fx.add(group, "on_remove_group_topic", topic)
        for client in list(group._members.values()):
            self._leave_group(fx, group, client, affected)
        group._removed = True
        self._notify(affected)
        fx.add(self._owner, "on_remove_group", group)

    def _op_new_group_topic(self, fx: Effects, group_id: str, topic_id: str) -> Topic:
        group = self._group(group_id)
        if topic_id in self.topics:
            raise PubSubError(f"topic {topic_id} exists already")
        topic = self._add_topic(self._made_topic(Topic(self._owner, topic_id, TopicType.GROUP, group=group)))
        group._topics[topic_id] = topic
        fx.add(group, "on_new_group_topic", topic)
        for client in group._members.values():
            self._gain_topic(fx, client, topic)
            self._send_topics(client)
        return topic

    def _op_ensure_group_topic(self, fx: Effects, group_id: str, topic_id: str) -> Topic:
        """Return the group's topic with this id, creating it (with its events) if absent."""
        group = self._group(group_id)
        existing = self.topics.get(topic_id)
        if existing is None:
            return self._op_new_group_topic(fx, group_id, topic_id)
        if existing._group is not group:
            raise PubSubError(f"{topic_id} is the id of a topic outside group {group_id}")
        return existing

    def _op_remove_group_topic(self, fx: Effects, group_id: str, topic_id: str) -> None:
        group = self.groups.get(group_id)
        topic = None if group is None else group._topics.pop(topic_id, None)
        if group is None or topic is None:
            return
        affected: dict[Client, list[Topic]] = {}
        self._drop_topic(fx, topic, affected)
        self._notify(affected)
        fx.add(group, "on_remove_group_topic", topic)

    def _op_add_group_client(self, fx: Effects, group_id: str, client_id: str) -> None:
        group = self._group(group_id)
        client = self._client(client_id)
        if client_id in group._members:
            return
        group._members[client_id] = client
        client._groups[group_id] = group
        fx.add(group, "on_new_client", client)
        fx.add(client, "on_new_group", group)
        for topic in group._topics.values():
            self._gain_topic(fx, client, topic)
        self._send_topics(client)

    def _op_remove_group_client(self, fx: Effects, group_id: str, client_id: str) -> None:
        group = self.groups.get(group_id)
        client = self.clients.get(client_id)
        if group is None or client is None or client_id not in group._members:
            return
        affected: dict[Client, list[Topic]] = {}
        self._leave_group(fx, group, client, affected)
        self._notify(affected)

    def _op_sub(self, fx: Effects, client_id: str, topic_id: str) -> None:
        client = self._client(client_id)
        topic = self.find_visible(client, topic_id)
        if topic is None:
            raise TopicNotFound(f"topic {topic_id} does not exist or is not visible to this client")
        if topic_id not in client._subs:
            client._subs[topic_id] = topic
            topic._subscribers[client_id] = client
            fx.add(client, "on_sub_to_topic", topic)
            fx.add(topic, "on_new_sub_of_client", client)
        client._mailbox.deliver(self._sys_body([id_list_item("subscribed", (topic,))]))

    def _op_unsub(self, fx: Effects, client_id: str, topic_id: str) -> None:
        client = self._client(client_id)
        topic = self.find_visible(client, topic_id)
        if topic is None:
            raise TopicNotFound(f"topic {topic_id} does not exist or is not visible to this client")
        if topic_id not in client._subs:
            raise NotSubscribed(f"the client is not subscribed to topic {topic_id}")
        self._unsubscribe(fx, client, topic)
        client._mailbox.deliver(self._sys_body([id_list_item("unsubscribed", (topic,))]))

    def _op_pub(self, fx: Effects, topic_id: str, body: bytes) -> None:
        topic = self.topics.get(topic_id)
        if topic is None:
            raise TopicNotFound(f"topic {topic_id} does not exist (removed or never created)")
        subscribers = topic._subscribers
        for client in subscribers.values():
            client._mailbox.deliver(body)
        self.counters.published += 1
        self.counters.delivered += len(subscribers)

    def _op_pub_named(self, fx: Effects, topic_id: str, body: bytes) -> None:
        """Publish to the public topic with this id, creating it first if absent (what a Publisher sends)."""
        self._op_ensure_public_topic(fx, topic_id)
        self._op_pub(fx, topic_id, body)

    def _op_attach(self, fx: Effects, client_id: str, token: str, last_event_id: str | None) -> Sink | None:
        """Attach a stream (held by the process that ``token`` names) and end the one before (takeover)."""
        client = self._client(client_id)
        mailbox = client._mailbox
        previous = mailbox.stream
        if previous is not None:
            mailbox.stream = None
            previous.end(superseded=True)
        client._stream_token = token
        if client._status is not Status.RECEIVING:
            client._status = Status.RECEIVING
            self.waiting.pop(client_id, None)
            fx.add(client, "on_status_change", Status.RECEIVING)
        if not token.startswith(self._process_token + ":"):
            return None  # the stream is held by another process
        first_chunk, resumed = self.first_chunk(client, last_event_id)
        self.counters.streams_opened += 1
        if resumed:
            self.counters.resumes += 1
        elif last_event_id is not None:
            self.counters.resyncs += 1
        stream = self._open_stream(client, first_chunk, mailbox.seq, token)
        mailbox.stream = stream
        log.debug("stream attached for client %s (%s)", short_id(client_id), "resumed" if resumed else "init")
        return stream

    def _op_detach(self, fx: Effects, client_id: str, token: str) -> None:
        """Detach the stream ``token`` names, if it is still the client's; a stream held here ends."""
        client = self.clients.get(client_id)
        if client is None or client._stream_token != token:
            return
        client._stream_token = None
        stream = client._mailbox.stream
        if stream is not None and stream.token == token:
            client._mailbox.stream = None
            # Ended here too: when another process detached it (this one was thought dead), its
            # browser must reconnect, or it would hold a stream that nothing is written to.
            stream.end(superseded=True)
        client._detaches += 1
        self._set_waiting(client)
        fx.add(client, "on_status_change", Status.WAITING)

    # Snapshots: the state a shared log determines -------------------------------------------------

    def export_groups(self) -> dict[str, Any]:
        """Return the public topics and groups, as JSON-ready data."""
        return {
            "public": list(self.public),
            "groups": [
                {"id": g._id, "topics": list(g._topics), "members": list(g._members)} for g in self.groups.values()
            ],
        }

    def export_clients(self, clients: list[Client]) -> list[tuple[dict[str, Any], list[bytes]]]:
        """Return each client's state as JSON-ready data with its replay bodies (as they are).

        A replay buffer is returned itself, not copied, when it holds no more
        than ``replay_size`` bodies: read it before the next operation is applied.
        """
        out = []
        size = self.replay_size
        for c in clients:
            replay = c._mailbox.replay
            kept = (replay if len(replay) <= size else replay[-size:]) if size else []
            data = {
                "id": c._id,
                "receiving": c._status is Status.RECEIVING,
                "token": c._stream_token,
                "detaches": c._detaches,
                "private": list(c._private),
                "groups": list(c._groups),
                "subs": list(c._subs),
                "seq": c._mailbox.seq,
            }
            out.append((data, kept))
        return out

    def import_state(
        self, groups: dict[str, Any], clients: list[tuple[dict[str, Any], list[bytes]]], seq_offset: int = 0
    ) -> list[Sink]:
        """Make the state the one described, reusing the handles of objects that exist by id.

        Objects not in the description are marked removed. ``seq_offset`` is
        added to every client's event counter (its replay buffer then starts
        empty), for a state that replaces another one whose event ids clients
        may have seen. Returns the streams attached here whose client changed,
        so that the caller can resynchronise them.
        """
        now = self._now()
        old_clients, old_topics, old_groups = self.clients, self.topics, self.groups
        self.clients, self.public, self.groups, self.topics, self.waiting = {}, {}, {}, {}, {}

        def topic(topic_id: str, kind: TopicType, owner: Client | None = None, group: Group | None = None) -> Topic:
            existing = old_topics.get(topic_id)
            if existing is None and kind is not TopicType.PRIVATE:
                existing = self._made_topic(Topic(self._owner, topic_id, kind, owner=owner, group=group))
            same = existing is not None and existing._type is kind and existing._owner is owner
            if same and existing is not None and existing._group is group:
                existing._subscribers = {}
                return self._add_topic(existing)
            return self._add_topic(Topic(self._owner, topic_id, kind, owner=owner, group=group))

        for topic_id in groups["public"]:
            self.public[topic_id] = topic(topic_id, TopicType.PUBLIC)
        for data in groups["groups"]:
            group = old_groups.get(data["id"]) or self._made_group(Group(self._owner, data["id"]))
            group._topics, group._members = {}, {}
            self.groups[group._id] = group
            for topic_id in data["topics"]:
                group._topics[topic_id] = topic(topic_id, TopicType.GROUP, group=group)
        resync: list[Sink] = []
        for data, replay in clients:
            client = old_clients.get(data["id"])
            if client is None:
                client = self._new_client(data["id"])
            mailbox = client._mailbox
            if mailbox.stream is not None and (seq_offset or mailbox.seq != data["seq"]):
                resync.append(mailbox.stream)
            mailbox.seq = data["seq"] + seq_offset
            mailbox.replay = [] if seq_offset else list(replay)
            self.clients[client._id] = client
            client._status = Status.RECEIVING if data["receiving"] else Status.WAITING
            if not data["receiving"]:
                client._waiting_since = now
                self.waiting[client._id] = client
            client._stream_token = data["token"]
            client._detaches = data["detaches"]
            if mailbox.stream is not None and mailbox.stream.token != client._stream_token:
                mailbox.stream.end(superseded=True)
                mailbox.stream = None
            client._private, client._groups, client._subs = {}, {}, {}
            for topic_id in data["private"]:
                client._private[topic_id] = topic(topic_id, TopicType.PRIVATE, owner=client)
            for group_id in data["groups"]:
                client._groups[group_id] = self.groups[group_id]
            for topic_id in data["subs"]:
                client._subs[topic_id] = self.topics[topic_id]
        for data in groups["groups"]:
            group = self.groups[data["id"]]
            for client_id in data["members"]:
                group._members[client_id] = self.clients[client_id]
        for client in self.clients.values():  # subscribers in subscription order, as the log built them
            for t in client._subs.values():
                t._subscribers[client._id] = client
        for gone in old_clients.values():
            if gone._id not in self.clients:
                gone._removed = True
                if gone._mailbox.stream is not None:
                    gone._mailbox.stream.end(superseded=True)
                    gone._mailbox.stream = None
        for gone_topic in old_topics.values():
            if gone_topic._id not in self.topics:
                gone_topic._removed = True
        for gone_group in old_groups.values():
            if gone_group._id not in self.groups:
                gone_group._removed = True
        return resync
