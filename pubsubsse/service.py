"""The service: the thin, documented front that locks, dispatches and serves streams.

:class:`SSEPubSubService` owns a ``pubsubsse.core._engine.Core`` (the state
machine: registries, visibility rules, operations and their messages) and a
:class:`~pubsubsse.backends.Backend` (where changes go: applied at once in
this process, or appended to a log that every process applies in order). Its
public methods describe each change as an operation and hand it to the
backend; the backend applies it through :meth:`~pubsubsse.SSEPubSubService.apply`, under
the lock.

Lock discipline
===============

There is **one lock per service**, ``SSEPubSubService._lock`` (a plain,
non-reentrant ``threading.Lock``; under gevent monkey patching it is gevent's).
It guards all shared state: the core's registries and every record of a
client, topic or group (``core/_records``: what the handles
:class:`~pubsubsse.Client`, :class:`~pubsubsse.Topic` and
:class:`~pubsubsse.Group` show, a topic's history, a client's journal and
attached stream included), and the ``resync_pending``, ``detached`` and ``cursor`` fields of
every :class:`~pubsubsse.Stream`.

Rules, which together make deadlock impossible:

1. Every change is applied by :meth:`~pubsubsse.SSEPubSubService.apply`, which takes the
   lock, applies one operation and releases it. Snapshots (``get_*``) take the
   lock only to copy.
2. While holding the service lock, code may touch only *leaf* locks: it
   releases the lock a stream's reader waits on (``pubsubsse.streams._stream.EventQueue``,
   when a message is queued) and takes the internal lock of a multiplexed stream's
   ready queue queue (``pubsubsse.streams._multiplex``). A leaf lock is never held while
   taking the service lock: a stream reader returns from its wait before it
   asks the service to catch up.
3. No user code runs under the lock. Event emissions are collected while the
   change is applied and fired after the lock is released, in the thread or
   greenlet that made the change, so listeners may call back into the API.
   The locks inside :class:`~pubsubsse.events.EventManager` are never held
   while a listener runs.
4. Nothing under the lock blocks and nothing under it does I/O: messages are
   appended to unbounded queues with ``put_nowait`` (the bound is enforced by
   the stream, see ``pubsubsse.streams._stream``), nothing writes to a socket, and
   no backend round trip happens with the lock held.

One reader goes without the lock on purpose: the timer (``Attachments.tick`` in ``_attachments``)
copies the client list under it, then walks the copy unlocked, reading a stream's
``last_write`` and a client's stream token. What it does with them is safe on a
stale read: queue a heartbeat, or propose an operation that checks again under
the lock.

Messages to clients are queued while the lock is held, so each client sees
its messages in the same order as the changes that caused them: an update of
a topic never arrives after the client was told it is unsubscribed from it.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from pubsubsse._attachments import Attachments
from pubsubsse.backends.base import Backend, InProcessBackend, StateItem
from pubsubsse.core import _state
from pubsubsse.core._engine import Core, Effects, count_clients, numbers, parse_event_id
from pubsubsse.core._messages import JsonDumps, encode_update
from pubsubsse.core._operations import apply as apply_operation
from pubsubsse.core._records import AttachPlan
from pubsubsse.errors import BackendUnavailable, TopicClosed, TopicNotFound
from pubsubsse.events import EventAttribute, emit
from pubsubsse.handles import (
    Client,
    Group,
    Topic,
    _view,
    _views,
    check_history,
    check_user,
    configure,
    make_handle,
    named_id,
    new_id,
    present,
    topic_named,
)
from pubsubsse.streams._stream import Stream, Timer

__all__ = ["SSEPubSubService"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _check_number(name: str, value: Any, minimum: float, *, allow_none: bool = False, integer: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and isinstance(value, float)):
        kind = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {kind}{' or None' if allow_none else ''}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")


def _check_options(options: dict[str, Any]) -> None:
    """Raise for an option of :class:`SSEPubSubService` out of range or of the wrong type."""
    _check_number("heartbeat", options["heartbeat"], 0.01)
    json_dumps = options["json_dumps"]
    if json_dumps is not None and not callable(json_dumps):
        raise TypeError(f"json_dumps must be a callable(value) -> str | bytes, got {json_dumps!r}")
    _check_number("retry", options["retry"], 0)
    _check_number("replay_size", options["replay_size"], 0, integer=True)
    _check_number("queue_size", options["queue_size"], 1, integer=True)
    _check_number("client_timeout", options["client_timeout"], 0.01, allow_none=True)
    for name in ("max_clients", "max_private_topics", "max_groups", "max_payload_bytes"):
        _check_number(name, options[name], 0, integer=True)
    backend = options["backend"]
    if backend is not None and not isinstance(backend, Backend):
        raise TypeError(f"backend must be a pubsubsse.backends.Backend, got {backend!r}")


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
    ``replay_size`` (messages, default 1000)
        How many recent messages each topic keeps, for resume
        (``Last-Event-ID``) and for clients that are ``WAITING``. A consumer
        that missed more gets a fresh init message with the full state, which
        ends with a ``reset`` element (the consumer must fetch what it shows).
    ``queue_size`` (events, default 1000)
        How many events may wait in an attached stream's queue. A consumer that
        falls further behind is caught up from its topics' histories, or resynced
        with an init message (see ``pubsubsse.streams._stream``); the publisher is
        never slowed down.
    ``client_timeout`` (seconds or ``None``, default 300)
        A client that stays ``WAITING`` (no stream attached) this long is
        removed as by :meth:`remove_client`. ``None`` keeps clients forever.
    ``backend`` (default: an :class:`~pubsubsse.backends.base.InProcessBackend`, this process only)
        Where changes go: for example
        ``RedisBackend("redis://host:6379/0")`` to share one service among
        every process that uses the same Redis log (see
        :mod:`pubsubsse.backends`). A backend serves one service. With a
        shared backend, changes take a round trip to the log; one that was
        not applied raises :class:`~pubsubsse.errors.BackendUnavailable` (open
        streams stay open, and the process catches up when the log is back).
        A service built while the log is unreachable is built anyway (with a
        logged warning) and loads the shared state in the background.
    ``json_dumps`` (default: JSON with Flask's handling of dates, ``Decimal``, ``UUID`` and dataclasses)
        ``json_dumps(value) -> str | bytes`` encodes what :meth:`Topic.pub`
        publishes, for another date format or a faster encoder (``orjson.dumps``).
        It must encode compactly, on one line.
    ``max_clients``, ``max_private_topics``, ``max_groups``, ``max_payload_bytes``
        (Defaults 100,000; 100 per client; 10,000; 4 MiB, the encoded size of one published value.)
        Limits. A change that would exceed one raises
        :class:`~pubsubsse.errors.LimitReached` (429 over HTTP) and changes
        nothing.
    """

    on_new_client: EventAttribute[Client] = EventAttribute("A client was created (``Client``).")
    on_new_public_topic: EventAttribute[Topic] = EventAttribute("A public topic was created (``Topic``).")
    on_new_group: EventAttribute[Group] = EventAttribute("A group was created (``Group``).")
    on_remove_client: EventAttribute[Client] = EventAttribute("A client was removed (``Client``).")
    on_remove_public_topic: EventAttribute[Topic] = EventAttribute("A public topic was removed (``Topic``).")
    on_remove_group: EventAttribute[Group] = EventAttribute("A group was removed (``Group``).")

    def __init__(
        self,
        *,
        backend: Backend | None = None,
        heartbeat: float = 15.0,
        retry: float = 3.0,
        replay_size: int = 1000,
        queue_size: int = 1000,
        client_timeout: float | None = 300.0,
        max_clients: int = 100_000,
        max_private_topics: int = 100,
        max_groups: int = 10_000,
        max_payload_bytes: int = 4 * 1024 * 1024,
        json_dumps: JsonDumps | None = None,
    ) -> None:
        _check_options(dict(locals()))
        self._json_dumps = json_dumps
        #: Set once something in this process serves streams (an HTTP layer, or a stream attached).
        self._serving = False
        self._warned_unserved = False
        self._max_payload_bytes = max_payload_bytes
        self._id = new_id("S")
        #: Names this process's streams, so that a replica can tell its own streams from others'.
        self.process_token = new_id("P")
        self._stream_numbers = itertools.count(1)
        self._heartbeat = float(heartbeat)
        self._retry = float(retry)
        self._queue_size = queue_size
        self._client_timeout = None if client_timeout is None else float(client_timeout)
        self._lock = threading.Lock()
        self._attachments = Attachments(
            self._lock,
            process_token=self.process_token,
            retry=self._retry,
            heartbeat=self._heartbeat,
            queue_size=queue_size,
            client_timeout=self._client_timeout,
        )
        self._core = Core(
            self,
            make_view=functools.partial(make_handle, self),
            present=present,
            process_token=self.process_token,
            now=time.monotonic,
            replay_size=replay_size,
            client_timeout=self._client_timeout,
            max_clients=max_clients,
            max_private_topics=max_private_topics,
            max_groups=max_groups,
        )
        tick = min(1.0, self._heartbeat / 2, (self._client_timeout or 2.0) / 2)
        self._timer = Timer(self._attachments, tick)
        self._backend: Backend = backend if backend is not None else InProcessBackend()
        self._attachments.core, self._attachments.backend = self._core, self._backend
        self._backend.bind(self)
        if self._backend.shared:
            # Other processes' clients expire and their dead streams are detached here too, even
            # while this process holds no stream.
            self._timer.ensure_running()

    def __repr__(self) -> str:
        return f"<SSEPubSubService {self._id} clients={len(self._core.clients)} topics={len(self._core.topics)}>"

    @property
    def id(self) -> str:
        """The service's id, ``S-…``."""
        return self._id

    @property
    def backend(self) -> Backend:
        """The backend the service's changes go through."""
        return self._backend

    # Public API: changes -------------------------------------------------

    def new_client(self, *, user: str | None = None) -> Client:
        """Create a client. It is ``WAITING`` until a stream is attached.

        ``user`` (at most 256 characters) names whom it is for: presence counts users, not tabs, and
        shows them to the topic's other subscribers (see the presence guide).
        """
        return cast(Client, self._execute("new_client", new_id("C"), check_user(user)))

    def remove_client(self, client: Client) -> bool:
        """Remove a client: it is unsubscribed from everything and leaves its groups.

        Its private topics are removed with it. An attached stream receives a
        final message (no topics, every subscription ended) and then ends.
        Removing a client twice is a no-op. Returns whether this call removed
        it: ``False`` when it was gone already, also when another process
        removed it a moment before and this one had not seen that yet.
        """
        return bool(self._execute("remove_client", client.id))

    def new_public_topic(
        self, *, presence: bool = False, history: int | None = None, ttl: float | None = None
    ) -> Topic:
        """Create a topic every client can see; ``presence``, ``history`` and ``ttl`` as for :meth:`public_topic`."""
        check_history(history, ttl)
        return configure(cast(Topic, self._execute("new_public_topic", new_id("T"))), presence or None, history, ttl)

    def public_topic(
        self, name: str, *, presence: bool | None = None, history: int | None = None, ttl: float | None = None
    ) -> Topic:
        """Return the public topic named ``name``, creating it if absent.

        Its id is ``"T-" + name`` (``public_topic("orders").id == "T-orders"``):
        the same in every process that shares the service and after a restart,
        so browsers, other processes and a :class:`~pubsubsse.Publisher` can
        name it without being handed an id. Two processes asking at once get
        one topic, and its creation events fire once, where it was created.
        Raises :class:`ValueError` for an invalid name (see
        :data:`~pubsubsse.handles.NAME_RULE`).

        ``presence=True`` turns on live presence (who comes and goes, about once a second);
        ``history``: messages the topic keeps (instead of ``replay_size``; up to 100,000)
        for resumes and ``client.sub(topic, since="start")``; ``ttl``: seconds it keeps
        them (``0``: no limit), and lasts after :meth:`.Topic.close`. ``None``
        leaves a setting as it is (see the guides on presence and history).
        """
        check_history(history, ttl)
        return configure(cast(Topic, self._ensure_named("public", named_id("T", name))), presence, history, ttl)

    def publish(self, topic: str, data: Any, *, transaction: Any = None) -> None:
        """Publish ``data`` to the topic with the id ``topic``, or to the public topic named ``topic``.

        ``publish("T-orders", ...)`` and ``publish("orders", ...)`` both reach the
        subscribers of ``T-orders`` (created if absent, as by :meth:`public_topic`);
        the id of any other topic (private, a group's, one made by
        :meth:`new_public_topic`) publishes to that topic, which must exist
        (:class:`~pubsubsse.errors.TopicNotFound` otherwise). Otherwise as
        :meth:`.Topic.pub`, ``transaction`` included.
        """
        topic_named(self, topic).pub(data, transaction=transaction)

    def group(self, name: str) -> Group:
        """Return the group named ``name`` (id ``"G-" + name``), creating it if absent; see :meth:`public_topic`."""
        return cast(Group, self._ensure_named("group", named_id("G", name)))

    def remove_public_topic(self, topic: Topic) -> None:
        """Remove a public topic; its subscribers are unsubscribed. Unknown topics are ignored."""
        self._execute("remove_public_topic", topic.id)

    def new_group(self) -> Group:
        """Create an empty group."""
        return cast(Group, self._execute("new_group", new_id("G")))

    def remove_group(self, group: Group) -> None:
        """Remove a group with its topics; its members leave it. Unknown groups are ignored."""
        self._execute("remove_group", group.id)

    # Public API: snapshots -----------------------------------------------

    def get_clients(self) -> dict[str, Client]:
        """Return a snapshot of all clients, keyed by id."""
        with self._lock:
            return _views(self._core.clients)

    def get_client_by_id(self, client_id: str) -> Client | None:
        """Return the client with this id, or ``None``."""
        return self._lookup(lambda: _view(self._core.clients.get(client_id)))

    def get_public_topics(self) -> dict[str, Topic]:
        """Return a snapshot of the public topics, keyed by id, in creation order."""
        with self._lock:
            return _views(self._core.public)

    def get_public_topic_by_id(self, topic_id: str) -> Topic | None:
        """Return the public topic with this id, or ``None``."""
        return self._lookup(lambda: _view(self._core.public.get(topic_id)))

    def get_groups(self) -> dict[str, Group]:
        """Return a snapshot of all groups, keyed by id."""
        with self._lock:
            return _views(self._core.groups)

    def get_group_by_id(self, group_id: str) -> Group | None:
        """Return the group with this id, or ``None``."""
        return self._lookup(lambda: _view(self._core.groups.get(group_id)))

    def stats(self) -> dict[str, int]:
        """Return numbers for monitoring, as a new dict of ints.

        Sizes, of the whole service as this process sees it: ``clients``,
        ``clients_receiving``, ``clients_waiting``, ``public_topics``, ``topics``
        (every type), ``groups``, ``history_messages`` and ``history_bytes``
        (what the topics keep, in this process); ``streams`` attached here.
        Counters since this process started: ``messages_published`` (applied
        here), ``messages_delivered`` (offered to streams held here),
        ``streams_opened``, ``resumes``, ``resyncs`` (streams that got a fresh
        init message instead of resuming), ``queue_overflows`` (a stream's
        queue was full), and the backend's own (:mod:`pubsubsse.backends.log`).
        The lock is held to copy the client list and sum the topics (about 1
        ms at 100,000 each); scrape every few seconds, not per request.
        """
        with self._lock:
            result, clients = numbers(self._core)
        result.update(count_clients(clients))
        result.update(self._backend.stats())
        return result

    def sync(self) -> None:
        """Wait until this process has applied every change made, in any process, before the call.

        A change is visible at once in the process that made it. With a shared
        backend, another process sees it after a moment; call this before a
        read that must reflect changes made elsewhere. The lookups
        (``get_*_by_id``, on the service and on clients and groups) do so by
        themselves when they find nothing. A no-op for a service in this
        process only.
        """
        self._backend.sync()

    def close(self) -> None:
        """Stop the background timer and end every attached stream.

        Call it when the server shuts down so open streams end promptly and
        their clients reconnect elsewhere. The service stays usable; a stream
        attached later restarts the timer.
        """
        self._timer.stop()
        self.end_streams()

    def end_streams(self) -> None:
        """End every stream held in this process (see :class:`~pubsubsse.backends.base.Replica`)."""
        self._attachments.end_streams()

    def shutdown(self) -> None:
        """Like :meth:`close`, and also stop the backend (with Redis: stop following the shared log).

        For processes that are done with the service (tests, scripts); a
        service that was shut down must not be used again.
        """
        self.close()
        self._backend.close()

    # The backend's side: the Replica interface -------------------------------------------------

    def apply(self, operation: str, args: tuple[Any, ...]) -> tuple[Any, Effects]:
        """Apply one operation under the lock (for backends; see :class:`~pubsubsse.backends.base.Replica`)."""
        with self._lock:
            result, effects = apply_operation(self._core, operation, args)
            if isinstance(result, AttachPlan):  # a stream held here: opened before the lock is released
                result = self._attachments.open_stream(result)
            return result, effects

    def held_topics(self, known: int) -> tuple[int, set[str]] | None:
        """Return the topics with a subscriber's stream held here, unless unchanged since version ``known``."""
        with self._lock:
            version = self._core.local_version
            return None if version == known else (version, set(self._core.held))

    def export_state(self, slice_size: int = 1000) -> Iterator[dict[str, Any] | list[StateItem]]:
        """Yield the state in slices, holding the lock only per slice (see :class:`.Replica`)."""
        return _state.export_slices(self._core, self._lock, slice_size)

    def import_state(self, groups: dict[str, Any], items: list[StateItem], seq_offset: int = 0) -> None:
        """Replace the state with the one described (see :class:`~pubsubsse.backends.base.Replica`)."""
        with self._lock:
            for stream in _state.import_state(self._core, groups, items, seq_offset):
                if isinstance(stream, Stream):
                    stream.request_resync()

    # Internals -----------------------------------------------------------

    def _execute(self, operation: str, *args: Any) -> Any:
        self._timer.ensure_running()  # a client that never connects must expire too
        return present(self._backend.execute(operation, args))

    def _ensure_named(self, kind: str, object_id: str, group_id: str | None = None) -> Topic | Group:
        """Get or create a named public topic, group or group topic; don't wait for an unreachable log.

        With a shared log that cannot be reached (a worker booting while Redis is down), the
        handle is made here and the creation is queued, retried until the log takes it: an
        app that declares its topics at startup boots, and the handle is the one the log's
        record will be. Using it (``pub``, ``sub``) raises ``BackendUnavailable`` until then.
        """
        operation = _ENSURE[kind]
        args = (object_id,) if group_id is None else (group_id, object_id)
        try:
            return cast("Topic | Group", self._execute(operation, *args))
        except BackendUnavailable as error:
            if not self._backend.shared:
                raise
            with self._lock:
                handle: Topic | Group = self._core.declare(kind, object_id, group_id).view
            self._backend.execute_eventually(operation, args)
            log.warning(_DECLARED, object_id, error)
            return handle

    def _lookup(self, find: Callable[[], T | None]) -> T | None:
        """Run ``find`` under the lock; on a miss with a shared backend, catch up and try once more."""
        shared = self._backend.shared
        if shared:
            self._backend.check_ready()
        with self._lock:
            found = find()
        if found is None and shared:
            self._backend.sync()
            with self._lock:
                found = find()
        return found

    def _publish(self, topic: Topic, data: Any, transaction: Any = None) -> None:
        body = encode_update(topic.id, data, self._json_dumps, self._max_payload_bytes)
        if topic.closed:  # refused when applied too; a transaction's publish would be dropped after its commit
            raise TopicClosed(f"topic {topic.id} is closed: it takes no more messages")
        if transaction is not None:
            self._backend.stage(transaction, "pub", (topic.id, body))
            return
        if not self._serving and not self._backend.shared and not self._warned_unserved:
            self._warned_unserved = True
            log.warning(_UNSERVED)
        if self._backend.shared:
            # A shared log settles a publish once it holds it, before this process applies it,
            # so a topic this replica knows removed is refused here.
            self._backend.check_ready()
            with self._lock:
                known = self._core.topics.get(topic.id)
            if known is None or known.closed:
                raise TopicNotFound(f"topic {topic.id} was removed") if known is None else TopicClosed(topic.id)
        self._execute("pub", topic.id, body)
        emit(topic, "on_pub", data)

    # Streams -------------------------------------------------------------

    def _attach(self, client: Client, last_event_id: str | None) -> Stream:
        self._serving = True
        token = f"{self.process_token}:{next(self._stream_numbers)}"
        # Parsed here: what a consumer sent never travels as it is ("?": not an id of ours, a reset).
        last_id = parse_event_id(last_event_id)
        resume = None if not last_event_id else "?" if last_id is None else str(last_id)
        stream: Stream = self._execute("attach", client.id, token, resume)
        self._timer.ensure_running()
        return stream


_UNSERVED = (
    "pubsubsse: a publish in a process that serves no streams, with the in-process backend: no browser can "
    "receive it. Publish from the web process, or share the service through Redis (and publish with "
    "pubsubsse.Publisher)."
)
_DECLARED = "pubsubsse: %s declared while the shared log is unreachable (%s); created once it answers"

#: The operation that gets or creates each kind of named object (see ``_ensure_named``).
_ENSURE = {"public": "ensure_public_topic", "group": "ensure_group", "group_topic": "ensure_group_topic"}

#: The options :class:`SSEPubSubService` takes (keyword arguments), for adapters that read them from settings.
SERVICE_OPTIONS = frozenset(
    name
    for name, parameter in inspect.signature(SSEPubSubService.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)
