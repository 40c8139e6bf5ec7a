"""Publishing with an application's database transaction: SQLAlchemy sessions (Django: :mod:`pubsubsse.django`).

With the service on :class:`~pubsubsse.backends.postgres.PostgresBackend` in the
same database as the session, :func:`publish_with_session` writes the publish
into the session's transaction: delivered if and only if it commits, in commit
order, also if the process dies right after the commit. With any other backend
(or a log in another database) it publishes right after the session commits
and forgets it if the session rolls back: no event of a rolled back
transaction, none before the commit is visible, but an event is lost if the
process dies between the commit and the publish, or if the log refuses it then
(logged as an error).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pubsubsse.errors import NotTransactional, PubSubError
from pubsubsse.handles import topic_named

if TYPE_CHECKING:
    from pubsubsse.service import SSEPubSubService

__all__ = ["publish_with_session", "check_publish"]

log = logging.getLogger(__name__)

_PENDING = "pubsubsse.pending"


def publish_with_session(service: SSEPubSubService, topic: str, data: Any, session: Any) -> None:
    """Publish ``data`` to ``topic`` (as :meth:`.SSEPubSubService.publish`) with ``session``'s transaction.

    ``session`` is a SQLAlchemy ``Session`` (or ``scoped_session``, such as
    Flask-SQLAlchemy's ``db.session``). See the module's docstring for what
    each backend guarantees. The value is encoded now: a value JSON cannot
    represent raises at once.
    """
    from sqlalchemy.orm import scoped_session

    if isinstance(session, scoped_session):
        session = session()
    try:
        # The session's own DB-API connection, in its transaction (begun here if need be).
        service.publish(topic, data, transaction=session.connection().connection)
        return
    except NotTransactional as error:
        log.debug("publishing after the session's commit: %s", error)
    check_publish(service, topic, data)
    _pending(session).append((topic, data, service))


def check_publish(service: SSEPubSubService, topic: str, data: Any) -> None:
    """Raise now what publishing ``data`` to ``topic`` later would raise: an unknown id, a value JSON cannot encode."""
    from pubsubsse.core._messages import encode_update

    encode_update(topic_named(service, topic).id, data, service._json_dumps, service._max_payload_bytes)


def _pending(session: Any) -> list[tuple[str, Any, SSEPubSubService]]:
    pending: list[tuple[str, Any, SSEPubSubService]] | None = session.info.get(_PENDING)
    if pending is None:
        from sqlalchemy import event

        pending = session.info[_PENDING] = []
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_rollback", _after_rollback)
    return pending


def _after_commit(session: Any) -> None:
    pending = session.info.get(_PENDING) or []
    messages, pending[:] = list(pending), []
    for topic, data, service in messages:
        try:
            service.publish(topic, data)
        except PubSubError as error:
            log.error("a publish after a commit was lost (%s): %s", topic, error)


def _after_rollback(session: Any) -> None:
    pending = session.info.get(_PENDING)
    if pending:
        pending.clear()
