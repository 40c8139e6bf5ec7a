"""pubsubsse: topic-based publish/subscribe over Server-Sent Events for Flask and other WSGI apps.

:class:`SSEPubSubService` holds clients, public topics, private topics and
groups, in this process or shared through Redis or PostgreSQL
(:mod:`pubsubsse.backends`); :class:`PubSubSSE` (the Flask extension) and
:func:`create_blueprint` serve it over HTTP as SSE; :class:`Publisher`
publishes to a shared service from any process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BackendUnavailable,
    ClientNotFound,
    GroupNotFound,
    LimitReached,
    NotSubscribed,
    PubSubError,
    TopicNotFound,
)
from .events import EventManager
from .model import Client, Group, GroupTopic, Status, Topic, TopicType
from .publisher import Publisher
from .service import SSEPubSubService
from .stream import Stream
from .tickets import StreamTickets

if TYPE_CHECKING:
    from .flask import PubSubSSE
    from .flask.blueprint import create_blueprint

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The Flask adapter is imported on first use, so that a Django or plain WSGI app never imports Flask.
    if name == "create_blueprint":
        from .flask.blueprint import create_blueprint

        return create_blueprint
    if name == "PubSubSSE":
        from .flask import PubSubSSE

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
