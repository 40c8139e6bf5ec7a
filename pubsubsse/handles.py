"""The objects users hold: :class:`Client`, :class:`Topic`, :class:`Group` and friends.

These are handles: thin views, each the service and the record the state machine
keeps (``core/_records``), with the object's event managers. The state is guarded
by the service's lock and changed only by the state machine; every method here
either reads the record under that lock or asks the service to make a change.
See :mod:`pubsubsse.service` for the lock discipline.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from pubsubsse.core import _history, _presence
from pubsubsse.core._records import ClientRecord, GroupRecord, Status, TopicInGroup, TopicRecord, TopicType, short_id
from pubsubsse.errors import BackendUnavailable, TopicNotFound
from pubsubsse.events import EventAttribute

if TYPE_CHECKING:
    from pubsubsse.service import SSEPubSubService
    from pubsubsse.streams._stream import Stream

_V = TypeVar("_V")


def _view(record: Any) -> Any:
    """Return the handle of ``record``, or ``None``."""
    return None if record is None else record.view


def _views(records: dict[str, Any]) -> dict[str, Any]:
    """Return the handles of ``records``, by the same keys."""
    return {key: record.view for key, record in records.items()}


__all__ = [
    "Status",
    "TopicType",
    "GroupTopic",
    "Client",
    "Topic",
    "Group",
    "new_id",
    "check_name",
    "NAME_RULE",
    "MAX_USER_LENGTH",
    "short_id",
]


def new_id(prefix: str) -> str:
    """Return a fresh id: ``prefix``, a dash and a random UUID4."""
    return f"{prefix}-{uuid.uuid4()}"


#: What a topic or group name may be made of.
NAME_RULE = "1 to 128 characters from A-Z, a-z, 0-9 and . _ : -"
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid topic or group name; else raise :class:`ValueError` naming the rule."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"invalid name {name!r}: a name is {NAME_RULE}")
    return name


#: The longest :attr:`Client.user` accepted.
MAX_USER_LENGTH = 256


def check_user(user: object) -> str | None:
    """Return ``user`` if it is ``None`` or a valid user name (1 to :data:`MAX_USER_LENGTH` characters)."""
    if user is not None and not (isinstance(user, str) and 0 < len(user) <= MAX_USER_LENGTH):
        raise ValueError(f"invalid user {user!r}: a user is a string of 1 to {MAX_USER_LENGTH} characters, or None")
    return user


def named_id(prefix: str, name: str) -> str:
    """Return the id of the named object: ``T-orders``, ``G-room-42``.

    The id itself is accepted too (``named_id("T", "T-orders") == "T-orders"``): the wire, the
    browser and :class:`~pubsubsse.Publisher` all use ids, so an id pasted where a name goes
    must mean that object, not one named ``T-T-orders``.
    """
    if isinstance(name, str) and name.startswith(prefix + "-"):
        name = name[len(prefix) + 1 :]
    return f"{prefix}-{check_name(name)}"


def group_topic_id(group_id: str, name: str) -> str:
    """Return the id of a group's named topic: ``T-room-42/chat`` for group ``G-room-42``.

    The ``/`` cannot occur in a name, so these ids never meet the ids of named public topics.
    The topic's id is accepted for its name, as in :func:`named_id`.
    """
    prefix = f"T-{group_id[2:]}/"
    if isinstance(name, str) and name.startswith(prefix):
        name = name[len(prefix) :]
    return prefix + check_name(name)


class GroupTopic(NamedTuple):
    """An immutable (topic, group) pair, the item of the group-topic events of a client."""

    topic: Topic
    group: Group


class Topic:
    """A topic: something clients subscribe to and publishers publish to.

    Create topics with :meth:`~pubsubsse.SSEPubSubService.new_public_topic`,
    :meth:`Client.new_private_topic` or :meth:`Group.new_topic`; never directly.
    """

    __slots__ = (
        "_service",
        "_record",
        "_on_new_client",
        "_on_new_sub_of_client",
        "_on_pub",
        "_on_remove_client",
        "_on_unsub_of_client",
    )

    on_new_client: EventAttribute[Client] = EventAttribute("A client can now see this topic (``Client``).")
    on_new_sub_of_client: EventAttribute[Client] = EventAttribute("A client subscribed to this topic (``Client``).")
    on_pub: EventAttribute[Any] = EventAttribute("Data was published to this topic (the data as given to :meth:`pub`).")
    on_remove_client: EventAttribute[Client] = EventAttribute("A client can no longer see this topic (``Client``).")
    on_unsub_of_client: EventAttribute[Client] = EventAttribute(
        "A client unsubscribed from this topic, explicitly or implicitly (``Client``)."
    )

    def __init__(self, service: SSEPubSubService, record: TopicRecord) -> None:
        self._service = service
        self._record = record

    def __repr__(self) -> str:
        record = self._record
        return f"<Topic {record.id} {record.type.value}{' removed' if record.removed else ''}>"

    @property
    def id(self) -> str:
        """The topic's id, ``T-…``."""
        return self._record.id

    @property
    def type(self) -> TopicType:
        """Whether the topic is public, private or a group topic."""
        return self._record.type

    def get_clients(self) -> dict[str, Client]:
        """Return a snapshot of the subscribers, keyed by client id."""
        with self._service._lock:
            return _views(self._record.subscribers)

    def is_subscribed(self, client: Client) -> bool:
        """Return whether ``client`` is subscribed to this topic."""
        with self._service._lock:
            return self._record.subscribers.get(client.id) is client._record

    def subscriber_count(self) -> int:
        """Return how many clients are subscribed (connected or not): exact, in any process, O(1).

        With a shared backend, it counts the changes this process has applied;
        :meth:`~pubsubsse.SSEPubSubService.sync` first to include those just made elsewhere.
        """
        return len(self._record.subscribers)

    def subscribers(self) -> list[Client]:
        """Return the subscribed clients, in subscription order."""
        with self._service._lock:
            return [client.view for client in self._record.subscribers.values()]

    def present_users(self) -> list[str]:
        """Return the users (:attr:`Client.user`) with a subscriber connected now, sorted, each once.

        A subscriber is connected while a stream of it is attached, in any
        process. Three tabs of one user count once; clients without a user
        are not counted. O(users) with live presence, O(subscribers) without.
        """
        with self._service._lock:
            return _presence.present_users(self._record)

    def connected_count(self) -> int:
        """Return how many subscribers have a stream attached now, in any process (tabs, with a user or not).

        O(1) with live presence, O(subscribers) without.
        """
        with self._service._lock:
            return _presence.connected_count(self._record)

    @property
    def history(self) -> int | None:
        """How many messages the topic keeps (``None``: the service's ``replay_size``)."""
        return self._record.history_size

    @property
    def ttl(self) -> float | None:
        """Seconds the topic keeps a message, and lasts once closed (``None``: no limit)."""
        return self._record.ttl

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ended the topic."""
        return bool(self._record.closed)

    def close(self) -> None:
        """End the topic: subscribers get a ``closed`` message, publishes raise :class:`~pubsubsse.errors.TopicClosed`.

        What the topic keeps stays, so a subscription from the start still
        gets all of it, then the ``closed`` element; with a ``ttl``, the topic
        is removed that many seconds later. Closing twice is a no-op. Raises
        :class:`~pubsubsse.errors.TopicNotFound` if the topic was removed.
        """
        self._service._execute("close_topic", self._record.id)

    @property
    def has_presence(self) -> bool:
        """Whether live presence is on: subscribers are told who comes and goes (see ``presence=`` of the factories)."""
        return self._record.presence is not None

    def pub(self, data: Any, *, transaction: Any = None) -> None:
        """Publish ``data`` (any JSON-serialisable value) to every subscriber.

        The value is encoded once, before anything is sent: a value JSON cannot
        represent raises :class:`TypeError` or :class:`ValueError` and nothing is
        sent. Never blocks on a slow or disconnected subscriber. Raises
        :class:`~pubsubsse.errors.TopicNotFound` if the topic was removed and
        :class:`~pubsubsse.errors.TopicClosed` if it was closed.

        ``transaction`` (a psycopg 3 connection or cursor, or Django's
        ``connection``) writes the publish into that database transaction: it
        is delivered if and only if the transaction commits, in commit order,
        also if this process dies right after the commit. It needs the
        service's :class:`~pubsubsse.backends.postgres.PostgresBackend` on that
        database (:class:`~pubsubsse.errors.NotTransactional` otherwise) and
        fires no ``on_pub`` event (the transaction may roll back).
        """
        self._service._publish(self, data, transaction)


class Group:
    """A set of member clients sharing group topics.

    Create groups with :meth:`~pubsubsse.SSEPubSubService.new_group`; never directly.
    """

    __slots__ = (
        "_service",
        "_record",
        "_on_new_client",
        "_on_new_group_topic",
        "_on_remove_client",
        "_on_remove_group_topic",
    )

    on_new_client: EventAttribute[Client] = EventAttribute("A client joined the group (``Client``).")
    on_new_group_topic: EventAttribute[Topic] = EventAttribute("A topic was created in the group (``Topic``).")
    on_remove_client: EventAttribute[Client] = EventAttribute("A client left the group (``Client``).")
    on_remove_group_topic: EventAttribute[Topic] = EventAttribute("A topic of the group was removed (``Topic``).")

    def __init__(self, service: SSEPubSubService, record: GroupRecord) -> None:
        self._service = service
        self._record = record

    def __repr__(self) -> str:
        return f"<Group {self._record.id}{' removed' if self._record.removed else ''}>"

    @property
    def id(self) -> str:
        """The group's id, ``G-…``."""
        return self._record.id

    def get_topics(self) -> dict[str, Topic]:
        """Return a snapshot of the group's topics, keyed by id, in creation order."""
        with self._service._lock:
            return _views(self._record.topics)

    def get_topic_by_id(self, topic_id: str) -> Topic | None:
        """Return the group topic with this id, or ``None``."""
        return self._service._lookup(lambda: _view(self._record.topics.get(topic_id)))

    def get_clients(self) -> dict[str, Client]:
        """Return a snapshot of the members, keyed by client id."""
        with self._service._lock:
            return _views(self._record.members)

    def get_client_by_id(self, client_id: str) -> Client | None:
        """Return the member with this id, or ``None``."""
        return self._service._lookup(lambda: _view(self._record.members.get(client_id)))

    def new_topic(self, *, presence: bool = False, history: int | None = None, ttl: float | None = None) -> Topic:
        """Create a topic that every member (present and future) can see.

        ``presence``, ``history`` and ``ttl`` as for
        :meth:`~pubsubsse.SSEPubSubService.public_topic`. Raises
        :class:`~pubsubsse.errors.GroupNotFound` if the group was removed.
        """
        check_history(history, ttl)
        topic = cast(Topic, self._service._execute("new_group_topic", self._record.id, new_id("T")))
        return configure(topic, presence or None, history, ttl)

    def topic(
        self, name: str, *, presence: bool | None = None, history: int | None = None, ttl: float | None = None
    ) -> Topic:
        """Return the group's topic named ``name``, creating it if absent.

        Its id is ``T-<group>/<name>`` (``T-room-42/chat`` in group
        ``G-room-42``): the same in every process that shares the service, and
        after a restart. Two processes asking at once get one topic, and its
        creation events fire once. ``presence``, ``history`` and ``ttl`` as for
        :meth:`~pubsubsse.SSEPubSubService.public_topic`. Raises :class:`ValueError` for an invalid
        name (see :data:`~pubsubsse.handles.NAME_RULE`) and
        :class:`~pubsubsse.errors.GroupNotFound` if the group was removed.
        """
        check_history(history, ttl)
        group_id = self._record.id
        topic = cast(Topic, self._service._ensure_named("group_topic", group_topic_id(group_id, name), group_id))
        return configure(topic, presence, history, ttl)

    def remove_topic(self, topic: Topic) -> None:
        """Remove a topic of this group; members subscribed to it are unsubscribed.

        A topic that is not (or no longer) in this group is ignored.
        """
        self._service._execute("remove_group_topic", self._record.id, topic.id)

    def add_client(self, client: Client) -> None:
        """Make ``client`` a member; it can now see the group's topics.

        Adding a member twice is a no-op. Raises
        :class:`~pubsubsse.errors.ClientNotFound` or
        :class:`~pubsubsse.errors.GroupNotFound` if either was removed.
        """
        self._service._execute("add_group_client", self._record.id, client.id)

    def remove_client(self, client: Client) -> None:
        """Remove ``client`` from the group and unsubscribe it from the group's topics.

        Removing a client that is not a member is a no-op.
        """
        self._service._execute("remove_group_client", self._record.id, client.id)


class Client:
    """A subscriber: one browser tab or other consumer of an SSE stream.

    Create clients with :meth:`~pubsubsse.SSEPubSubService.new_client`; never directly.
    The client's id is its credential on the HTTP API: do not log it in full.

    Consume the client's messages without HTTP with :meth:`stream`.
    """

    __slots__ = (
        "_service",
        "_record",
        "_on_status_change",
        "_on_new_topic",
        "_on_new_public_topic",
        "_on_new_private_topic",
        "_on_new_group_topic",
        "_on_new_group",
        "_on_sub_to_topic",
        "_on_remove_topic",
        "_on_remove_public_topic",
        "_on_remove_private_topic",
        "_on_remove_group_topic",
        "_on_remove_group",
        "_on_unsub_from_topic",
    )

    on_status_change: EventAttribute[Status] = EventAttribute("The connection status changed (the new ``Status``).")
    on_new_topic: EventAttribute[Topic] = EventAttribute("The client can see a new topic of any type (``Topic``).")
    on_new_public_topic: EventAttribute[Topic] = EventAttribute("A public topic was created (``Topic``).")
    on_new_private_topic: EventAttribute[Topic] = EventAttribute(
        "A private topic of this client was created (``Topic``)."
    )
    on_new_group_topic: EventAttribute[GroupTopic] = EventAttribute(
        "The client can see a new group topic (``GroupTopic``)."
    )
    on_new_group: EventAttribute[Group] = EventAttribute("The client joined a group (``Group``).")
    on_sub_to_topic: EventAttribute[Topic] = EventAttribute("The client subscribed to a topic (``Topic``).")
    on_remove_topic: EventAttribute[Topic] = EventAttribute(
        "The client can no longer see a topic of any type (``Topic``)."
    )
    on_remove_public_topic: EventAttribute[Topic] = EventAttribute("A public topic was removed (``Topic``).")
    on_remove_private_topic: EventAttribute[Topic] = EventAttribute(
        "A private topic of this client was removed (``Topic``)."
    )
    on_remove_group_topic: EventAttribute[GroupTopic] = EventAttribute(
        "The client can no longer see a group topic (``GroupTopic``)."
    )
    on_remove_group: EventAttribute[Group] = EventAttribute("The client left a group (``Group``).")
    on_unsub_from_topic: EventAttribute[Topic] = EventAttribute(
        "The client unsubscribed from a topic, explicitly or implicitly (``Topic``)."
    )

    def __init__(self, service: SSEPubSubService, record: ClientRecord) -> None:
        self._service = service
        self._record = record

    def __repr__(self) -> str:
        record = self._record
        return f"<Client {short_id(record.id)} {record.status.value}{' removed' if record.removed else ''}>"

    @property
    def id(self) -> str:
        """The client's id, ``C-…``. It is the client's credential: keep it secret."""
        return self._record.id

    @property
    def user(self) -> str | None:
        """Who the client is for, as given to :meth:`~pubsubsse.SSEPubSubService.new_client` (or ``None``)."""
        return self._record.user

    @property
    def status(self) -> Status:
        """:attr:`Status.RECEIVING` while a stream is attached, else :attr:`Status.WAITING`."""
        return self._record.status

    def get_public_topics(self) -> dict[str, Topic]:
        """Return a snapshot of the public topics (all clients see them all)."""
        with self._service._lock:
            return _views(self._service._core.public)

    def get_public_topic_by_id(self, topic_id: str) -> Topic | None:
        """Return the public topic with this id, or ``None``."""
        return self._service._lookup(lambda: _view(self._service._core.public.get(topic_id)))

    def get_private_topics(self) -> dict[str, Topic]:
        """Return a snapshot of this client's private topics."""
        with self._service._lock:
            return _views(self._record.private)

    def get_private_topic_by_id(self, topic_id: str) -> Topic | None:
        """Return this client's private topic with this id, or ``None``."""
        return self._service._lookup(lambda: _view(self._record.private.get(topic_id)))

    def get_groups(self) -> dict[str, Group]:
        """Return a snapshot of the groups this client is a member of."""
        with self._service._lock:
            return _views(self._record.groups)

    def get_group_by_id(self, group_id: str) -> Group | None:
        """Return the group with this id if the client is a member, else ``None``."""
        return self._service._lookup(lambda: _view(self._record.groups.get(group_id)))

    def get_all_topics(self) -> dict[str, Topic]:
        """Return every topic the client can see: public, its groups' and its private ones.

        The order is the protocol's: public topics in creation order, then group
        topics, then private topics.
        """
        with self._service._lock:
            return {t.id: t.view for t in self._service._core.visible_topics(self._record)}

    def get_topic_by_id(self, topic_id: str) -> Topic | None:
        """Return the topic with this id if the client can see it, else ``None``."""
        return self._service._lookup(lambda: _view(self._service._core.find_visible(self._record, topic_id)))

    def get_subscribed_topics(self) -> dict[str, Topic]:
        """Return a snapshot of the topics the client is subscribed to."""
        with self._service._lock:
            return _views(self._record.subs)

    def new_private_topic(self) -> Topic:
        """Create a topic only this client can see.

        Raises :class:`~pubsubsse.errors.ClientNotFound` if the client was removed.
        """
        return cast(Topic, self._service._execute("new_private_topic", self._record.id, new_id("T")))

    def remove_private_topic(self, topic: Topic) -> bool:
        """Remove one of this client's private topics; return whether this call removed it.

        A topic that is not (or no longer) a private topic of this client is
        ignored, and the answer is ``False``.
        """
        return bool(self._service._execute("remove_private_topic", self._record.id, topic.id))

    def sub(self, topic: Topic, *, since: str | None = None) -> None:
        """Subscribe to ``topic``; the client then receives what is published to it.

        ``since="start"`` also sends every value the topic still keeps (its
        history, see ``history=`` of the factories), in order, in the message
        that says the client is subscribed: a job's output so far, then the
        rest as it comes, each value once. Subscribing twice is allowed: the
        client is told again that it is subscribed (with the history again, for
        ``since="start"``), and no event fires. Raises
        :class:`~pubsubsse.errors.TopicNotFound` if the client cannot see the
        topic, :class:`~pubsubsse.errors.ClientNotFound` if it was removed and
        :class:`ValueError` for another ``since``.
        """
        if since not in (None, "start"):
            raise ValueError(f'since must be None or "start", got {since!r}')
        self._service._execute("sub" if since is None else "sub_start", self._record.id, topic.id)

    def unsub(self, topic: Topic) -> None:
        """Unsubscribe from ``topic``.

        Raises :class:`~pubsubsse.errors.TopicNotFound` if the client cannot see
        the topic, :class:`~pubsubsse.errors.NotSubscribed` if it is not
        subscribed and :class:`~pubsubsse.errors.ClientNotFound` if it was removed.
        """
        self._service._execute("unsub", self._record.id, topic.id)

    def stream(self, last_event_id: str | None = None) -> Stream:
        """Attach a stream and return it: the core-level way to consume this client's messages.

        The returned ``pubsubsse.streams._stream.Stream`` is an iterator of
        ready-to-send SSE byte chunks (the first one starts with the ``retry:``
        field). The HTTP layer wraps it in a response; tests and non-Flask
        servers can iterate it directly. Attaching sets the status to
        ``RECEIVING`` and ends any stream attached before (takeover). Close the
        stream (or exhaust it) to detach; the status returns to ``WAITING``.

        ``last_event_id`` is the id of the last event the consumer received.
        When every message after it is still held, they are replayed and no
        init message is sent; otherwise the stream starts with a full init
        message. Raises :class:`~pubsubsse.errors.ClientNotFound` if the
        client was removed.
        """
        return self._service._attach(self, last_event_id)


def check_history(history: int | None, ttl: float | None) -> None:
    """Raise :class:`ValueError` unless ``history`` and ``ttl`` are valid topic history settings (or ``None``)."""
    if history is not None and (
        isinstance(history, bool) or not isinstance(history, int) or not 0 <= history <= _history.MAX_HISTORY
    ):
        raise ValueError(f"history must be a number of messages from 0 to {_history.MAX_HISTORY}, got {history!r}")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 <= ttl < 1e12):
        raise ValueError(f"ttl must be a number of seconds (0: no limit) or None, got {ttl!r}")


def configure(
    topic: Topic, presence: bool | None = None, history: int | None = None, ttl: float | None = None
) -> Topic:
    """Give a topic these settings where they differ (``None``: leave it as it is); return the topic.

    The callers check ``history`` and ``ttl`` (:func:`check_history`) before they make the topic.
    """
    record = topic._record
    size = record.history_size if history is None else history
    seconds = record.ttl if ttl is None else (float(ttl) or None)
    if (size, seconds) != (record.history_size, record.ttl):
        _change_setting(topic, "set_history", (topic.id, -1 if size is None else size, seconds or 0))
    if presence is not None and topic.has_presence is not bool(presence):
        _change_setting(topic, "set_presence", (topic.id, bool(presence)))
    return topic


def topic_named(service: SSEPubSubService, topic: str) -> Topic:
    """Return the topic with the id ``topic``, or the public topic named ``topic`` (made if absent)."""
    # Found by its id first: creating it is a round trip to a shared log, taken only if absent.
    topic_id = topic if "/" in topic else named_id("T", topic)
    existing = service._lookup(lambda: _view(service._core.topics.get(topic_id)))
    if existing is None:
        if "/" in topic:
            raise TopicNotFound(f"topic {topic} does not exist (removed or never created)")
        existing = service.public_topic(topic_id)
    return cast(Topic, existing)


def _change_setting(topic: Topic, operation: str, args: tuple[Any, ...]) -> None:
    service = topic._service
    try:
        service._execute(operation, *args)
    except BackendUnavailable:  # a topic declared while the shared log is down: set once it answers
        if not service.backend.shared:
            raise
        service.backend.execute_eventually(operation, args)


def make_handle(service: SSEPubSubService, record: ClientRecord | TopicRecord | GroupRecord) -> Client | Topic | Group:
    """Make the handle of a record the state machine just created."""
    if isinstance(record, ClientRecord):
        return Client(service, record)
    if isinstance(record, TopicRecord):
        return Topic(service, record)
    return Group(service, record)


def present(item: Any) -> Any:
    """Return what users get for ``item``: a record's handle, a group topic's pair of handles."""
    if isinstance(item, (ClientRecord, TopicRecord, GroupRecord)):
        return item.view
    if isinstance(item, TopicInGroup):
        return GroupTopic(item.topic.view, item.group.view)
    return item
