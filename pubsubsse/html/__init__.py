"""HTML over the wire: fragments rendered once on the server, sent to htmx and Turbo pages.

A *fragment* is a published value of one shape, ``{"event": name, "html": text}``
(:func:`fragment` makes one). A JSON stream delivers it like any value. A stream
opened with ``format=html`` (htmx's SSE extension) sends each fragment as an SSE
event of that name whose data is the HTML, which ``sse-swap="name"`` swaps in; a
stream opened with ``format=turbo`` (Turbo's stream sources) sends the fragments
named ``message``, the only events Turbo listens to, so each is a Turbo Stream
action made by :func:`turbo_stream`. The template is rendered once, by the
publisher; every subscriber gets the same bytes.

Only fragments reach a page on an HTML stream; other values published to its
topics are left out. When the stream could not resume (the ``reset`` element
of the JSON stream), an HTML stream sends an event named ``reset`` (data
``{"type":"reset"}``: a page fetches what it shows again, e.g.
``hx-trigger="sse:reset"``) and a Turbo stream a ``refresh`` action.

**Model broadcasts** (as Rails' ``broadcasts_to``): a :class:`Broadcast` says how
a change of one model (created, updated, deleted) becomes the fragment published
to a topic, in one of three styles:

``"turbo"``
    Turbo Stream actions: a new row is appended to the element ``target`` (the
    list), a changed one replaces the element ``dom_id(row)``, a deleted one
    removes it.
``"htmx"``
    Out-of-band swaps for htmx's SSE extension (:func:`htmx_oob`), all sent as
    events named ``target``, which one stable element of the page takes
    (``<div sse-swap="todos" hx-swap="none" hidden></div>``): a new row is
    appended to the element ``target``, a changed one replaces the element
    ``dom_id(row)``, a deleted one is deleted. (Rows that swap themselves on
    events of their own would lose an event that comes while htmx settles their
    replacement.)
``"refresh"``
    One Turbo ``refresh`` action (page morphing) for a burst of changes,
    debounced by a :class:`Refresher`; nothing is rendered.

The framework hooks publish with the transaction: Django's signals
(:func:`pubsubsse.django.broadcasts`) and SQLAlchemy's session events
(:func:`sqlalchemy_broadcasts`, used by the Flask extension's
``pubsub.broadcasts``). A rolled back change sends nothing; a committed one is
delivered in commit order (see :mod:`pubsubsse.transactions`).
"""

from pubsubsse.html._broadcasts import CHANGES, STYLES, Broadcast, dom_id, sqlalchemy_broadcasts
from pubsubsse.html._fragments import TURBO_ACTIONS, Refresher, fragment, htmx_oob, is_fragment, turbo, turbo_stream

__all__ = [
    "CHANGES",
    "STYLES",
    "TURBO_ACTIONS",
    "Broadcast",
    "Refresher",
    "dom_id",
    "fragment",
    "htmx_oob",
    "is_fragment",
    "sqlalchemy_broadcasts",
    "turbo",
    "turbo_stream",
]
