"""The service: every state change, and the one lock that guards them.

Lock discipline
===============

There is **one lock per service**, ``SSEPubSubService._lock`` (a plain,
non-reentrant ``threading.Lock``; under gevent monkey patching it is gevent's).
It guards all shared state: the service's registries, the private state of
every :class:`~pubsubsse.model.Client`, :class:`~pubsubsse.model.Topic` and
:class:`~pubsubsse.model.Group`, every client's
:class:`~pubsubsse.stream.Mailbox`, and the ``resync_pending`` and ``detached``
flags of every :class:`~pubsubsse.stream.Stream`.

Rules, which together make deadlock impossible:

1. Every change goes through :meth:`SSEPubSubService._execute`, which takes the
   lock, applies one operation (an ``_op_*`` method) and releases it.
   Snapshots (``get_*``) take the lock only to copy.
2. While holding the service lock, code may take only *leaf* locks: the
   internal lock of a stream's ``queue.Queue`` (when a message is queued). A
   leaf lock is never held while taking the service lock: a stream reader
   returns from ``queue.get()`` before it asks the service to catch up.
3. No user code runs under the lock. Event emissions are collected while the
   change is applied and fired after the lock is released, in the thread or
   greenlet that made the change, so listeners may call back into the API.
   The locks inside :class:`~pubsubsse.events.EventManager` are never held
   while a listener runs.
4. Nothing under the lock blocks: messages are appended to unbounded queues
   with ``put_nowait`` (the bound is enforced by the mailbox, see
   :mod:`pubsubsse.stream`), and nothing writes to a socket.

One reader goes without the lock on purpose: the timer (:meth:`SSEPubSubService._tick`)
copies the client list under it, then walks the copy unlocked, reading a stream's
``last_write`` and a client's stream token. What it does with them is safe on a
stale read: queue a heartbeat, or propose an operation that checks again under
the lock.

Messages to clients are queued while the lock is held, so each client sees
its messages in the same order as the changes that caused them: an update of
a topic never arrives after the client was told it is unsubscribed from it.

Operations are named and take ids, not objects (``_execute("sub", client_id,
topic_id)``), so that a change can be described as data; that is the seam a
multi-process backend plugs into.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .encoding import encode_sys, encode_update, frame, id_list_item, retry_field, topics_item
from .errors import ClientNotFound, GroupNotFound, LimitReached, NotSubscribed, PubSubError, TopicNotFound
from .events import EventAttribute, emit
from .model import Client, Group, GroupTopic, Status, Topic, TopicType, new_id, short_id
from .redis_log import RedisLog
from .stream import CLOSE_MARK, HEARTBEAT_MARK, Mailbox, Stream, Ticker

__all__ = ["SSEPubSubService"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_EVENT_ID_LENGTH = 20
_RECENT_BODIES = 256


class _Counters:
    """What this process has done since it started, for :meth:`SSEPubSubService.stats`. Guarded by the lock."""

    __slots__ = ("published", "delivered", "queue_overflows", "resumes", "resyncs", "streams_opened")

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.queue_overflows = 0
        self.resumes = 0
        self.resyncs = 0
        self.streams_opened = 0


class _Effects:
    """Event emissions collected while the lock is held, fired after it is released."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[tuple[Any, str, Any]] = []

    def add(self, owner: Any, attribute: str, item: Any) -> None:
        self.events.append((owner, attribute, item))

    def fire(self) -> None:
        # Looked up at fire time, not when collected: a listener of an earlier event in the batch
        # (say service.on_new_public_topic) may start listening to a later one (the topic's).
        for owner, attribute, item in self.events:
            emit(owner, attribute, item)


def _parse_event_id(value: str | None) -> int | None:
    """Return the event id a consumer last saw, or ``None`` if it is absent or not one of ours."""
    if not isinstance(value, str) or not (0 < len(value) <= _MAX_EVENT_ID_LENGTH):
        return None
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def _check_number(name: str, value: Any, minimum: float, *, allow_none: bool = False, integer: bool = False) -> None:
    if value is None and allow_none:
        return
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {kind}{' or None' if allow_none else ''}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")


class SSEPubSubService:
    """A publish/subscribe service: clients, public topics, private topics and groups.

    Everything is thread-safe and greenlet-safe. Create the service after
    gevent's monkey patching, if you use gevent (``gunicorn -k gevent`` patches
    before it imports your app, unless you use ``--preload``).

    Options (all keyword-only):

    ``heartbeat`` (seconds, default 15)
        An idle stream gets a ``:`` comment line this often. It keeps proxies
        from closing the connection and is how a dead peer is noticed.
    ``retry`` (seconds, default 3)
        Sent as the SSE ``retry:`` field: how long a browser waits before it
        reconnects after a drop.
    ``replay_size`` (events, default 1000)
        How many recent events are kept per client, for resume
        (``Last-Event-ID``) and for clients that are ``WAITING``. A consumer
        that missed more gets a fresh init message with the full state.
    ``queue_size`` (events, default 1000)
        How many events may wait in an attached stream's queue. A consumer that
        falls further behind is caught up from the replay buffer, or resynced
        with an init message (see :mod:`pubsubsse.stream`); the publisher is
        never slowed down.
    ``client_timeout`` (seconds or ``None``, default 300)
        A client that stays ``WAITING`` (no stream attached) this long is
        removed as by :meth:`remove_client`. ``None`` keeps clients forever.
    ``redis_url`` (default ``None``: this process only)
        ``"redis://host:port/db"``: every process built with the same URL and
        ``redis_key`` shares one service (see :mod:`pubsubsse.redis_log`).
        Changes then take a Redis round trip and raise
        :class:`~pubsubsse.errors.BackendUnavailable` when Redis cannot be
        reached within ``redis_timeout`` seconds (default 5); open streams stay
        open and the process catches up when Redis is back. A service built
        while Redis is down is built anyway (with a logged warning): changes
        and lookups raise ``BackendUnavailable`` until it has loaded the shared
        state, which it retries in the background. Every
        ``redis_snapshot_every`` changes (default 10000) one process stores a
        snapshot and the log is trimmed behind it and behind every live process.
    ``max_clients`` (default 100,000), ``max_private_topics`` (per client,
    default 100), ``max_groups`` (default 10,000), ``max_payload_bytes``
    (encoded size of one published value, default 4 MiB)
        Limits. A change that would exceed one raises
        :class:`~pubsubsse.errors.LimitReached` (429 over HTTP) and changes
        nothing.
    """

    on_new_client = EventAttribute("A client was created (``Client``).")
    on_new_public_topic = EventAttribute("A public topic was created (``Topic``).")
    on_new_group = EventAttribute("A group was created (``Group``).")
    on_remove_client = EventAttribute("A client was removed (``Client``).")
    on_remove_public_topic = EventAttribute("A public topic was removed (``Topic``).")
    on_remove_group = EventAttribute("A group was removed (``Group``).")

    def __init__(
        self,
        *,
        heartbeat: float = 15.0,
        retry: float = 3.0,
        replay_size: int = 1000,
        queue_size: int = 1000,
        client_timeout: float | None = 300.0,
        redis_url: str | None = None,
        redis_key: str = "pubsubsse:log",
        redis_timeout: float = 5.0,
        redis_snapshot_every: int = 10000,
        max_clients: int = 100_000,
        max_private_topics: int = 100,
        max_groups: int = 10_000,
        max_payload_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        _check_number("heartbeat", heartbeat, 0.01)
        _check_number("retry", retry, 0)
        _check_number("replay_size", replay_size, 0, integer=True)
        _check_number("queue_size", queue_size, 1, integer=True)
        _check_number("client_timeout", client_timeout, 0.01, allow_none=True)
        for name, value in [
            ("max_clients", max_clients),
            ("max_private_topics", max_private_topics),
            ("max_groups", max_groups),
            ("max_payload_bytes", max_payload_bytes),
        ]:
            _check_number(name, value, 0, integer=True)
        self._max_clients = max_clients
        self._max_private_topics = max_private_topics
        self._max_groups = max_groups
        self._max_payload_bytes = max_payload_bytes
        self._id = new_id("S")
        #: Names this process's streams, so that a replica can tell its own streams from others'.
        self._process_token = new_id("P")
        self._stream_numbers = itertools.count(1)
        self._heartbeat = float(heartbeat)
        self._retry = float(retry)
        self._replay_size = replay_size
        self._queue_size = queue_size
        self._client_timeout = None if client_timeout is None else float(client_timeout)

        self._lock = threading.Lock()
        self._clients: dict[str, Client] = {}
        self._public: dict[str, Topic] = {}
        self._groups: dict[str, Group] = {}
        #: Every live topic of any type, for lookups by id.
        self._topics: dict[str, Topic] = {}
        #: The ``WAITING`` clients, longest waiting first: expiry looks at the front only.
        self._waiting: dict[str, Client] = {}
        self._counters = _Counters()
        #: Recently encoded system messages, to share identical bodies (see _sys_body).
        self._recent_bodies: dict[bytes, bytes] = {}
        tick = min(1.0, self._heartbeat / 2, (self._client_timeout or 2.0) / 2)
        self._ticker = Ticker(self, tick)
        self._log: RedisLog | None = None
        if redis_url is not None:
            self._log = RedisLog(self, redis_url, redis_key, redis_timeout, redis_snapshot_every)

    def __repr__(self) -> str:
        return f"<SSEPubSubService {self._id} clients={len(self._clients)} topics={len(self._topics)}>"

    @property
    def id(self) -> str:
        """The service's id, ``S-…``."""
        return self._id

    # Public API: changes -------------------------------------------------

    def new_client(self) -> Client:
        """Create a client. It is ``WAITING`` until a stream is attached."""
        return self._execute("new_client", new_id("C"))

    def remove_client(self, client: Client) -> None:
        """Remove a client: it is unsubscribed from everything and leaves its groups.

        Its private topics are removed with it. An attached stream receives a
        final message (no topics, every subscription ended) and then ends.
        Removing a client twice is a no-op.
        """
        self._execute("remove_client", client.id)

    def new_public_topic(self) -> Topic:
        """Create a topic every client can see."""
        return self._execute("new_public_topic", new_id("T"))

    def remove_public_topic(self, topic: Topic) -> None:
        """Remove a public topic; its subscribers are unsubscribed. Unknown topics are ignored."""
        self._execute("remove_public_topic", topic.id)

    def new_group(self) -> Group:
        """Create an empty group."""
        return self._execute("new_group", new_id("G"))

    def remove_group(self, group: Group) -> None:
        """Remove a group with its topics; its members leave it. Unknown groups are ignored."""
        self._execute("remove_group", group.id)

    # Public API: snapshots -----------------------------------------------

    def get_clients(self) -> dict[str, Client]:
        """Return a snapshot of all clients, keyed by id."""
        with self._lock:
            return dict(self._clients)

    def get_client_by_id(self, client_id: str) -> Client | None:
        """Return the client with this id, or ``None``."""
        return self._lookup(lambda: self._clients.get(client_id))

    def get_public_topics(self) -> dict[str, Topic]:
        """Return a snapshot of the public topics, keyed by id, in creation order."""
        with self._lock:
            return dict(self._public)

    def get_public_topic_by_id(self, topic_id: str) -> Topic | None:
        """Return the public topic with this id, or ``None``."""
        return self._lookup(lambda: self._public.get(topic_id))

    def get_groups(self) -> dict[str, Group]:
        """Return a snapshot of all groups, keyed by id."""
        with self._lock:
            return dict(self._groups)

    def get_group_by_id(self, group_id: str) -> Group | None:
        """Return the group with this id, or ``None``."""
        return self._lookup(lambda: self._groups.get(group_id))

    def stats(self) -> dict[str, int]:
        """Return numbers for monitoring, as a new dict of ints.

        Sizes (of the whole service, as this process sees it): ``clients``,
        ``clients_receiving``, ``clients_waiting``, ``public_topics``,
        ``topics`` (of every type), ``groups``; ``streams``: streams attached
        in this process. Counters since this process started:
        ``messages_published`` (publishes applied here), ``messages_delivered``
        (messages given to subscribers by them: queued, written or kept for
        replay), ``streams_opened``, ``resumes`` (streams that started from
        the replay buffer), ``resyncs`` (streams that asked to resume, or fell
        behind, and got a fresh init message instead), ``queue_overflows``
        (deliveries that found a stream's queue full; see
        :mod:`pubsubsse.stream`). The lock is held only to copy the client list
        (about 1 ms at 100,000 clients); counting them takes about 20 ms more
        at that size, so scrape every few seconds, not per request.
        """
        with self._lock:
            clients = list(self._clients.values())
            counters = self._counters
            result = {
                "clients": len(clients),
                "public_topics": len(self._public),
                "topics": len(self._topics),
                "groups": len(self._groups),
                "messages_published": counters.published,
                "messages_delivered": counters.delivered,
                "streams_opened": counters.streams_opened,
                "resumes": counters.resumes,
                "resyncs": counters.resyncs,
                "queue_overflows": counters.queue_overflows,
            }
        # Counted outside the lock (a status read mid-change is as good as one read a moment
        # later), in one pass: a scrape must not hold up publishers.
        receiving = streams = 0
        for client in clients:
            if client._status is Status.RECEIVING:
                receiving += 1
            if client._mailbox.stream is not None:
                streams += 1
        result["clients_receiving"] = receiving
        result["clients_waiting"] = len(clients) - receiving
        result["streams"] = streams
        return result

    def sync(self) -> None:
        """Wait until this process has applied every change made, in any process, before the call.

        A change is visible at once in the process that made it. With
        ``redis_url``, another process sees it after a moment; call this before
        a read that must reflect changes made elsewhere. The lookups
        (``get_*_by_id``) do so by themselves when they find nothing. A no-op
        for a service in this process only.
        """
        if self._log is not None:
            self._log.sync()

    def _lookup(self, find: Callable[[], T | None]) -> T | None:
        """Run ``find`` under the lock; on a miss, catch up with the shared log and try once more."""
        if self._log is not None:
            self._log.check_ready()
        with self._lock:
            found = find()
        if found is None and self._log is not None:
            self._log.sync()
            with self._lock:
                found = find()
        return found

    def close(self) -> None:
        """Stop the background timer and end every attached stream.

        Call it when the server shuts down so open streams end promptly and
        their clients reconnect elsewhere. The service stays usable; a stream
        attached later restarts the timer.
        """
        self._ticker.stop()
        with self._lock:
            streams = [c._mailbox.stream for c in self._clients.values()]
        for stream in streams:
            if stream is not None:
                stream.enqueue(CLOSE_MARK)

    def shutdown(self) -> None:
        """Like :meth:`close`, and with ``redis_url`` also stop following the shared log.

        For processes that are done with the service (tests, scripts); a
        service that was shut down must not be used again.
        """
        self.close()
        if self._log is not None:
            self._log.close()

    # The one place where changes are applied ----------------------------

    def _execute(self, operation: str, *args: Any) -> Any:
        if self._log is not None:
            return self._log.execute(operation, args)
        result, effects = self._apply(operation, args)
        if isinstance(result, PubSubError):
            raise result
        effects.fire()
        return result

    def _apply(self, operation: str, args: tuple[Any, ...]) -> tuple[Any, _Effects]:
        """Apply one operation under the lock; a refused change yields its error instead of raising it.

        Returning the error lets the Redis log's applier hand it to the process that made the
        change; in this process :meth:`_execute` raises it.
        """
        apply: Callable[..., Any] = getattr(self, "_op_" + operation)
        effects = _Effects()
        with self._lock:
            try:
                result = apply(effects, *args)
            except PubSubError as error:
                return error, _Effects()
        return result, effects

    def _publish(self, topic: Topic, data: Any) -> None:
        body = encode_update(topic.id, data)
        if len(body) > self._max_payload_bytes:
            raise LimitReached(f"max_payload_bytes: the encoded message has {len(body)} bytes")
        self._execute("pub", topic.id, body)
        emit(topic, "on_pub", data)

    # Helpers; all of them run under the lock -----------------------------

    def _client(self, client_id: str) -> Client:
        client = self._clients.get(client_id)
        if client is None:
            raise ClientNotFound(f"client {short_id(client_id)} does not exist (removed or never created)")
        return client

    def _group(self, group_id: str) -> Group:
        group = self._groups.get(group_id)
        if group is None:
            raise GroupNotFound(f"group {group_id} does not exist (removed or never created)")
        return group

    def _can_see(self, client: Client, topic: Topic) -> bool:
        if topic._type is TopicType.PUBLIC:
            return True
        if topic._type is TopicType.PRIVATE:
            return topic._owner is client
        return topic._group is not None and topic._group._id in client._groups

    def _find_visible(self, client: Client, topic_id: str) -> Topic | None:
        topic = self._topics.get(topic_id)
        if topic is None or not self._can_see(client, topic):
            return None
        return topic

    def _visible_topics(self, client: Client) -> Iterator[Topic]:
        return itertools.chain(
            self._public.values(),
            (t for g in client._groups.values() for t in g._topics.values()),
            client._private.values(),
        )

    def _init_body(self, client: Client) -> bytes:
        return self._sys_body(
            [
                topics_item(self._visible_topics(client)),
                id_list_item("subscribed", client._subs.values()),
            ]
        )

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
        items = [topics_item(self._visible_topics(client))]
        if unsubscribed:
            items.append(id_list_item("unsubscribed", unsubscribed))
        client._mailbox.deliver(self._sys_body(items))

    def _unsubscribe(self, fx: _Effects, client: Client, topic: Topic) -> None:
        del client._subs[topic._id]
        del topic._subscribers[client._id]
        fx.add(client, "on_unsub_from_topic", topic)
        fx.add(topic, "on_unsub_of_client", client)

    def _typed(self, client: Client, topic: Topic, change: str) -> tuple[Client, str, Any]:
        """Return the typed client event of ``change`` ("new" or "remove") for ``topic``."""
        if topic._type is TopicType.GROUP:
            assert topic._group is not None
            return client, f"on_{change}_group_topic", GroupTopic(topic, topic._group)
        return client, f"on_{change}_{topic._type.value}_topic", topic

    def _gain_topic(self, fx: _Effects, client: Client, topic: Topic) -> None:
        """Fire the events of ``client`` starting to see ``topic``."""
        fx.add(client, "on_new_topic", topic)
        fx.add(*self._typed(client, topic, "new"))
        fx.add(topic, "on_new_client", client)

    def _lose_topic(self, fx: _Effects, client: Client, topic: Topic) -> None:
        """Fire the events of ``client`` no longer seeing ``topic``."""
        fx.add(client, "on_remove_topic", topic)
        fx.add(*self._typed(client, topic, "remove"))
        fx.add(topic, "on_remove_client", client)

    def _add_topic(self, topic: Topic) -> Topic:
        self._topics[topic._id] = topic
        return topic

    def _drop_topic(self, fx: _Effects, topic: Topic, affected: dict[Client, list[Topic]]) -> None:
        """Unregister ``topic``: unsubscribe its subscribers, then fire the events of everyone who saw it.

        ``affected`` collects, per client that saw it, the topics it was unsubscribed from.
        """
        del self._topics[topic._id]
        topic._removed = True
        subscribers = list(topic._subscribers.values())
        for client in subscribers:
            self._unsubscribe(fx, client, topic)
        if topic._type is TopicType.PUBLIC:
            viewers: Iterator[Client] | list[Client] = iter(self._clients.values())
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

    def _leave_group(self, fx: _Effects, group: Group, client: Client, affected: dict[Client, list[Topic]]) -> None:
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

    def _notify(self, affected: dict[Client, list[Topic]]) -> None:
        for client, unsubscribed in affected.items():
            if not client._removed:
                self._send_topics(client, unsubscribed)

    # Operations: one per kind of change; each runs under the lock ---------

    def _op_new_client(self, fx: _Effects, client_id: str) -> Client:
        if len(self._clients) >= self._max_clients:
            log.warning("max_clients (%d) reached; refusing a new client", self._max_clients)
            raise LimitReached(f"max_clients: {self._max_clients} clients exist")
        client = Client(self, client_id, Mailbox(self._replay_size, self._queue_size), time.monotonic())
        self._clients[client_id] = client
        self._waiting[client_id] = client
        fx.add(self, "on_new_client", client)
        for topic in self._public.values():
            fx.add(topic, "on_new_client", client)
        log.debug("client %s created", short_id(client_id))
        return client

    def _op_remove_client(self, fx: _Effects, client_id: str) -> None:
        client = self._clients.pop(client_id, None)
        if client is None:
            return
        self._waiting.pop(client_id, None)
        client._removed = True
        unsubscribed = list(client._subs.values())
        for topic in unsubscribed:
            self._unsubscribe(fx, client, topic)
        for topic in itertools.chain(self._public.values(), client._private.values()):
            self._lose_topic(fx, client, topic)
        for group in list(client._groups.values()):
            self._leave_group(fx, group, client, {})
        for topic in client._private.values():
            del self._topics[topic._id]
            topic._removed = True
        client._private.clear()
        mailbox = client._mailbox
        mailbox.deliver(self._sys_body([topics_item(()), id_list_item("unsubscribed", unsubscribed)]))
        if mailbox.stream is not None:
            mailbox.stream.enqueue(CLOSE_MARK)
        fx.add(self, "on_remove_client", client)
        log.debug("client %s removed", short_id(client_id))

    def _op_expire_client(self, fx: _Effects, client_id: str, detaches: int) -> None:
        # Applied only if the client has not attached (nor detached again) since the proposal.
        client = self._clients.get(client_id)
        if client is not None and client._status is Status.WAITING and client._detaches == detaches:
            log.info("client %s expired after %.0f s without a stream", short_id(client_id), self._client_timeout)
            self._op_remove_client(fx, client_id)

    def _op_new_public_topic(self, fx: _Effects, topic_id: str) -> Topic:
        topic = self._add_topic(Topic(self, topic_id, TopicType.PUBLIC))
        self._public[topic_id] = topic
        fx.add(self, "on_new_public_topic", topic)
        shared_body: bytes | None = None
        for client in self._clients.values():
            self._gain_topic(fx, client, topic)
            if client._groups or client._private:
                self._send_topics(client)
            else:
                if shared_body is None:
                    shared_body = self._sys_body([topics_item(self._public.values())])
                client._mailbox.deliver(shared_body)
        return topic

    def _op_remove_public_topic(self, fx: _Effects, topic_id: str) -> None:
        topic = self._public.pop(topic_id, None)
        if topic is None:
            return
        affected: dict[Client, list[Topic]] = {}
        self._drop_topic(fx, topic, affected)
        self._notify(affected)
        fx.add(self, "on_remove_public_topic", topic)

    def _op_new_private_topic(self, fx: _Effects, client_id: str, topic_id: str) -> Topic:
        client = self._client(client_id)
        if len(client._private) >= self._max_private_topics:
            log.warning("max_private_topics (%d) reached by client %s", self._max_private_topics, short_id(client_id))
            raise LimitReached(f"max_private_topics: the client has {self._max_private_topics} private topics")
        topic = self._add_topic(Topic(self, topic_id, TopicType.PRIVATE, owner=client))
        client._private[topic_id] = topic
        self._gain_topic(fx, client, topic)
        self._send_topics(client)
        return topic

    def _op_remove_private_topic(self, fx: _Effects, client_id: str, topic_id: str) -> None:
        client = self._clients.get(client_id)
        topic = None if client is None else client._private.pop(topic_id, None)
        if client is None or topic is None:
            return
        affected: dict[Client, list[Topic]] = {}
        self._drop_topic(fx, topic, affected)
        self._notify(affected)

    def _op_new_group(self, fx: _Effects, group_id: str) -> Group:
        if len(self._groups) >= self._max_groups:
            log.warning("max_groups (%d) reached; refusing a new group", self._max_groups)
            raise LimitReached(f"max_groups: {self._max_groups} groups exist")
        group = Group(self, group_id)
        self._groups[group_id] = group
        fx.add(self, "on_new_group", group)
        return group

    def _op_remove_group(self, fx: _Effects, group_id: str) -> None:
        group = self._groups.pop(group_id, None)
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
        fx.add(self, "on_remove_group", group)

    def _op_new_group_topic(self, fx: _Effects, group_id: str, topic_id: str) -> Topic:
        group = self._group(group_id)
        topic = self._add_topic(Topic(self, topic_id, TopicType.GROUP, group=group))
        group._topics[topic_id] = topic
        fx.add(group, "on_new_group_topic", topic)
        for client in group._members.values():
            self._gain_topic(fx, client, topic)
            self._send_topics(client)
        return topic

    def _op_remove_group_topic(self, fx: _Effects, group_id: str, topic_id: str) -> None:
        group = self._groups.get(group_id)
        topic = None if group is None else group._topics.pop(topic_id, None)
        if group is None or topic is None:
            return
        affected: dict[Client, list[Topic]] = {}
        self._drop_topic(fx, topic, affected)
        self._notify(affected)
        fx.add(group, "on_remove_group_topic", topic)

    def _op_add_group_client(self, fx: _Effects, group_id: str, client_id: str) -> None:
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

    def _op_remove_group_client(self, fx: _Effects, group_id: str, client_id: str) -> None:
        group = self._groups.get(group_id)
        client = self._clients.get(client_id)
        if group is None or client is None or client_id not in group._members:
            return
        affected: dict[Client, list[Topic]] = {}
        self._leave_group(fx, group, client, affected)
        self._notify(affected)

    def _op_sub(self, fx: _Effects, client_id: str, topic_id: str) -> None:
        client = self._client(client_id)
        topic = self._find_visible(client, topic_id)
        if topic is None:
            raise TopicNotFound(f"topic {topic_id} does not exist or is not visible to this client")
        if topic_id not in client._subs:
            client._subs[topic_id] = topic
            topic._subscribers[client_id] = client
            fx.add(client, "on_sub_to_topic", topic)
            fx.add(topic, "on_new_sub_of_client", client)
        client._mailbox.deliver(self._sys_body([id_list_item("subscribed", (topic,))]))

    def _op_unsub(self, fx: _Effects, client_id: str, topic_id: str) -> None:
        client = self._client(client_id)
        topic = self._find_visible(client, topic_id)
        if topic is None:
            raise TopicNotFound(f"topic {topic_id} does not exist or is not visible to this client")
        if topic_id not in client._subs:
            raise NotSubscribed(f"the client is not subscribed to topic {topic_id}")
        self._unsubscribe(fx, client, topic)
        client._mailbox.deliver(self._sys_body([id_list_item("unsubscribed", (topic,))]))

    def _op_pub(self, fx: _Effects, topic_id: str, body: bytes) -> None:
        topic = self._topics.get(topic_id)
        if topic is None:
            raise TopicNotFound(f"topic {topic_id} does not exist (removed or never created)")
        subscribers = topic._subscribers
        for client in subscribers.values():
            client._mailbox.deliver(body)
        self._counters.published += 1
        self._counters.delivered += len(subscribers)

    # Snapshots of the replicated state (scale-out) -------------------------

    def _export_state(self) -> dict[str, Any]:
        """Return the state the log determines, as JSON-ready data. Called under the lock."""
        return {
            "public": list(self._public),
            "groups": [
                {"id": g._id, "topics": list(g._topics), "members": list(g._members)} for g in self._groups.values()
            ],
            "clients": [
                {
                    "id": c._id,
                    "receiving": c._status is Status.RECEIVING,
                    "token": c._stream_token,
                    "detaches": c._detaches,
                    "private": list(c._private),
                    "groups": list(c._groups),
                    "subs": list(c._subs),
                    "seq": c._mailbox.seq,
                    "replay": [body.decode("utf-8") for body in c._mailbox.replay[-self._replay_size :]],
                }
                for c in self._clients.values()
            ],
        }

    def _clear_state(self) -> None:
        """Forget every client, topic and group, after a load from the shared log failed midway."""
        self._clients.clear()
        self._waiting.clear()
        self._public.clear()
        self._groups.clear()
        self._topics.clear()

    def _import_state(self, state: dict[str, Any]) -> None:
        """Rebuild a fresh service from :meth:`_export_state` output. Called under the lock, before any use."""
        now = time.monotonic()
        for topic_id in state["public"]:
            self._public[topic_id] = self._add_topic(Topic(self, topic_id, TopicType.PUBLIC))
        for data in state["groups"]:
            group = self._groups[data["id"]] = Group(self, data["id"])
            for topic_id in data["topics"]:
                group._topics[topic_id] = self._add_topic(Topic(self, topic_id, TopicType.GROUP, group=group))
        for data in state["clients"]:
            mailbox = Mailbox(self._replay_size, self._queue_size)
            mailbox.seq = data["seq"]
            mailbox.replay = [body.encode("utf-8") for body in data["replay"]]
            client = self._clients[data["id"]] = Client(self, data["id"], mailbox, now)
            client._status = Status.RECEIVING if data["receiving"] else Status.WAITING
            if not data["receiving"]:
                self._waiting[client._id] = client
            client._stream_token = data["token"]
            client._detaches = data["detaches"]
            for topic_id in data["private"]:
                client._private[topic_id] = self._add_topic(Topic(self, topic_id, TopicType.PRIVATE, owner=client))
            for group_id in data["groups"]:
                client._groups[group_id] = self._groups[group_id]
            for topic_id in data["subs"]:
                topic = self._topics[topic_id]
                client._subs[topic_id] = topic
        for data in state["groups"]:
            group = self._groups[data["id"]]
            for client_id in data["members"]:
                group._members[client_id] = self._clients[client_id]
        for client in self._clients.values():  # subscribers in subscription order, as the log built them
            for topic in client._subs.values():
                topic._subscribers[client._id] = client

    # Streams -------------------------------------------------------------

    def _attach(self, client: Client, last_event_id: str | None) -> Stream:
        token = f"{self._process_token}:{next(self._stream_numbers)}"
        # Parsed here, not in the operation: whatever a consumer sent never travels as it is.
        last_id = _parse_event_id(last_event_id)
        stream: Stream = self._execute("attach", client._id, token, None if last_id is None else str(last_id))
        self._ticker.ensure_running()
        return stream

    def _stream_start(self, client: Client, last_event_id: str | None) -> tuple[bytes, bool]:
        """Return the first chunk of a new stream and whether it resumes (else it starts with an init)."""
        mailbox = client._mailbox
        last_id = _parse_event_id(last_event_id)
        events = None if last_id is None else mailbox.since(last_id)
        resumed = events is not None
        if events is None:
            events = [self._init_event(client)]
        pieces = [retry_field(self._retry)]
        for event_id, body in events:
            pieces += frame(event_id, body)
        return b"".join(pieces), resumed

    def _init_event(self, client: Client) -> tuple[int, bytes]:
        # The init message describes the state as of the client's last event and carries that
        # event's id, without taking a new one: a consumer resuming from it needs exactly the
        # events after it, and the ids stay a pure function of the changes (see docs/scale-out.md).
        return client._mailbox.seq, self._init_body(client)

    def _op_attach(self, fx: _Effects, client_id: str, token: str, last_event_id: str | None) -> Stream | None:
        client = self._client(client_id)
        mailbox = client._mailbox
        previous = mailbox.stream
        if previous is not None:
            previous.detached = True
            previous.enqueue(CLOSE_MARK)
            mailbox.stream = None
        client._stream_token = token
        if client._status is not Status.RECEIVING:
            client._status = Status.RECEIVING
            self._waiting.pop(client_id, None)
            fx.add(client, "on_status_change", Status.RECEIVING)
        if not token.startswith(self._process_token + ":"):
            return None  # the stream is held by another process
        first_chunk, resumed = self._stream_start(client, last_event_id)
        self._counters.streams_opened += 1
        if resumed:
            self._counters.resumes += 1
        elif last_event_id is not None:
            self._counters.resyncs += 1
        stream = Stream(self, client, first_chunk, mailbox.seq, token)
        mailbox.stream = stream
        log.debug("stream attached for client %s (%s)", short_id(client_id), "resumed" if resumed else "init")
        return stream

    def _catch_up(self, stream: Stream) -> list[bytes]:
        with self._lock:
            stream.resync_pending = False
            if stream.detached:
                return []
            mailbox = stream.client._mailbox
            events = mailbox.since(stream.cursor)
            if events is None:
                log.info("client %s fell behind its replay buffer; resyncing", short_id(stream.client._id))
                self._counters.resyncs += 1
                events = [self._init_event(stream.client)]
            stream.cursor = mailbox.seq
        pieces: list[bytes] = []
        for event_id, body in events:
            pieces += frame(event_id, body)
        return pieces

    def _detach(self, stream: Stream) -> None:
        with self._lock:
            if stream.detached:
                return
            stream.detached = True
        with contextlib.suppress(PubSubError):
            self._execute("detach", stream.client._id, stream.token)

    def _op_detach(self, fx: _Effects, client_id: str, token: str) -> None:
        client = self._clients.get(client_id)
        if client is None or client._stream_token != token:
            return
        client._stream_token = None
        stream = client._mailbox.stream
        if stream is not None and stream.token == token:
            client._mailbox.stream = None
        client._status = Status.WAITING
        client._detaches += 1
        client._waiting_since = time.monotonic()
        self._waiting.pop(client_id, None)  # to the end: the waiting list stays in waiting order
        self._waiting[client_id] = client
        fx.add(client, "on_status_change", Status.WAITING)

    def _tick(self, now: float) -> None:
        """Queue heartbeats, detach streams of dead processes, propose expiry of long-waiting clients.

        Only two copies are made under the lock (the client list and the front of the waiting
        list); the walk over every client runs without it and yields every 1,000 clients, so at
        100,000 clients neither publishers nor, under gevent, the worker's other greenlets wait
        for it.
        """
        expired: list[tuple[str, int]] = []
        with self._lock:
            clients = list(self._clients.values())
            if self._client_timeout is not None:
                for client in self._waiting.values():
                    if now - client._waiting_since < self._client_timeout:
                        break
                    expired.append((client._id, client._detaches))
        dead = self._log.dead_processes if self._log is not None else frozenset()
        orphaned: list[tuple[str, str]] = []
        heartbeat = self._heartbeat
        for done, client in enumerate(clients, 1):
            # Reads without the lock may be stale by a moment: a heartbeat queued on a stream that
            # just ended is never read, and a stale token makes the detach below a no-op.
            stream = client._mailbox.stream
            if stream is not None:
                if now - stream.last_write >= heartbeat and stream.queue.empty():
                    stream.enqueue(HEARTBEAT_MARK)
            elif dead and client._stream_token is not None and client._stream_token.partition(":")[0] in dead:
                # Its stream was held by a process that died without detaching it.
                orphaned.append((client._id, client._stream_token))
            if done % 1000 == 0:
                time.sleep(0)
        for client_id, token in orphaned:
            with contextlib.suppress(PubSubError):
                self._execute("detach", client_id, token)
        for client_id, detaches in expired:
            with contextlib.suppress(PubSubError):
                self._execute("expire_client", client_id, detaches)
