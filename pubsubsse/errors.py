"""Exceptions raised by pubsubsse.

Every error the library raises on purpose derives from :class:`PubSubError`, so
``except PubSubError`` catches them all. Removing something that does not exist
(or was already removed) is a no-op, never an error.
"""

from __future__ import annotations

__all__ = [
    "PubSubError",
    "ClientNotFound",
    "TopicNotFound",
    "TopicClosed",
    "GroupNotFound",
    "NotSubscribed",
    "BackendUnavailable",
    "LimitReached",
    "NotTransactional",
    "WrongDatabase",
]


class PubSubError(Exception):
    """Base class of every error raised by pubsubsse."""


class ClientNotFound(PubSubError):
    """The client does not exist (never created, or already removed)."""


class TopicNotFound(PubSubError):
    """The topic does not exist, or the client cannot see it.

    A client can see every public topic, its own private topics and the topics
    of the groups it is a member of. Any other topic is "not found" for it, so
    that a client never learns whether another client's private topic exists.
    """


class TopicClosed(PubSubError):
    """The topic was closed (:meth:`~pubsubsse.Topic.close`): it takes no more messages."""


class GroupNotFound(PubSubError):
    """The group does not exist (never created, or already removed)."""


class NotSubscribed(PubSubError):
    """The client can see the topic but is not subscribed to it."""


class BackendUnavailable(PubSubError):
    """A shared backend (such as Redis) could not apply the change, or cannot serve a lookup now.

    Raised for a change, it means the change was **not** applied and never
    will be: retrying it is safe. The one exception is flagged: when the
    backend stopped answering after the change was sent and stayed away for
    the backend's ``outcome_timeout``, :attr:`outcome_unknown` is ``True`` and
    the change may or may not have been applied (the backend logs which, once
    it learns it).
    """

    #: The backend could not learn whether the change was applied (see the class docstring).
    outcome_unknown: bool = False


class LimitReached(PubSubError):
    """A configured limit would be exceeded; nothing was changed.

    The message names the limit (for example ``max_clients``) so that it can
    be raised in :class:`~pubsubsse.SSEPubSubService`'s options if intended.
    """


class NotTransactional(PubSubError, TypeError):
    """A publish was asked to join a database transaction that this service cannot write into.

    Only a service on :class:`~pubsubsse.backends.postgres.PostgresBackend` writes a
    publish into a transaction (of the database that holds its log). With another
    backend, publish after the commit: ``pubsubsse.django.publish()`` and the Flask
    extension's ``publish(..., session=...)`` do so by themselves.
    """


class WrongDatabase(NotTransactional):
    """The transaction's database does not hold this service's PostgreSQL log; nothing was written."""
