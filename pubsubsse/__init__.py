"""pubsubsse: topic-based publish/subscribe over Server-Sent Events for Flask and other WSGI apps.

:class:`SSEPubSubService` holds clients, public topics, private topics and
groups, in this process or shared through Redis or PostgreSQL
(:mod:`pubsubsse.backends`); :class:`PubSubSSE` (the Flask extension) and
:func:`create_blueprint` serve it over HTTP as SSE; :class:`Publisher`
publishes to a shared service from any process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pubsubsse.errors import (
    BackendUnavailable,
    ClientNotFound,
    GroupNotFound,
    LimitReached,
    NotSubscribed,
    PubSubError,
    TopicNotFound,
)
from pubsubsse.events import EventManager
from pubsubsse.handles import Client, Group, GroupTopic, Status, Topic, TopicType
from pubsubsse.publisher import Publisher
from pubsubsse.service import SSEPubSubService
from pubsubsse.streams._stream import Stream
from pubsubsse.web._tickets import StreamTickets

if TYPE_CHECKING:
    from pubsubsse.flask import PubSubSSE
    from pubsubsse.flask.blueprint import create_blueprint

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The Flask adapter is imported on first use, so that a Django or plain WSGI app never imports Flask.
    if name == "create_blueprint":
        from pubsubsse.flask.blueprint import create_blueprint

        return create_blueprint
    if name == "PubSubSSE":
        from pubsubsse.flask import PubSubSSE

        return PubSubSSE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SSEPubSubService",
    "Client",
    "Topic",
    "Group",
    "GroupTopic",
    "Status",
    "TopicType",
    "EventManager",
    "PubSubSSE",
    "Publisher",
    "Stream",
    "create_blueprint",
    "StreamTickets",
    "PubSubError",
    "ClientNotFound",
    "TopicNotFound",
    "GroupNotFound",
    "NotSubscribed",
    "BackendUnavailable",
    "LimitReached",
    "__version__",
]
