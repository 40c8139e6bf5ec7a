"""Publishing from a process that serves no streams: a Celery task, a cron job, a command line tool.

A :class:`Publisher` appends to a shared service's log directly: one round trip
per publish, no snapshot to load, no replica to keep, no background thread.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import Any

from pubsubsse.backends._entries import encode_entry
from pubsubsse.backends.log import LogBackend, LogUnavailable, NotAppended
from pubsubsse.core._messages import JsonDumps, encode_update
from pubsubsse.errors import BackendUnavailable
from pubsubsse.handles import named_id, new_id

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

#: No deadline: a publisher holds no clock of the log (see Publisher.publish).
_NO_DEADLINE = 1 << 62

#: The most messages one :meth:`Publisher.publish_many` call sends.
MAX_BATCH = 1000


class Publisher:
    """Publish to a service shared through Redis (or another log backend) without joining it.

    ``Publisher("redis://127.0.0.1:6379/0", redis_key="pubsubsse:log")``
    publishes to the service of every process built with that URL and key;
    ``Publisher(backend=PostgresBackend(dsn, name=...))`` to one on
    PostgreSQL. ``json_dumps`` and ``max_payload_bytes`` are as for
    :class:`~pubsubsse.SSEPubSubService`; ``timeout`` bounds each round trip.
    A publisher is thread-safe and cheap: make one per process and keep it.
    Every process that serves the service must run this version or a later
    one (a publisher writes entries of format 2 and names topics).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        redis_key: str = "pubsubsse:log",
        backend: LogBackend | None = None,
        timeout: float = 5.0,
        json_dumps: JsonDumps | None = None,
        max_payload_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if (redis_url is None) == (backend is None):
            raise ValueError("pass either redis_url or backend (a log backend not bound to a service)")
        if backend is None:
            from pubsubsse.backends.redis import RedisBackend

            backend = RedisBackend(redis_url or "", key=redis_key, timeout=timeout)
        self._log = backend
        self._origin = new_id("Q")
        self._numbers = itertools.count(1)
        self._json_dumps = json_dumps
        self._max_payload_bytes = max_payload_bytes

    def __repr__(self) -> str:
        return f"<Publisher to {self._log!r}>"

    def publish(self, topic: str, data: Any, *, transaction: Any = None) -> None:
        """Publish ``data`` to the public topic named ``topic``, or to the topic with that id.

        A name (``"orders"``) means the public topic ``T-orders``, created if
        it does not exist yet, so a publisher needs nobody to have made it. An
        id (``"T-…"``) publishes to that topic of any kind, if it exists when
        the log is applied (a removed topic gets nothing). Returns once the
        message is in the log; every process then delivers it in log order.

        Raises :class:`ValueError` for an invalid name, :class:`TypeError` or
        :class:`ValueError` for a value JSON cannot encode,
        :class:`~pubsubsse.errors.LimitReached` for one over
        ``max_payload_bytes``, and
        :class:`~pubsubsse.errors.BackendUnavailable` when the log refused it
        (nothing was published) or did not answer (``outcome_unknown``: a
        publisher keeps no replica to find out; publish again only if a
        duplicate is harmless).

        ``transaction`` (a psycopg 3 connection or cursor on the database that
        holds the log) writes the publish into that transaction instead: it
        reaches the log if and only if the transaction commits, in commit
        order (see :meth:`.Topic.pub`); only with a
        :class:`~pubsubsse.backends.postgres.PostgresBackend`
        (:class:`~pubsubsse.errors.NotTransactional` otherwise).
        """
        self.publish_many([(topic, data)], transaction=transaction)

    def publish_many(self, messages: Iterable[tuple[str, Any]], *, transaction: Any = None) -> None:
        """Publish several ``(topic, data)`` messages in one round trip, in this order.

        Topics and data are as for :meth:`publish`. Every message is encoded
        and checked before anything is sent, so a bad one raises and nothing
        is published; then all of them go into the log in one append, which
        the log takes whole or not at all, with the errors of :meth:`publish`.
        At most 1,000 messages per call (:class:`ValueError` beyond): a
        batch is one request to the log, and one entry of its reply each.
        ``transaction`` is as for :meth:`publish`.
        """
        entries: list[dict[str, bytes]] = []
        for topic, data in messages:
            named = not topic.startswith("T-")
            topic_id = named_id("T", topic) if named else topic
            body = encode_update(topic_id, data, self._json_dumps, self._max_payload_bytes)
            operation = "pub_named" if named else "pub"
            entries.append(encode_entry(self._origin, next(self._numbers), operation, (topic_id, body), 2))
            if len(entries) > MAX_BATCH:
                raise ValueError(f"at most {MAX_BATCH} messages per publish_many() call")
        if entries:
            self._append(entries, transaction)

    def close_topic(self, topic: str) -> None:
        """Close the public topic named ``topic`` (or the topic with that id), as :meth:`.Topic.close` does.

        Its subscribers get a ``closed`` message; later publishes to it are
        refused where the log is applied (a publisher keeps no replica to tell
        you: close a topic after its last publish). Errors as for :meth:`publish`.
        """
        topic_id = topic if topic.startswith("T-") else named_id("T", topic)
        self._append([encode_entry(self._origin, next(self._numbers), "close_topic", (topic_id,), 2)], None)

    def _append(self, entries: list[dict[str, bytes]], transaction: Any) -> None:
        if transaction is not None:
            stage = getattr(self._log.transport, "stage", None)
            if stage is None:
                self._log.stage(transaction, "pub", ())  # raises NotTransactional, naming the backend
            else:
                try:
                    stage(transaction, entries, None)
                except LogUnavailable as error:
                    raise BackendUnavailable(f"the shared log did not answer: {error}") from error
            return
        try:
            outcome = self._log.transport.append(entries, "*", _NO_DEADLINE, 0)
        except LogUnavailable as error:
            failure = BackendUnavailable(f"the shared log did not answer: {error}")
            failure.outcome_unknown = error.sent
            raise failure from error
        if isinstance(outcome, NotAppended):
            raise BackendUnavailable(
                "the shared log refused the publish: no process has started it yet, or it is being replaced"
            )

    def close(self) -> None:
        """Close the publisher's connections."""
        self._log.transport.disconnect()
