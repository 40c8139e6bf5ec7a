"""``/presence``: who is connected among the subscribers of a topic with live presence, asked once.

A page subscribed to the topic is told the same, and every change, on its stream;
this answers a page that shows a count or a list without subscribing (a lobby).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pubsubsse.web._http import Answer, Refused, Request, json_reply

if TYPE_CHECKING:
    from pubsubsse.web._protocol import Endpoints

__all__ = ["presence_view"]


def presence_view(endpoints: Endpoints, request: Request, params: dict[str, str]) -> Answer:
    """Answer ``/presence?client_id=…&topic=…`` (the ``authorize`` hook's action ``"presence"``)."""
    _, topic = endpoints.client_and_topic(request, "presence", params)
    if not topic.has_presence:
        # Users are shown only where the app chose to show them to the topic's subscribers.
        raise Refused(400, "presence is off", hint="turn it on with public_topic(name, presence=True)")
    return json_reply(
        200,
        {
            "ok": "true",
            "topic": topic.id,
            "subscribers": topic.subscriber_count(),
            "connections": topic.connected_count(),
            "users": topic.present_users(),
        },
    )
