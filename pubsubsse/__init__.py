"""pubsubsse: topic-based publish/subscribe over Server-Sent Events for Flask and other WSGI apps.

The in-process :class:`SSEPubSubService` holds clients, public topics, private
topics and groups; :func:`create_blueprint` serves it over HTTP as SSE.
"""

from __future__ import annotations

from .blueprint import create_blueprint
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
from .service import SSEPubSubService
from .stream import Stream
from .tickets import StreamTickets

__version__ = "0.1.0"

__all__ = [
    "SSEPubSubService",
    "Client",
    "Topic",
    "Group",
    "GroupTopic",
    "Status",
    "TopicType",
    "EventManager",
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
