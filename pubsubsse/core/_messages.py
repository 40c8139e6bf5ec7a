"""The JSON bodies of the messages (see the protocol's "Messages"); their SSE framing is in ``streams/_sse``.

A published value is encoded exactly once, by :func:`encode_update`; the same
``bytes`` object is then handed to every subscriber.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import email.utils
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Callable, Union

from pubsubsse.errors import LimitReached

if TYPE_CHECKING:
    from pubsubsse.core._records import TopicRecord

__all__ = [
    "dumps",
    "everyday_types",
    "JsonDumps",
    "encode_update",
    "encode_sys",
    "RESET_ITEM",
    "topics_item",
    "id_list_item",
    "presence_item",
]


def everyday_types(value: Any) -> Any:
    """Turn the everyday Python types JSON lacks into JSON values, as Flask's own JSON does.

    ``datetime`` and ``date`` become HTTP dates (``"Wed, 21 Oct 2015 07:28:00
    GMT"``; a naive datetime is taken as UTC), ``Decimal`` and ``UUID`` strings,
    a dataclass instance a dict of its fields, an object with ``__html__``
    (markupsafe's ``Markup``) its HTML. Anything else raises :class:`TypeError`.
    """
    if isinstance(value, datetime.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=datetime.timezone.utc)
        return email.utils.formatdate(aware.timestamp(), usegmt=True)
    if isinstance(value, datetime.date):
        return email.utils.formatdate(
            datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc).timestamp(), usegmt=True
        )
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    html = getattr(value, "__html__", None)
    if callable(html):
        return str(html())
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=True, default=everyday_types
).encode

#: ``json_dumps(value) -> str | bytes``: a function that encodes a published value as JSON.
JsonDumps = Callable[[Any], Union[str, bytes]]


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON (with :func:`everyday_types` for what JSON lacks).

    Raises :class:`TypeError` for values JSON cannot represent and
    :class:`ValueError` for NaN or infinities (which are not JSON). The output
    never contains a raw CR or LF, so it fits on one ``data:`` line.
    """
    return _dumps(value).encode("utf-8")


def encode_update(topic_id: str, data: Any, json_dumps: JsonDumps | None = None, max_bytes: int | None = None) -> bytes:
    """Return the message body that carries ``data`` published to a topic.

    ``json_dumps`` replaces :func:`dumps` for ``data`` (to choose date formats,
    or a faster encoder). Its output must be one line of JSON: a raw CR or LF
    raises :class:`ValueError`, because it would end the SSE event early. A
    body over ``max_bytes`` raises :class:`~pubsubsse.errors.LimitReached`.
    """
    if json_dumps is None:
        encoded = dumps(data)
    else:
        out = json_dumps(data)
        encoded = out.encode("utf-8") if isinstance(out, str) else out
        if b"\n" in encoded or b"\r" in encoded:
            raise ValueError("json_dumps returned a raw line break; it must encode compactly, on one line")
    body = b'{"sys":null,"updates":[{"topic":"%s","data":%s}]}' % (topic_id.encode("utf-8"), encoded)
    if max_bytes is not None and len(body) > max_bytes:
        raise LimitReached(f"max_payload_bytes: the encoded message has {len(body)} bytes")
    return body


def topics_item(topics: Iterable[TopicRecord]) -> dict[str, Any]:
    """Return the ``topics`` sys element: the full list of topics a client can see."""
    return {"type": "topics", "list": [{"id": t.id, "type": t.type.value} for t in topics]}


#: The ``reset`` sys element: messages may have been missed; what the client shows must be fetched again.
RESET_ITEM: dict[str, Any] = {"type": "reset"}


def id_list_item(kind: str, topics: Iterable[TopicRecord]) -> dict[str, Any]:
    """Return a ``subscribed`` or ``unsubscribed`` sys element for ``topics``."""
    return {"type": kind, "list": [{"id": t.id} for t in topics]}


def presence_item(
    topic_id: str,
    connections: int,
    *,
    users: list[str] | None = None,
    joined: Sequence[str] = (),
    left: Sequence[str] = (),
) -> dict[str, Any]:
    """Return a ``presence`` sys element: who is in a topic (``users``), or who came and went (``joined``, ``left``)."""
    if users is not None:
        return {"type": "presence", "topic": topic_id, "connections": connections, "users": users}
    item: dict[str, Any] = {"type": "presence", "topic": topic_id, "connections": connections}
    item.update(joined=list(joined), left=list(left))
    return item


def encode_sys(items: Sequence[dict[str, Any]]) -> bytes:
    """Return the message body of a system message made of ``items``."""
    return dumps({"sys": list(items), "updates": None})
