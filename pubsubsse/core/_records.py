"""The records the state machine owns: clients, topics and groups as plain data with public fields.

Only ``pubsubsse.core._engine.Core`` changes them, with the service's lock
held. Users never see a record: each one carries its ``view``, the handle
(:class:`~pubsubsse.Client`, :class:`~pubsubsse.Topic`, :class:`~pubsubsse.Group`)
that the service made for it when it was created, and that events and lookups
hand out.

Event ids are *positions*: the number of operations applied so far, the same in
every process. A topic keeps its last messages with their positions (its
history); a client keeps only its own system messages (its journal, with the
subscription changes they carry) and the stream attached here, if any. So a
publish costs a process one append to the topic's history plus one offer per
stream it holds, whatever the number of subscribers elsewhere, and a resume is
served from the histories by position.
"""

from __future__ import annotations

import bisect
import enum
from typing import Any, NamedTuple, Protocol

__all__ = [
    "Status",
    "TopicType",
    "ClientRecord",
    "TopicRecord",
    "GroupRecord",
    "Presence",
    "TopicInGroup",
    "AttachPlan",
    "AttachedStream",
    "Change",
    "JOURNAL_SIZE",
    "short_id",
]


def short_id(object_id: str) -> str:
    """Return a shortened id that is safe to log (client ids are credentials)."""
    return object_id[:10] + "…"


class Status(str, enum.Enum):
    """Connection status of a client."""

    #: No stream is attached; its topics keep their last messages for when it reconnects.
    WAITING = "waiting"
    #: A stream is attached and messages flow to it as they are published.
    RECEIVING = "receiving"


class TopicType(str, enum.Enum):
    """Kind of a topic, which decides who can see it."""

    #: Seen by every client.
    PUBLIC = "public"
    #: Seen only by the client that owns it.
    PRIVATE = "private"
    #: Seen by the members of the group that holds it.
    GROUP = "group"


class AttachedStream(Protocol):
    """Where a client's record hands its events while a stream is attached (a :class:`~pubsubsse.Stream`)."""

    token: str

    def offer(self, event_id: int, body: bytes) -> None:
        """Take one event; never block. Called with the service lock held."""
        ...

    def end(self, superseded: bool) -> None:
        """End the stream. Lock held.

        ``superseded``: it is no longer the client's stream (a takeover, a
        detach decided elsewhere) and sends nothing more. Otherwise (the client
        was removed) it first sends everything the client was given.
        """
        ...


class TopicRecord:
    """A topic: its kind, who owns it (a private topic's client, a group topic's group), its subscribers.

    History: ``positions`` and ``bodies`` are its last messages (at most
    ``history_size``, trimmed in steps), ``evicted`` the position of the last
    message dropped from them (0: none). ``local`` are the streams held in this
    process of its subscribers, by client id: the only ones a publish is offered to.
    ``presence`` is set for a topic with live presence (see ``core/_presence``).
    ``history_size`` and ``ttl`` are its own history settings (``None``: the
    service's ``replay_size``, kept until pushed out), ``closed`` the position at
    which :meth:`~pubsubsse.Topic.close` ended it, ``kept_bytes`` the size of its
    bodies (see ``core/_history``).
    """

    __slots__ = (
        "id",
        "type",
        "owner",
        "group",
        "subscribers",
        "local",
        "positions",
        "bodies",
        "evicted",
        "removed",
        "presence",
        "history_size",
        "ttl",
        "closed",
        "kept_bytes",
        "marks",
        "view",
        "_changes",
    )

    def __init__(
        self,
        topic_id: str,
        topic_type: TopicType,
        owner: ClientRecord | None = None,
        group: GroupRecord | None = None,
    ) -> None:
        self.id = topic_id
        self.type = topic_type
        self.owner = owner
        self.group = group
        #: Subscribers by client id, in subscription order.
        self.subscribers: dict[str, ClientRecord] = {}
        self.local: dict[str, AttachedStream] = {}
        self.positions: list[int] = []
        self.bodies: list[bytes] = []
        self.evicted = 0
        self.removed = False
        #: Who is connected among its subscribers, kept only for a topic with live presence.
        self.presence: Presence | None = None
        self.history_size: int | None = None
        self.ttl: float | None = None
        #: The position of the topic's closing (0: open).
        self.closed = 0
        self.kept_bytes = 0
        #: For a topic with a ttl: ``[local time, last position kept by then]``, about one per
        #: second of publishing; this process's own clock, to propose trims (see ``core/_history``).
        self.marks: list[tuple[float, int]] | None = None
        #: The handle users hold (set by the service when the record is made).
        self.view: Any = None
        self._changes: tuple[tuple[Change, ...], tuple[Change, ...]] | None = None

    def change(self, joined: bool) -> tuple[Change, ...]:
        """Return the subscription change "joined" (or "left") this topic, one tuple shared by every client."""
        changes = self._changes
        if changes is None:
            changes = self._changes = (((self, True),), ((self, False),))
        return changes[0] if joined else changes[1]

    def size(self, default: int) -> int:
        """Return how many messages the topic keeps: its own ``history_size``, or ``default``."""
        return default if self.history_size is None else self.history_size

    def keep(self, position: int, body: bytes, history_size: int) -> None:
        """Add a message to the history; drop the oldest beyond ``history_size`` (in steps)."""
        positions = self.positions
        positions.append(position)
        self.bodies.append(body)
        self.kept_bytes += len(body)
        if len(positions) > history_size + (history_size >> 3):
            self._cut(len(positions) - history_size)

    def keep_only(self, size: int) -> None:
        """Drop the oldest messages beyond the last ``size``."""
        self._cut(len(self.positions) - size)

    def trim(self, upto: int) -> None:
        """Drop the messages with positions up to ``upto`` (their time is up)."""
        self._cut(bisect.bisect_right(self.positions, upto))

    def _cut(self, cut: int) -> None:
        if cut <= 0:
            return
        self.evicted = max(self.evicted, self.positions[cut - 1])
        self.kept_bytes -= sum(map(len, self.bodies[:cut]))
        del self.positions[:cut]
        del self.bodies[:cut]

    def between(self, after: int, upto: int, history_size: int) -> list[tuple[int, bytes]] | None:
        """Return the messages with positions in ``(after, upto]``; ``None`` if some are not kept.

        Only the last ``history_size`` count as kept, however many the steps of trimming left.
        """
        positions = self.positions
        spare = len(positions) - history_size
        if (positions[spare - 1] if spare > 0 else self.evicted) > after:
            return None
        start = bisect.bisect_right(positions, after)
        end = bisect.bisect_right(positions, upto, start)
        return list(zip(positions[start:end], self.bodies[start:end]))

    def forget_history(self, floor: int) -> None:
        """Drop the whole history: what came before ``floor`` is not known here."""
        self.positions = []
        self.bodies = []
        self.kept_bytes = 0
        self.evicted = max(self.evicted, floor)


class Presence:
    """Who is connected among a topic's subscribers, and what changed since it was last reported.

    A subscriber is *connected* while a stream of it is attached (its status is
    ``RECEIVING``), in whichever process. ``users`` counts the connected
    subscribers of each user, ``connections`` all of them (with a user or
    not). ``changed`` holds each user whose presence changed since the last
    report, with whether it was present then; ``reported`` is the number of
    connections then.
    """

    __slots__ = ("users", "connections", "changed", "reported", "flushes")

    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.connections = 0
        self.changed: dict[str, bool] = {}
        self.reported = 0
        #: How many ``presence_flush`` operations this process applied (to pace its own proposals).
        self.flushes = 0

    def reported_users(self) -> list[str]:
        """Return the users present at the last report, sorted."""
        changed = self.changed
        return sorted([u for u in self.users if u not in changed] + [u for u, was in changed.items() if was])


class GroupRecord:
    """A group: its topics and its members."""

    __slots__ = ("id", "topics", "members", "removed", "view")

    def __init__(self, group_id: str) -> None:
        self.id = group_id
        self.topics: dict[str, TopicRecord] = {}
        self.members: dict[str, ClientRecord] = {}
        self.removed = False
        self.view: Any = None


class AttachPlan(NamedTuple):
    """A stream to open in this process for ``client``: its first events, its cursor and its token.

    What the ``attach`` operation returns for a stream held here; the service opens the stream and
    sets it as ``client.stream`` with the lock still held.
    """

    client: ClientRecord
    first: list[tuple[int, bytes]]
    cursor: int
    token: str


class TopicInGroup(NamedTuple):
    """A group topic and its group, as a client's group-topic events carry them."""

    topic: TopicRecord
    group: GroupRecord


#: A subscription change a system message carries: the topic, and whether it was subscribed (else left).
Change = tuple["TopicRecord", bool]

#: At most this many system messages are kept per client (trimmed in steps): a resume from before
#: them is a resync.
JOURNAL_SIZE = 64


class ClientRecord:
    """A client: what it sees and is subscribed to, its status, and its system messages.

    ``journal`` holds its last system messages, flat, three items each:
    position, body, and the subscription changes the message announces (see
    :meth:`entries`); ``journal_floor`` is the position of the last one dropped
    (0: none).
    ``stream`` is the stream attached in this process, if any.
    """

    __slots__ = (
        "id",
        "user",
        "status",
        "private",
        "groups",
        "subs",
        "removed",
        "waiting_since",
        "stream_token",
        "detaches",
        "journal",
        "journal_floor",
        "stream",
        "view",
    )

    def __init__(self, client_id: str, now: float, user: str | None = None) -> None:
        self.id = client_id
        #: Who the client is for (one person may have several tabs, so several clients): presence counts users.
        self.user = user
        self.status = Status.WAITING
        self.private: dict[str, TopicRecord] = {}
        self.groups: dict[str, GroupRecord] = {}
        self.subs: dict[str, TopicRecord] = {}
        self.removed = False
        self.waiting_since = now
        #: Which attachment (in whichever process) the client's status refers to.
        self.stream_token: str | None = None
        #: How often a stream of this client has detached; names a WAITING period for expiry.
        self.detaches = 0
        # A flat list trimmed in steps: a tuple per message would cost 64 bytes more, a deque a
        # 64-slot block, for the one or two messages an idle client holds, times tens of thousands.
        self.journal: list[Any] = []
        self.journal_floor = 0
        self.stream: AttachedStream | None = None
        self.view: Any = None

    def note(self, position: int, body: bytes, changes: tuple[Change, ...], sent: bytes | None = None) -> None:
        """Keep a system message of the client and hand it (or ``sent``, what it stands for) to the attached stream.

        Never blocks.
        """
        journal = self.journal
        journal += (position, body, changes)
        if len(journal) > 3 * (JOURNAL_SIZE + (JOURNAL_SIZE >> 3)):
            cut = len(journal) - 3 * JOURNAL_SIZE
            self.journal_floor = journal[cut - 3]
            del journal[:cut]
        if self.stream is not None:
            self.stream.offer(position, body if sent is None else sent)

    def entries(self) -> list[tuple[int, bytes, tuple[Change, ...]]]:
        """Return the journal as ``(position, body, changes)`` triples, oldest first."""
        journal = self.journal
        return list(zip(journal[0::3], journal[1::3], journal[2::3]))

    def set_entries(self, entries: list[tuple[int, bytes, tuple[Change, ...]]]) -> None:
        """Replace the journal with these triples (a snapshot's)."""
        self.journal = [item for entry in entries for item in entry]
