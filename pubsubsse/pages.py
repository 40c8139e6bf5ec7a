"""Render, then stream: a page that shows data, then every later change to it, with no gap.

A view that renders data and lets the page follow its changes has a gap to
close: what changes between the query and the moment the page's stream starts
would never arrive. The way to close it is to subscribe *first*::

    live = page_stream(service, ["orders"])      # a client, subscribed, and the position now
    orders = Order.objects.all()                 # the query comes after: nothing falls between
    return render(request, "orders.html", {"orders": orders, "live": live.as_dict()})

and in the page, start the stream right after that position::

    new PubSubSSE({ baseUrl: "/sse", clientId: "{{ live.client_id }}", lastEventId: "{{ live.last_event_id }}",
                    topics: {{ live.topics | tojson }} })

(or, with a plain ``EventSource`` or htmx's SSE extension, open
``{{ live.stream_url() }}``: ``/sse/event?client_id=…&last_event_id=…``). Every message
published after the position reaches the page, from the topics' histories if
the stream starts late. A message published between the subscription and the
query may arrive although the page already shows its change: messages carry
their position as the SSE id, so a page ignores what it knows (or applies
changes that are idempotent, such as "order 7 is now shipped"). If the stream
starts so late that the histories no longer reach back, its first message ends
with a ``reset`` element (``ps.on("reset", …)``): fetch the data again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from pubsubsse.handles import Client, Topic, topic_named
from pubsubsse.streams._html import FORMATS

if TYPE_CHECKING:
    from pubsubsse.service import SSEPubSubService
    from pubsubsse.web._tickets import StreamTickets

__all__ = ["PageStream", "page_stream"]


@dataclass(frozen=True)
class PageStream:
    """Where a rendered page's stream starts: its client, and the id to resume after."""

    #: The page's client, subscribed to the page's topics.
    client: Client
    #: The position when the subscriptions were made: pass it as ``last_event_id``.
    last_event_id: str
    #: The ids of the topics it was subscribed to (a page's script subscribes again to them if
    #: its client is ever gone and it registers a new one).
    topics: tuple[str, ...] = ()

    @property
    def client_id(self) -> str:
        """The client's id, for the stream URL (or a ticket: :class:`~pubsubsse.web.StreamTickets`)."""
        return self.client.id

    def stream_url(self, prefix: str = "/sse", tickets: StreamTickets | None = None, format: str = "json") -> str:
        """Return the URL of the page's stream, starting after the position: for a plain ``EventSource``.

        ``prefix`` is where the endpoints are mounted; with ``tickets``, the
        URL carries a signed ticket instead of the client id. ``format`` is
        ``"json"`` (messages), ``"html"`` (fragments as named events, for htmx's
        SSE extension) or ``"turbo"`` (for ``<turbo-stream-source>``): see
        :mod:`pubsubsse.html`. Raises :class:`ValueError` for another format.
        """
        if format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
        who = f"ticket={quote(tickets.issue(self.client))}" if tickets else f"client_id={quote(self.client.id)}"
        url = f"{prefix.rstrip('/')}/event?{who}&last_event_id={self.last_event_id}"
        return url if format == "json" else f"{url}&format={format}"

    def as_dict(self) -> dict[str, object]:
        """``{"client_id": …, "last_event_id": …, "topics": [...]}``: the options of ``new PubSubSSE({...})``.

        For a template (``{{ live | tojson }}``) or a JSON answer.
        """
        return {"client_id": self.client.id, "last_event_id": self.last_event_id, "topics": list(self.topics)}


def page_stream(service: SSEPubSubService, topics: Iterable[Topic | str], client: Client | None = None) -> PageStream:
    """Subscribe a page's client to ``topics`` and return where its stream must start; call it before the query.

    ``client`` is the page's client (a new one if ``None``). A topic is a
    :class:`~pubsubsse.Topic`, or a string as :meth:`~pubsubsse.SSEPubSubService.publish`
    takes it: a topic's id, or the name of a public topic (created if absent).
    Raises :class:`~pubsubsse.errors.TopicNotFound` for the id of a group's topic
    that does not exist, and what :meth:`~pubsubsse.Client.sub` raises.
    """
    handles = [topic if isinstance(topic, Topic) else topic_named(service, topic) for topic in topics]
    if client is None:
        client = service.new_client()
    for topic in handles:
        client.sub(topic)
    # Every change up to here is applied in this process, the subscriptions included: whatever
    # is published later has a later position, and whatever came before is in the query's data
    # (an app publishes a change once it is committed).
    with service._lock:
        position = service._core.position
    return PageStream(client, str(position), tuple(topic.id for topic in handles))
