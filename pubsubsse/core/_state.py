"""A core's state as data, and back: what a shared log's snapshots hold.

Only what a shared log determines is exported (the registries, each client's
status, subscriptions and journal, each topic's history, the position), never a
process's own streams. The state is exported as items, each JSON-ready fields
and the message bodies it holds: topics with a history first, then clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from pubsubsse.core import _history, _presence
from pubsubsse.core._engine import Core
from pubsubsse.core._records import (
    AttachedStream,
    Change,
    ClientRecord,
    GroupRecord,
    Status,
    TopicRecord,
    TopicType,
)

__all__ = ["Item", "export_groups", "export_topics", "export_clients", "import_state"]

#: One exported object: JSON-ready fields, and the message bodies it holds (as they are).
Item = tuple[dict[str, Any], list[bytes]]


def export_slices(core: Core, lock: AbstractContextManager[Any], size: int) -> Iterator[dict[str, Any] | list[Item]]:
    """Yield the groups, then the topics' and the clients' items ``size`` at a time, holding ``lock`` per slice."""
    with lock:
        groups = export_groups(core)
        topics = list(core.topics.values())
        clients = list(core.clients.values())
    yield groups
    exports: Any = ((export_topics, topics), (export_clients, clients))
    for export, records in exports:
        for start in range(0, len(records), size):
            with lock:
                part = export(core, records[start : start + size])
            if part:
                yield part


def export_groups(core: Core) -> dict[str, Any]:
    """Return the public topics and groups, as JSON-ready data."""
    return {
        "position": core.position,
        "floor": core.floor,
        "public": list(core.public),
        "groups": [{"id": g.id, "topics": list(g.topics), "members": list(g.members)} for g in core.groups.values()],
    }


def export_topics(core: Core, topics: list[TopicRecord]) -> list[Item]:
    """Return the history (and the live presence) of each of ``topics`` that has one, as items."""
    out: list[Item] = []
    for t in topics:
        if t.positions or t.evicted or t.presence is not None or t.closed or t.history_size is not None or t.ttl:
            data: dict[str, Any] = {"topic": t.id, "positions": list(t.positions), "evicted": t.evicted}
            if t.presence is not None:  # the counts follow from the clients; what was last reported does not
                data["presence"] = {"changed": list(t.presence.changed.items()), "reported": t.presence.reported}
            if t.history_size is not None or t.ttl is not None or t.closed:
                data["history"] = {"size": t.history_size, "ttl": t.ttl, "closed": t.closed}
            out.append((data, list(t.bodies)))
    return out


def export_clients(core: Core, clients: list[ClientRecord]) -> list[Item]:
    """Return each client's state as an item: its fields, and the bodies of its journal."""
    out: list[Item] = []
    for c in clients:
        entries = c.entries()
        journal = [[position, [[topic.id, joined] for topic, joined in changes]] for position, _, changes in entries]
        data = {
            "id": c.id,
            "user": c.user,
            "receiving": c.status is Status.RECEIVING,
            "token": c.stream_token,
            "detaches": c.detaches,
            "private": list(c.private),
            "groups": list(c.groups),
            "subs": list(c.subs),
            "journal": journal,
            "journal_floor": c.journal_floor,
        }
        out.append((data, [body for _, body, _ in entries]))
    return out


def import_state(core: Core, groups: dict[str, Any], items: list[Item], seq_offset: int = 0) -> list[AttachedStream]:
    """Make the state the one described, reusing the handles of objects that exist by id.

    Objects not in the description are marked removed. ``seq_offset`` is
    added to the position, for a state that replaces another one whose event
    ids clients may have seen: nothing before the new position is known here
    afterwards (histories and journals start empty; a resume from before it
    is a resync). Returns the streams attached here if the position moved, so
    that the caller can resynchronise them.
    """
    now = core.now()
    position = groups.get("position", 0) + seq_offset
    moved = position != core.position
    core.position = position
    core.floor = position if seq_offset else groups.get("floor", 0)
    histories = {data["topic"]: (data, bodies) for data, bodies in items if "topic" in data}
    clients = [(data, bodies) for data, bodies in items if "topic" not in data]
    old_clients, old_topics, old_groups = core.clients, core.topics, core.groups
    core.clients, core.public, core.groups, core.topics, core.waiting = {}, {}, {}, {}, {}
    core.holders, core.held = {}, {}
    core.local_version += 1

    def topic(
        topic_id: str, kind: TopicType, owner: ClientRecord | None = None, group: GroupRecord | None = None
    ) -> TopicRecord:
        existing = old_topics.get(topic_id)
        if existing is None and kind is not TopicType.PRIVATE:
            existing = core.made_topic(TopicRecord(topic_id, kind, owner=owner, group=group))
        same = existing is not None and existing.type is kind and existing.owner is owner
        if same and existing is not None and existing.group is group:
            existing.subscribers = {}
            existing.local = {}
            return core.add_topic(existing)
        return core.add_topic(core.made(TopicRecord(topic_id, kind, owner=owner, group=group)))

    for topic_id in groups["public"]:
        core.public[topic_id] = topic(topic_id, TopicType.PUBLIC)
    for data in groups["groups"]:
        group = old_groups.get(data["id"]) or core.made_group(GroupRecord(data["id"]))
        group.topics, group.members = {}, {}
        core.groups[group.id] = group
        for topic_id in data["topics"]:
            group.topics[topic_id] = topic(topic_id, TopicType.GROUP, group=group)
    resync: list[AttachedStream] = []
    for data, _ in clients:
        client = old_clients.get(data["id"])
        if client is None:
            client = core.new_client_record(data["id"], data.get("user"))
        core.clients[client.id] = client
        client.status = Status.RECEIVING if data["receiving"] else Status.WAITING
        if not data["receiving"]:
            client.waiting_since = now
            core.waiting[client.id] = client
        client.stream_token = None
        core.set_token(client, data["token"])
        client.detaches = data["detaches"]
        if client.stream is not None and client.stream.token != client.stream_token:
            client.stream.end(superseded=True)
            client.stream = None
        if client.stream is not None and moved:
            resync.append(client.stream)
        client.private, client.groups, client.subs = {}, {}, {}
        for topic_id in data["private"]:
            client.private[topic_id] = topic(topic_id, TopicType.PRIVATE, owner=client)
        for group_id in data["groups"]:
            client.groups[group_id] = core.groups[group_id]
        for topic_id in data["subs"]:
            client.subs[topic_id] = core.topics[topic_id]
    for data in groups["groups"]:
        group = core.groups[data["id"]]
        for client_id in data["members"]:
            group.members[client_id] = core.clients[client_id]
    for client in core.clients.values():  # subscribers in subscription order, as the log built them
        for t in client.subs.values():
            t.subscribers[client.id] = client
        core.set_stream(client, client.stream)
    core.presence_dirty, core.ttl_topics, core.closed = {}, {}, {}
    for t in core.topics.values():
        data, bodies = histories.get(t.id, ({"positions": [], "evicted": 0}, []))
        t.positions, t.bodies, t.evicted = list(data["positions"]), list(bodies), data["evicted"]
        t.kept_bytes = sum(map(len, t.bodies))
        if seq_offset:
            t.forget_history(position)
        _import_presence(core, t, data.get("presence"))
        _import_history(core, t, data.get("history"), now)
    for data, bodies in clients:
        client = core.clients[data["id"]]
        if seq_offset:
            client.journal, client.journal_floor = [], position
            continue
        client.set_entries(
            [(entry[0], body, _changes(core, entry[1], position)) for entry, body in zip(data["journal"], bodies)]
        )
        client.journal_floor = data["journal_floor"]
    for gone in old_clients.values():
        if gone.id not in core.clients:
            gone.removed = True
            if gone.stream is not None:
                gone.stream.end(superseded=True)
                gone.stream = None
    for gone_topic in old_topics.values():
        if gone_topic.id not in core.topics:
            gone_topic.removed = True
    for gone_group in old_groups.values():
        if gone_group.id not in core.groups:
            gone_group.removed = True
    return resync


def _import_presence(core: Core, topic: TopicRecord, described: dict[str, Any] | None) -> None:
    """Rebuild a topic's live presence: its counts from the clients, what was last reported from the snapshot."""
    topic.presence = None
    if described is None:
        return
    _presence.enable(core.presence_dirty, topic)
    presence = topic.presence
    assert presence is not None
    presence.changed = {user: bool(was) for user, was in described["changed"]}
    presence.reported = described["reported"]
    if not presence.changed and presence.reported == presence.connections:
        del core.presence_dirty[topic.id]


def _import_history(core: Core, topic: TopicRecord, described: dict[str, Any] | None, now: float) -> None:
    """Restore a topic's own history settings and whether it is closed (its ttls count from now, here)."""
    described = described or {}
    topic.marks = None
    _history.configure(topic, described.get("size"), described.get("ttl"), now)
    if topic.ttl is not None:
        core.ttl_topics[topic.id] = topic
    topic.closed = int(described.get("closed") or 0)
    if topic.closed:
        core.closed[topic.id] = (topic, now)


def _changes(core: Core, described: list[list[Any]], position: int) -> tuple[Change, ...]:
    """Return the subscription changes of a journal entry, with the topics they name."""
    changes = []
    for topic_id, joined in described:
        topic = core.topics.get(topic_id)
        if topic is None:  # removed since: its history went with it, so a resume across it resyncs
            topic = TopicRecord(topic_id, TopicType.PUBLIC)
            topic.removed = True
            topic.evicted = position
        changes.append((topic, bool(joined)))
    return tuple(changes)
