"""Live presence: who is connected among a topic's subscribers, reported to them in coalesced messages.

A topic with live presence keeps a :class:`~pubsubsse.core._records.Presence`.
Every change of who is connected (a subscription, an unsubscription, a stream
attached or detached) updates its counts at once, so the answers of
``Topic.present_users()`` are exact everywhere, and marks the topic *dirty*.
Subscribers are told only when a ``presence_flush`` operation for the topic is
applied: the timer of a process proposes one for a topic it has seen changed
and unreported for about a second (:func:`due_reports`), the first one applied
reports what changed since the last report, restarts every process's wait, and
any other finds nothing to say. So a reconnect storm of any size costs each
subscriber a message or two, and since the report is an operation of the log,
every process sends the same message at the same position.

A report is a message of the topic itself (kept in its history, offered only to
the streams held here, replayed on resume like a publish). A subscriber that
joins gets the users *as of the last report* in its ``subscribed`` message (and
in an init message): with the report that follows, it then knows exactly who is
there. Reports name users only, never client ids (ids are credentials).
"""

from __future__ import annotations

from collections.abc import Iterable

from pubsubsse.core._messages import presence_item
from pubsubsse.core._records import ClientRecord, Presence, Status, TopicRecord

__all__ = [
    "connect",
    "disconnect",
    "connect_client",
    "disconnect_client",
    "enable",
    "disable",
    "report",
    "REPORT_AFTER",
    "due_reports",
    "full_item",
    "full_items",
    "connected_count",
    "present_users",
]


def connect(dirty: dict[str, TopicRecord], topic: TopicRecord, client: ClientRecord) -> None:
    """Count ``client`` (a subscriber of ``topic`` with a stream attached) as present."""
    presence = topic.presence
    if presence is None:
        return
    presence.connections += 1
    user = client.user
    if user is not None:
        count = presence.users.get(user, 0)
        if not count:
            presence.changed.setdefault(user, False)
        presence.users[user] = count + 1
    dirty[topic.id] = topic


def disconnect(dirty: dict[str, TopicRecord], topic: TopicRecord, client: ClientRecord) -> None:
    """Stop counting ``client`` as present (it unsubscribed, or its stream detached)."""
    presence = topic.presence
    if presence is None:
        return
    presence.connections -= 1
    user = client.user
    if user is not None:
        count = presence.users[user] - 1
        if count:
            presence.users[user] = count
        else:
            del presence.users[user]
            presence.changed.setdefault(user, True)
    dirty[topic.id] = topic


def connect_client(dirty: dict[str, TopicRecord], client: ClientRecord) -> None:
    """Count ``client`` as present in each topic it is subscribed to (a stream of it was attached)."""
    for topic in client.subs.values():
        connect(dirty, topic, client)


def disconnect_client(dirty: dict[str, TopicRecord], client: ClientRecord) -> None:
    """Stop counting ``client`` as present in its topics (its stream detached)."""
    for topic in client.subs.values():
        disconnect(dirty, topic, client)


def enable(dirty: dict[str, TopicRecord], topic: TopicRecord) -> None:
    """Start live presence: everyone connected is reported as joined in the first report."""
    if topic.presence is not None:
        return
    topic.presence = Presence()
    for client in topic.subscribers.values():
        if client.status is Status.RECEIVING:
            connect(dirty, topic, client)
    dirty[topic.id] = topic


def disable(dirty: dict[str, TopicRecord], topic: TopicRecord) -> None:
    """Stop live presence: nothing more is counted or reported."""
    topic.presence = None
    dirty.pop(topic.id, None)


def report(topic: TopicRecord) -> dict[str, object] | None:
    """Return the report of what changed since the last one (and start a new period); ``None``: nothing did."""
    presence = topic.presence
    if presence is None:
        return None
    presence.flushes += 1
    users = presence.users
    joined = sorted(u for u, was in presence.changed.items() if not was and u in users)
    left = sorted(u for u, was in presence.changed.items() if was and u not in users)
    presence.changed = {}
    if not joined and not left and presence.connections == presence.reported:
        return None
    presence.reported = presence.connections
    return presence_item(topic.id, presence.connections, joined=joined, left=left)


#: A process proposes a report of a topic once it has seen the topic changed, and not reported, this long.
REPORT_AFTER = 0.9


def due_reports(
    dirty: Iterable[TopicRecord], seen: dict[str, tuple[int, float]], now: float
) -> tuple[list[str], dict[str, tuple[int, float]]]:
    """Return the topics whose report this process proposes now, and what it has seen (for the next call).

    ``seen`` holds, per dirty topic, the number of reports applied when this process first saw it
    dirty, and when. A report proposed by any process and applied restarts the wait, so however
    many processes there are, a topic gets about one report a second; more only while the log is
    slow: a timer that fires while a proposal is on its way proposes one too (16 processes and a
    log 300 ms slow: about three a second, each with less to say).
    """
    due: list[str] = []
    now_seen: dict[str, tuple[int, float]] = {}
    for topic in dirty:
        if topic.presence is None:
            continue
        flushes = topic.presence.flushes
        first = seen.get(topic.id)
        if first is None or first[0] != flushes:
            first = (flushes, now)
        elif now - first[1] >= REPORT_AFTER:
            due.append(topic.id)
        now_seen[topic.id] = first
    return due, now_seen


def full_item(topic: TopicRecord) -> dict[str, object] | None:
    """Return who was in ``topic`` at its last report, for a subscriber that joins now; ``None`` without presence."""
    presence = topic.presence
    if presence is None:
        return None
    return presence_item(topic.id, presence.reported, users=presence.reported_users())


def full_items(topics: Iterable[TopicRecord]) -> list[dict[str, object]]:
    """Return who is in each of ``topics`` that has live presence (as of its last report)."""
    return [item for item in map(full_item, topics) if item is not None]


def connected_count(topic: TopicRecord) -> int:
    """Return how many subscribers of ``topic`` are connected (live presence or not)."""
    if topic.presence is not None:
        return topic.presence.connections
    return sum(1 for c in topic.subscribers.values() if c.status is Status.RECEIVING)


def present_users(topic: TopicRecord) -> list[str]:
    """Return the users with a connected subscriber of ``topic``, sorted (live presence or not)."""
    if topic.presence is not None:
        return sorted(topic.presence.users)
    return sorted({c.user for c in topic.subscribers.values() if c.user is not None and c.status is Status.RECEIVING})
