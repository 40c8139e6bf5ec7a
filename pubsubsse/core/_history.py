"""Topic history: what a topic keeps, a subscription from the start of it, its time limit, its end.

A topic keeps its last messages with their positions (``TopicRecord.keep``):
``replay_size`` of them, or its own ``history_size``, for resumes. A subscription
*from the start* (``client.sub(topic, since="start")``) gets, in the one message
that tells the client it is subscribed, every published value the topic still
keeps, in order: that message has the subscription's position, so the values
are not sent again as live messages, a resume replays the message like any
other, and nothing published after it is in it. Its ``history`` element says
how many values it holds and whether the topic kept all it ever had. The
client's journal keeps a reference (the topic and the position), not a copy:
a replay rebuilds the message from the topic's history, so a thousand pages
opened during a job cost the job's history once.

A topic with a ``ttl`` drops messages older than that many seconds. Time is
each process's own, so trims are operations of the log: every process proposes
one when its own clock says that messages are due (the timer, about once a
second), and the first applied trims alike everywhere. A closed topic
(:meth:`~pubsubsse.Topic.close`) takes no more publishes; its subscribers get
a ``closed`` element; with a ``ttl`` it is removed that many seconds later,
proposed the same way.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from typing import Any

from pubsubsse.core._messages import dumps
from pubsubsse.core._records import TopicRecord

__all__ = [
    "MAX_HISTORY",
    "UPDATE_PREFIX",
    "configure",
    "note_time",
    "start_body",
    "reference",
    "expand",
    "closed_item",
    "due_trims",
    "trimmed",
    "due_removals",
]

#: The most messages a topic may keep (``history=``); each at most ``max_payload_bytes``.
MAX_HISTORY = 100_000

#: How every published message's body begins (see ``core/_messages.encode_update``).
UPDATE_PREFIX = b'{"sys":null,"updates":['

#: A ttl topic keeps a time mark about this often while it is published to (seconds).
_MARK_EVERY = 1.0

#: How a journal entry that stands for a subscription's history begins (no message body starts with a NUL).
_REFERENCE = b"\x00history\x00"


def configure(topic: TopicRecord, size: int | None, ttl: float | None, now: float) -> None:
    """Set a topic's own history size and ttl (``None``: the service's size; no time limit)."""
    topic.history_size = size
    topic.ttl = ttl
    if ttl is None:
        topic.marks = None
    elif topic.marks is None:
        # What it keeps already is taken as kept from now: its age is not known here.
        topic.marks = [(now, topic.positions[-1])] if topic.positions else []


def note_time(topic: TopicRecord, position: int, now: float) -> None:
    """Remember, for a topic with a ttl, that ``position`` was kept by ``now``."""
    marks = topic.marks
    if marks is None:
        return
    if marks and now - marks[-1][0] < _MARK_EVERY:
        marks[-1] = (marks[-1][0], position)
    else:
        marks.append((now, position))


def start_body(topic: TopicRecord | None, size: int, items: list[dict[str, Any]], upto: int, topic_id: str) -> bytes:
    """Return the message of a subscription from the start at position ``upto`` + 1.

    ``items``, then the values the topic keeps up to position ``upto`` in ``updates`` (none if
    it was removed since), and a ``closed`` element if it was closed by then.
    """
    values: list[bytes] = []
    complete = False
    if topic is not None:
        spare = max(0, len(topic.positions) - size)
        end = bisect.bisect_right(topic.positions, upto, spare)
        values = [body[len(UPDATE_PREFIX) : -2] for body in topic.bodies[spare:end] if body.startswith(UPDATE_PREFIX)]
        # Complete: nothing the topic ever had was dropped (positions start at 1).
        complete = (topic.positions[spare - 1] if spare > 0 else topic.evicted) == 0
    history: dict[str, Any] = {"type": "history", "topic": topic_id, "messages": len(values), "complete": complete}
    sys = [*items, history]
    if topic is not None and 0 < topic.closed <= upto:
        sys.append(closed_item(topic_id))
    return b'{"sys":%s,"updates":%s}' % (dumps(sys), b"[" + b",".join(values) + b"]" if values else b"null")


def reference(topic_id: str, upto: int, items: list[dict[str, Any]]) -> bytes:
    """Return what a client's journal keeps of a subscription from the start: a reference, not a copy."""
    return _REFERENCE + dumps([topic_id, upto, items])


def expand(topics: dict[str, TopicRecord], body: bytes, default_size: int) -> bytes:
    """Return the message a journal entry stands for: ``body`` itself, or the message a reference names."""
    if not body.startswith(_REFERENCE):
        return body
    topic_id, upto, items = json.loads(body[len(_REFERENCE) :])
    topic = topics.get(topic_id)
    return start_body(topic, default_size if topic is None else topic.size(default_size), items, upto, topic_id)


def closed_item(topic_id: str) -> dict[str, Any]:
    """Return the ``closed`` sys element: the topic has ended and takes no more messages."""
    return {"type": "closed", "topic": topic_id}


def due_trims(topics: Iterable[TopicRecord], now: float) -> list[tuple[str, int]]:
    """Return ``(topic id, position)``: trims this process's clock says are due (messages older than the ttl).

    Proposed again at every tick until one is applied (:func:`trimmed` then drops the marks).
    """
    due = []
    for topic in topics:
        marks, ttl = topic.marks, topic.ttl
        if not marks or ttl is None:
            continue
        upto = 0
        # A mark's messages were all kept by the time of the next mark, at most a second later.
        for at, position in marks:
            if now - at - _MARK_EVERY <= ttl:
                break
            upto = position
        if upto:
            due.append((topic.id, upto))
    return due


def trimmed(topic: TopicRecord, upto: int) -> None:
    """Drop the messages up to position ``upto``, and the time marks they are past."""
    topic.trim(upto)
    marks = topic.marks
    if marks:
        while marks and marks[0][1] <= upto:
            marks.pop(0)


def due_removals(closed: dict[str, tuple[TopicRecord, float]], now: float) -> list[str]:
    """Return the ids of closed topics whose ttl has passed since this process applied their closing."""
    return [topic_id for topic_id, (topic, at) in closed.items() if topic.ttl is not None and now - at >= topic.ttl]
