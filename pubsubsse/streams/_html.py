"""HTML streams: a client's SSE chunks re-framed so htmx and Turbo can swap fragments in.

A stream's events carry one JSON message each (``id:`` and one ``data:`` line).
On an HTML stream each fragment of a message (:mod:`pubsubsse.html`) becomes an
event of its own, named by the fragment, its data the HTML (one ``data:`` line
per line of it). The message's id goes on its last event only: a reconnect
after that id has had all of the message, and one before it gets all of it
again. A message with no fragment becomes a bare ``id:`` (EventSource notes the
position and fires nothing), so a reconnect resumes from the newest message.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pubsubsse.html._fragments import is_fragment, turbo_stream
from pubsubsse.streams._multiplex import MultiplexStream
from pubsubsse.streams._stream import Stream

__all__ = ["FORMATS", "html_stream", "reframe"]

#: The stream formats of ``/event``: ``json`` (the default), ``html`` and ``turbo``.
FORMATS = frozenset({"json", "html", "turbo"})

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_RESET_DATA = b'{"type":"reset"}'
_TURBO_REFRESH = turbo_stream("refresh").encode()


def _events(message: dict[str, Any], turbo: bool) -> list[tuple[bytes, bytes]]:
    """Return a message's events for an HTML stream: (event name, or b"" for message; data)."""
    events: list[tuple[bytes, bytes]] = []
    for item in message.get("sys") or ():
        if isinstance(item, dict) and item.get("type") == "reset":
            events.append((b"", _TURBO_REFRESH) if turbo else (b"reset", _RESET_DATA))
    for update in message.get("updates") or ():
        data: Any = update.get("data") if isinstance(update, dict) else None
        if is_fragment(data):
            name = str(data["event"]).encode()
            if turbo and name != b"message":
                continue  # Turbo listens to message events only
            events.append((b"" if name == b"message" else name, str(data["html"]).encode()))
    return events


def _event(name: bytes, data: bytes) -> bytes:
    """Return an event without its ending: the ``id:`` line (on a message's last event) and a blank line."""
    head = b"event: " + name + b"\n" if name else b""
    lines = _LINE_BREAK.split(data.decode()) if data else [""]
    return head + b"".join(b"data: " + line.encode() + b"\n" for line in lines)


#: A message's body (and the format) -> its events, but for the last one's ``id:`` line and blank
#: line; ``b""`` for a message with nothing for the page, ``None`` for a body that is no message.
#: Every subscriber's stream holds the same body: decoded and framed once, not once per subscriber.
_FRAMED: dict[tuple[bytes, bool], bytes | None] = {}
_FRAMED_MAX = 256
_PUBLISHED = b'{"sys":null,'  # how the body of a published value starts: the same bytes for every subscriber
_UNKNOWN = b"unknown"  # a sentinel: never the framing of a body (which ends with a line break, or is empty)


def _framed(data: bytes, turbo: bool) -> bytes | None:
    key = (data, turbo)
    known = _FRAMED.get(key, _UNKNOWN)  # one lookup: another thread may clear the cache meanwhile
    if known is not _UNKNOWN:
        return known
    framed: bytes | None
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if isinstance(message, dict):
        framed = b"\n".join(_event(name, body) for name, body in _events(message, turbo))
    else:
        framed = None
    if data.startswith(_PUBLISHED):  # a system message is one client's: kept, it would only push out the others
        if len(_FRAMED) >= _FRAMED_MAX:
            _FRAMED.clear()  # bounded; the bodies of the last few publishes are what streams read
        _FRAMED[key] = framed
    return framed


def reframe(chunk: bytes, turbo: bool = False) -> bytes:
    """Return a JSON stream's chunk as an HTML (or, with ``turbo``, a Turbo) stream's chunk.

    A ``retry:`` line and comments pass as they are; an event whose data is not
    a JSON message (none is written) passes unchanged.
    """
    out: list[bytes] = []
    for block in chunk.split(b"\n\n"):
        if not block:
            continue
        event_id: bytes | None = None
        data: bytes | None = None
        for line in block.split(b"\n"):
            if line.startswith(b"id: "):
                event_id = line[4:]
            elif line.startswith(b"data: "):
                data = line[6:]
            else:
                out.append(line + b"\n")  # retry:, a heartbeat comment, an end notice's event:
        if data is None:
            if event_id is not None:
                out.append(b"id: " + event_id + b"\n\n")
            continue
        framed = _framed(data, turbo) if event_id is not None else None
        if event_id is None or framed is None:
            out.append((b"id: " + event_id + b"\n" if event_id is not None else b"") + b"data: " + data + b"\n\n")
        else:
            out.append(framed + b"id: " + event_id + b"\n\n")
    return b"".join(out)


def html_stream(stream: Stream, turbo: bool = False) -> MultiplexStream:
    """Return ``stream`` as an HTML stream (a Turbo stream with ``turbo``): ``/event?format=html`` (or ``turbo``).

    A multiplexed stream of one client, whose chunks are re-framed: under
    gunicorn's gevent worker the process's writer greenlet writes it, and it
    holds no greenlet while idle.
    """
    return MultiplexStream([stream], reframe=lambda chunk, _: reframe(chunk, turbo))
