"""SSE framing: every byte of the ``text/event-stream`` format the library writes is made here.

A message body (JSON, one line: see ``core/_messages``) becomes an event with
an ``id:`` and a ``data:`` line; a connection's first chunk starts with
``retry:``; an idle stream sends heartbeat comments; a connection that carries
several clients tags each event ``event: c<index>`` and announces a client's end
with an ``end`` event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = ["EVENT", "HEARTBEAT", "frame", "frames", "retry_field", "end_notice", "tagged"]

#: A heartbeat is a lone comment line. It is not followed by a blank line,
#: because some clients turn "comment + blank line" into an empty event.
HEARTBEAT = b":\n"


#: One SSE event as text: ``EVENT % (event_id, body)``. A template, not a function, because a
#: direct write formats it once per delivery on the publish path.
EVENT = b"id: %d\ndata: %s\n\n"


def frame(event_id: int, body: bytes) -> list[bytes]:
    """Return the pieces of one SSE event (the text of ``EVENT``): ``id:``, ``data:`` and a blank line.

    The body is returned as a separate piece (not copied) so a stream can join
    all the events of one write with a single copy.
    """
    return [b"id: %d\ndata: " % event_id, body, b"\n\n"]


def retry_field(seconds: float) -> bytes:
    """Return the ``retry:`` line that tells EventSource how long to wait before reconnecting."""
    return b"retry: %d\n" % max(0, round(seconds * 1000))


def frames(events: Iterable[tuple[int, bytes]]) -> list[bytes]:
    """Return the pieces of several events (see :func:`frame`), to be joined once."""
    pieces: list[bytes] = []
    for event_id, body in events:
        pieces += (b"id: %d\ndata: " % event_id, body, b"\n\n")
    return pieces


def end_notice(index: int, reason: str) -> bytes:
    """Return the ``end`` event that tells the reader the stream of client ``index`` has ended."""
    return b"event: end\ndata: %s\n\n" % json.dumps({"client": index, "reason": reason}).encode()


_DATA = b"\ndata: "


def tagged(chunk: bytes, index: int) -> bytes:
    """Return a stream's chunk with each event tagged ``event: c<index>``.

    Every event of a stream is an ``id:`` line followed by one ``data:`` line
    (the JSON never holds a line break), so the tag goes before each ``data:``.
    A first chunk's ``retry:`` line stays: it applies to the connection.
    """
    return chunk.replace(_DATA, b"\nevent: c%d%s" % (index, _DATA))
