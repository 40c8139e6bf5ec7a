"""Message encoding: the JSON bodies of PROTOCOL.md section 3 and their SSE framing.

Everything that turns state into bytes on the wire lives here, so the wire
format can be read (and changed) in one place. A published value is encoded
exactly once, by :func:`encode_update`; the same ``bytes`` object is then handed
to every subscriber and only the short ``id:`` prefix is written per client.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import Topic

__all__ = [
    "encode_update",
    "encode_sys",
    "topics_item",
    "id_list_item",
    "frame",
    "retry_field",
    "HEARTBEAT",
]

#: A heartbeat is a lone comment line. It is not followed by a blank line,
#: because some clients turn "comment + blank line" into an empty event.
HEARTBEAT = b":\n"

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=True).encode


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON.

    Raises :class:`TypeError` for values JSON cannot represent and
    :class:`ValueError` for NaN or infinities (which are not JSON). The output
    never contains a raw CR or LF, so it fits on one ``data:`` line.
    """
    return _dumps(value).encode("utf-8")


def encode_update(topic_id: str, data: Any) -> bytes:
    """Return the message body that carries ``data`` published to a topic."""
    return b'{"sys":null,"updates":[{"topic":"%s","data":%s}]}' % (
        topic_id.encode("ascii"),
        dumps(data),
    )


def topics_item(topics: Iterable[Topic]) -> dict[str, Any]:
    """Return the ``topics`` sys element: the full list of topics a client can see."""
    return {"type": "topics", "list": [{"id": t.id, "type": t.type.value} for t in topics]}


def id_list_item(kind: str, topics: Iterable[Topic]) -> dict[str, Any]:
    """Return a ``subscribed`` or ``unsubscribed`` sys element for ``topics``."""
    return {"type": kind, "list": [{"id": t.id} for t in topics]}


def encode_sys(items: Sequence[dict[str, Any]]) -> bytes:
    """Return the message body of a system message made of ``items``."""
    return dumps({"sys": list(items), "updates": None})


def frame(event_id: int, body: bytes) -> list[bytes]:
    """Return the pieces of one SSE event; joined, they are ``id:``, ``data:`` and a blank line.

    The body is returned as a separate piece (not copied) so a stream can join
    all the events of one write with a single copy.
    """
    return [b"id: %d\ndata: " % event_id, body, b"\n\n"]


def retry_field(seconds: float) -> bytes:
    """Return the ``retry:`` line that tells EventSource how long to wait before reconnecting."""
    return b"retry: %d\n" % max(0, round(seconds * 1000))
