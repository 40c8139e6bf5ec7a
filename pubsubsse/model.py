"""The objects users hold: :class:`Client`, :class:`Topic`, :class:`Group` and friends.

These are handles. Their state is guarded by the owning service's lock and is
changed only by :class:`~pubsubsse.service.SSEPubSubService`; every method here
either takes a snapshot under that lock or asks the service to make a change.
See :mod:`pubsubsse.service` for the lock discipline.
"""

from __future__ import annotations

import enum
import re
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from .events import EventAttribute

if TYPE_CHECKING:
    from .core import Mailbox
    from .service import SSEPubSubService
    from .stream import Stream

__all__ = ["Status", "TopicType", "GroupTopic", "Client", "Topic", "Group", "new_id", "check_name", "NAME_RULE"]


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


def short_id(object_id: str) -> str:
    """Return a shortened id that is safe to log (client ids are credentials)."""
    return object_id[:10] + "…"


class Status(str, enum.Enum):
    """Connection status of a client."""

    #: No stream is attached; messages are kept for the client (bounded) until it reconnects.
    WAITING = "waiting"
    #: A stream is attached and messages flow to it as they are published.
    RECEIVING = "receiving"


class TopicType(str, enum.Enum):
    """Kind of a topic, which decides who can see it."""

    #: Seen by every client.
    PUBLIC = "public"
    #: Seen only by the client that owns it.
    PRIVATE = "private"
    #: Seen by the members of the group that holds it.
    GROUP = "group"


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
        "_id",
        "_type",
        "_owner",
        "_group",
        "_subscribers",
        "_removed",
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

    def __init__(
        self,
        service: SSEPubSubService,
        topic_id: str,
        topic_type: TopicType,
        owner: Client | None = None,
        group: Group | None = None,
    ) -> None:
        self._service = service
        self._id = topic_id
        self._type = topic_type
        self._owner = owner
        self._group = group
        self._subscribers: dict[str, Client] = {}
        self._removed = False

    def __repr__(self) -> str:
        return f"<Topic {self._id} {self._type.value}{' removed' if self._removed else ''}>"

    @property
    def id(self) -> str:
        """The topic's id, ``T-…``."""
        return self._id

    @property
    def type(self) -> TopicType:
        """Whether the topic is public, private or a group topic."""
        return self._type

    def get_clients(self) -> dict[str, Client]:
        """Return a snapshot of the subscribers, keyed by client id."""
        with self._service._lock:
            return dict(self._subscribers)

    def is_subscribed(self, client: Client) -> bool:
        """Return whether ``client`` is subscribed to this topic."""
        with self._service._lock:
            return self._subscribers.get(client.id) is client

    def pub(self, data: Any) -> None:
        """Publish ``data`` (any JSON-serialisable value) to every subscriber.

        The value is encoded once, before anything is sent: a value JSON cannot
        represent raises :class:`TypeError` or :class:`ValueError` and nothing is
        sent. Never blocks on a slow or disconnected subscriber. Raises
        :class:`~pubsubsse.errors.TopicNotFound` if the topic was removed.
        """
        self._service._publish(self, data)


class Group:
    """A set of member clients sharing group topics.

    Create groups with :meth:`~pubsubsse.SSEPubSubService.new_group`; never directly.
    """

    __slots__ = (
        "_service",
        "_id",
        "_topics",
        "_members",
        "_removed",
        "_on_new_client",
        "_on_new_group_topic",
        "_on_remove_client",
        "_on_remove_group_topic",
    )

    on_new_client: EventAttribute[Client] = EventAttribute("A client joined the group (``Client``).")
    on_new_group_topic: EventAttribute[Topic] = EventAttribute("A topic was created in the group (``Topic``).")
    on_remove_client: EventAttribute[Client] = EventAttribute("A client left the group (``Client``).")
    on_remove_group_topic: EventAttribute[Topic] = EventAttribute("A topic of the group was removed (``Topic``).")

    def __init__(self, service: SSEPubSubService, group_id: str) -> None:
        self._service = service
        self._id = group_id
        self._topics: dict[str, Topic] = {}
        self._members: dict[str, Client] = {}
        self._removed = False

    def __repr__(self) -> str:
        return f"<Group {self._id}{' removed' if self._removed else ''}>"

    @property
    def id(self) -> str:
        """The group's id, ``G-…``."""
        return self._id

    def get_topics(self) -> dict[str, Topic]:
        """Return a snapshot of the group's topics, keyed by id, in creation order."""
        with self._service._lock:
            return dict(self._topics)

    def get_topic_by_id(self, topic_id: str) -> Topic | None:
        """Return the group topic with this id, or ``None``."""
        return self._service._lookup(lambda: self._topics.get(topic_id))

    def get_clients(self) -> dict[str, Client]:
        """Return a snapshot of the members, keyed by client id."""
        with self._service._lock:
            return dict(self._members)

    def get_client_by_id(self, client_id: str) -> Client | None:
        """Return the member with this id, or ``None``."""
        return self._service._lookup(lambda: self._members.get(client_id))

    def new_topic(self) -> Topic:
        """Create a topic that every member (present and future) can see.

        Raises :class:`~pubsubsse.errors.GroupNotFound` if the group was removed.
        """
        return cast(Topic, self._service._execute("new_group_topic", self._id, new_id("T")))

    def topic(self, name: str) -> Topic:
        """Return the group's topic named ``name``, creating it if absent.

        Its id is ``T-<group>/<name>`` (``T-room-42/chat`` in group
        ``G-room-42``): the same in every process that shares the service, and
        after a restart. Two processes asking at once get one topic, and its
        creation events fire once. Raises :class:`ValueError` for an invalid
        name (see :data:`~pubsubsse.model.NAME_RULE`) and
        :class:`~pubsubsse.errors.GroupNotFound` if the group was removed.
        """
        return cast(Topic, self._service._ensure_named("group_topic", group_topic_id(self._id, name), self._id))

    def remove_topic(self, topic: Topic) -> None:
        """Remove a topic of this group; members subscribed to it are unsubscribed.

        A topic that is not (or no longer) in this group is ignored.
        """
        self._service._execute("remove_group_topic", self._id, topic.id)

    def add_client(self, client: Client) -> None:
        """Make ``client`` a member; it can now see the group's topics.

        Adding a member twice is a no-op. Raises
        :class:`~pubsubsse.errors.ClientNotFound` or
        :class:`~pubsubsse.errors.GroupNotFound` if either was removed.
        """
        self._service._execute("add_group_client", self._id, client.id)

    def remove_client(self, client: Client) -> None:
        """Remove ``client`` from the group and unsubscribe it from the group's topics.

        Removing a client that is not a member is a no-op.
        """
        self._service._execute("remove_group_client", self._id, client.id)


class Client:
    """A subscriber: one browser tab or other consumer of an SSE stream.

    Create clients with :meth:`~pubsubsse.SSEPubSubService.new_client`; never directly.
    The client's id is its credential on the HTTP API: do not log it in full.

    Consume the client's messages without HTTP with :meth:`stream`.
    """

    __slots__ = (
        "_service",
        "_id",
        "_status",
        "_private",
        "_groups",
        "_subs",
        "_removed",
        "_mailbox",
        "_waiting_since",
        "_stream_token",
        "_detaches",
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

    def __init__(self, service: SSEPubSubService, client_id: str, mailbox: Mailbox, now: float) -> None:
        self._service = service
        self._id = client_id
        self._status = Status.WAITING
        self._private: dict[str, Topic] = {}
        self._groups: dict[str, Group] = {}
        self._subs: dict[str, Topic] = {}
        self._removed = False
        self._mailbox = mailbox
        self._waiting_since = now
        #: Which attachment (in whichever process) the client's status refers to.
        self._stream_token: str | None = None
        #: How often a stream of this client has detached; names a WAITING period for expiry.
        self._detaches = 0

    def __repr__(self) -> str:
        return f"<Client {short_id(self._id)} {self._status.value}{' removed' if self._removed else ''}>"

    @property
    def id(self) -> str:
        """The client's id, ``C-…``. It is the client's credential: keep it secret."""
        return self._id

    @property
    def status(self) -> Status:
        """:attr:`Status.RECEIVING` while a stream is attached, else :attr:`Status.WAITING`."""
        return self._status

    def get_public_topics(self) -> dict[str, Topic]:
        """Return a snapshot of the public topics (all clients see them all)."""
        with self._service._lock:
            return dict(self._service._core.public)

    def get_public_topic_by_id(self, topic_id: str) -> Topic | None:
        """Return the public topic with this id, or ``None``."""
        return self._service._lookup(lambda: self._service._core.public.get(topic_id))

    def get_private_topics(self) -> dict[str, Topic]:
        """Return a snapshot of this client's private topics."""
        with self._service._lock:
            return dict(self._private)

    def get_private_topic_by_id(self, topic_id: str) -> Topic | None:
        """Return this client's private topic with this id, or ``None``."""
        return self._service._lookup(lambda: self._private.get(topic_id))

    def get_groups(self) -> dict[str, Group]:
        """Return a snapshot of the groups this client is a member of."""
        with self._service._lock:
            return dict(self._groups)

    def get_group_by_id(self, group_id: str) -> Group | None:
        """Return the group with this id if the client is a member, else ``None``."""
        return self._service._lookup(lambda: self._groups.get(group_id))

    def get_all_topics(self) -> dict[str, Topic]:
        """Return every topic the client can see: public, its groups' and its private ones.

        The order is the protocol's: public topics in creation order, then group
        topics, then private topics.
        """
        with self._service._lock:
            return {t.id: t for t in self._service._core.visible_topics(self)}

    def get_topic_by_id(self, topic_id: str) -> Topic | None:
        """Return the topic with this id if the client can see it, else ``None``."""
        return self._service._lookup(lambda: self._service._core.find_visible(self, topic_id))

    def get_subscribed_topics(self) -> dict[str, Topic]:
        """Return a snapshot of the topics the client is subscribed to."""
        with self._service._lock:
            return dict(self._subs)

    def new_private_topic(self) -> Topic:
        """Create a topic only this client can see.

        Raises :class:`~pubsubsse.errors.ClientNotFound` if the client was removed.
        """
        return cast(Topic, self._service._execute("new_private_topic", self._id, new_id("T")))

    def remove_private_topic(self, topic: Topic) -> bool:
        """Remove one of this client's private topics; return whether this call removed it.

        A topic that is not (or no longer) a private topic of this client is
        ignored, and the answer is ``False``.
        """
        return bool(self._service._execute("remove_private_topic", self._id, topic.id))

    def sub(self, topic: Topic) -> None:
        """Subscribe to ``topic``; the client then receives what is published to it.

        Subscribing twice is allowed: the client is told again that it is
        subscribed, and no event fires. Raises
        :class:`~pubsubsse.errors.TopicNotFound` if the client cannot see the
        topic and :class:`~pubsubsse.errors.ClientNotFound` if it was removed.
        """
        self._service._execute("sub", self._id, topic.id)

    def unsub(self, topic: Topic) -> None:
        """Unsubscribe from ``topic``.

        Raises :class:`~pubsubsse.errors.TopicNotFound` if the client cannot see
        the topic, :class:`~pubsubsse.errors.NotSubscribed` if it is not
        subscribed and :class:`~pubsubsse.errors.ClientNotFound` if it was removed.
        """
        self._service._execute("unsub", self._id, topic.id)

    def stream(self, last_event_id: str | None = None) -> Stream:
        """Attach a stream and return it: the core-level way to consume this client's messages.

        The returned :class:`~pubsubsse.stream.Stream` is an iterator of
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
