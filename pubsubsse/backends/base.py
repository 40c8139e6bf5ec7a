"""What a backend is: the object that decides where a service's changes go and in which order they apply.

A :class:`~pubsubsse.SSEPubSubService` never changes its state directly. Each
change is an *operation* (a name and arguments made of ids and bytes, see
``pubsubsse.core._engine``) handed to its backend's :meth:`Backend.execute`. The
backend applies it, through the service's :class:`Replica` interface, in this
process and, for a shared backend, in every process that uses the same log,
in the same order everywhere.

Two kinds exist:

* :class:`~pubsubsse.backends.base.InProcessBackend`, the default: the change is
  applied at once, in the calling thread.
* A replicated log (:class:`~pubsubsse.backends.log.LogBackend`), such as
  :class:`~pubsubsse.backends.redis.RedisBackend`: the change is appended to a
  log that every process reads and applies in order.

Writing a backend of your own is described in the documentation
(``docs/backends.md``); a replicated log needs only a transport.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from pubsubsse.core._state import Item
from pubsubsse.errors import NotTransactional, PubSubError

if TYPE_CHECKING:
    from pubsubsse.core._engine import Effects

__all__ = ["Backend", "Replica", "InProcessBackend", "StateItem"]

log = logging.getLogger(__name__)

#: One object of the state as a snapshot carries it (a topic's history, a client): JSON-ready fields
#: and the message bodies it holds.
StateItem = Item


class Replica(Protocol):
    """What a backend may ask of the service it serves: the service's side of the seam."""

    #: Names this process: the prefix of its streams' tokens, and the origin of its log entries.
    process_token: str

    def apply(self, operation: str, args: tuple[Any, ...]) -> tuple[Any, Effects]:
        """Apply one operation under the service lock; a refused change returns its error as the result.

        Raises :class:`ValueError` for an unknown operation or arguments of the
        wrong shape, having changed nothing.
        """
        ...

    def held_topics(self, known: int) -> tuple[int, set[str]] | None:
        """Return (version, the ids of the topics with a subscriber whose stream is held here).

        ``None`` if nothing changed since the version ``known`` (start with -1).
        """
        ...

    def export_state(self, slice_size: int) -> Iterator[dict[str, Any] | list[StateItem]]:
        """Yield the state in slices: first the topics and groups, then lists of items (histories, clients).

        The lock is held only while a slice is taken. The state must not
        change between slices, and a slice may refer to live histories:
        call it from the only thread that applies operations (a log backend's
        reader), and consume each slice before applying anything.
        """
        ...

    def import_state(self, groups: dict[str, Any], items: list[StateItem], seq_offset: int = 0) -> None:
        """Replace the state with the one described (see ``pubsubsse.core._engine.Core.import_state``).

        Streams attached here whose client changed are resynchronised (an init message).
        """
        ...

    def end_streams(self) -> None:
        """End every stream held in this process, so that their consumers reconnect (elsewhere, say)."""
        ...


class Backend:
    """The base of every backend; on its own it cannot apply anything.

    A backend is bound to exactly one service (:meth:`bind`), which then calls
    :meth:`execute` for every change, :meth:`execute_eventually` for changes that must
    happen eventually (a detach, an expiry), and the other methods as their
    docstrings say. Every method may be called from any thread or greenlet.
    """

    #: Whether other processes share the service through this backend (then lookups that find
    #: nothing catch up with the log once before they answer).
    shared = False

    def __init__(self) -> None:
        self._replica: Replica | None = None

    @property
    def replica(self) -> Replica:
        """The service this backend serves."""
        if self._replica is None:
            raise RuntimeError("the backend is not bound to a service yet")
        return self._replica

    def bind(self, replica: Replica) -> None:
        """Attach the backend to the service it serves; called once, by the service's constructor."""
        if self._replica is not None:
            raise ValueError("a backend serves one service; make one backend per SSEPubSubService")
        self._replica = replica
        self.start()

    def start(self) -> None:
        """Begin serving (load the shared state, start threads). Called by :meth:`bind`."""

    def execute(self, operation: str, args: tuple[Any, ...]) -> Any:
        """Apply one change; return its result after its events have fired (in the calling thread).

        Raises the change's error if it was refused (nothing changed). A shared
        backend raises :class:`~pubsubsse.errors.BackendUnavailable` when the
        change was not applied; it never returns or raises before it knows
        which.
        """
        raise NotImplementedError

    def execute_eventually(self, operation: str, args: tuple[Any, ...]) -> None:
        """Apply a change that must happen eventually and may be applied twice harmlessly; do not wait.

        Used for detaches and expiries. The default applies it at once; a
        shared backend retries it until it is applied. Its events fire in
        whichever thread applies it.
        """
        try:
            self.execute(operation, args)
        except PubSubError as error:
            log.debug("%s was not applied: %s", operation, error)

    def stage(self, transaction: Any, operation: str, args: tuple[Any, ...]) -> None:
        """Write a change into the caller's database ``transaction``: applied if and when it commits.

        Raises :class:`~pubsubsse.errors.NotTransactional` unless the backend
        keeps its log in that database (only the PostgreSQL backend does).
        """
        raise NotTransactional(
            f"{type(self).__name__} cannot write a publish into a database transaction: that needs "
            "PostgresBackend on the same database. Publish after the commit instead (Django: "
            "pubsubsse.django.publish() in transaction.atomic() does; Flask: pubsub.publish(..., session=...))"
        )

    def sync(self) -> None:
        """Return once every change made before the call, in any process, is applied here."""

    def check_ready(self) -> None:
        """Raise :class:`~pubsubsse.errors.BackendUnavailable` while the backend cannot serve lookups."""

    def is_live(self, process_token: str) -> bool:
        """Return whether the process that ``process_token`` names is alive (its streams are held)."""
        return True

    def stats(self) -> dict[str, int]:
        """Return the backend's own counters, merged into :meth:`~pubsubsse.SSEPubSubService.stats`."""
        return {}

    def close(self) -> None:
        """Stop serving; the service cannot change after this."""


class InProcessBackend(Backend):
    """The default: the service lives in this process only, and a change applies at once."""

    def execute(self, operation: str, args: tuple[Any, ...]) -> Any:
        """Apply the change in the calling thread, fire its events, return its result."""
        result, effects = self.replica.apply(operation, args)
        if isinstance(result, PubSubError):
            raise result
        effects.fire()
        return result
