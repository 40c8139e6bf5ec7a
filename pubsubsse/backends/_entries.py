"""The shared log's entries and what its transport answers: the format every process reads.

Public names are exported by :mod:`pubsubsse.backends.log`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from pubsubsse.core._engine import Effects
from pubsubsse.errors import BackendUnavailable

__all__ = [
    "Position",
    "START",
    "FORMAT",
    "OLDEST_FORMAT",
    "SEQ_JUMP",
    "READ_COUNT",
    "READ_BYTES",
    "READ_FIRST",
    "LogUnavailable",
    "NotAppended",
    "Appended",
    "Record",
    "Change",
    "WITH_BODY",
    "MADE_HERE",
    "SETTLED_ON_APPEND",
    "encode_entry",
    "decode_entry",
    "check_update_body",
    "loads",
    "read_count",
]

#: A place in the log: two integers that order the entries (Redis: the entry id's two parts).
Position = tuple[int, int]
START: Position = (0, 0)

#: The entry format this version writes, and the oldest it still reads and writes.
FORMAT = 2
OLDEST_FORMAT = 2

#: How far every client's event ids jump when a lost log is replaced (see "A lost log").
SEQ_JUMP = 1 << 20

#: The most entries one read of the log asks for, and the bytes a read aims at. A read's reply is
#: held whole while it is applied, so after a read of big entries the next asks for fewer (16 KB
#: bodies: 63 a read; 4 MB: one). Small ones are read 1,000 at a time: reads of 100 cost Redis
#: two to four times as much CPU per entry (``bench.log_ceiling``), and one log is bound by it.
READ_COUNT = 1000
READ_BYTES = 1 << 20
#: What the first read asks for (the sizes are not known yet); a read asks for at most twice as
#: many as the one before. Neither Redis nor PostgreSQL reads up to a number of bytes, so big
#: entries right after small ones can still come 1,000 in one read, once.
READ_FIRST = 100


class LogUnavailable(Exception):
    """Raised by a transport when the log did not answer.

    ``sent`` is ``False`` when nothing reached the log (the connection could
    not be made): an append that raises this was certainly not applied.
    Otherwise its outcome is unknown.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class NotAppended:
    """The log refused an append, so nothing of it was appended.

    ``reason``: ``"expired"`` (past its deadline), ``"stale"`` (the epoch
    changed: the log was lost and replaced) or ``"early"`` (a marker before
    the time it must wait for).
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Appended:
    """The log appended a batch: the positions of its entries, in order."""

    __slots__ = ("positions",)

    def __init__(self, positions: list[Position]) -> None:
        self.positions = positions


class Record:
    """An entry as read back from the log: its position and its fields."""

    __slots__ = ("position", "fields")

    def __init__(self, position: Position, fields: dict[bytes, bytes]) -> None:
        self.position = position
        self.fields = fields


def read_count(asked: int, records: list[Record]) -> int:
    """Return how many entries to ask for after ``records`` (``asked`` for): ``READ_BYTES`` of their largest."""
    # The bodies only (a change's command is small): this runs for every entry read, and looking
    # up one field costs a fifth of summing all of them.
    largest = max(len(record.fields.get(b"b", b"")) for record in records) if records else 0
    # 256: what an entry costs besides its body.
    return max(1, min(READ_COUNT, 2 * asked, READ_BYTES // (largest + 256)))


class Change:
    """One change on its way through the log, and what its caller waits for.

    Its fields are guarded by ``LogBackend._waiting_lock`` until ``done`` is set.
    """

    __slots__ = ("operation", "args", "number", "epoch", "eventual", "cancelled", "done", "result", "effects", "error")

    def __init__(self, operation: str, args: tuple[Any, ...], eventual: bool = False) -> None:
        self.operation = operation
        self.args = args
        #: Set by the writer when the change goes into a batch; 0 until then.
        self.number = 0
        #: The epoch of the log it was sent to (set by the writer before it sends it).
        self.epoch: str | None = None
        #: Nobody waits: retried until applied, its events fired by the events thread.
        self.eventual = eventual
        #: The caller gave up before the change was sent: it never will be.
        self.cancelled = False
        self.done = threading.Event()
        self.result: Any = None
        self.effects: Effects | None = None
        self.error: BackendUnavailable | None = None

    def fail(self, message: str, unknown: bool = False) -> None:
        error = BackendUnavailable(message)
        error.outcome_unknown = unknown
        self.error = error
        self.done.set()


#: Operations whose result is made by the process that applies them (a stream, a handle): one a
#: replaced log's base holds but this process did not apply cannot return it.
MADE_HERE = frozenset(
    {
        "new_client",
        "new_public_topic",
        "new_private_topic",
        "new_group",
        "new_group_topic",
        "ensure_public_topic",
        "ensure_group",
        "ensure_group_topic",
        "attach",
    }
)

#: Operations whose last argument is a message body: format 2 carries it in a field of its own.
WITH_BODY = frozenset({"pub", "pub_named"})

#: How old (seconds) the reports read from the log and the last read of it may be for this
#: process to judge another one dead (reports are read every second).

#: Operations whose caller waits only until the log holds them, not until they are applied here:
#: a publish returns nothing and fires no event, and its place in the log is fixed once appended
#: (any later change of the caller's comes after it). Waiting for the apply too would serialise
#: a process's publishes behind its own fan-out: each log read would bring one entry, and each
#: stream would get one write per event instead of one per read.
SETTLED_ON_APPEND = frozenset({"pub"})


def encode_entry(origin: str, number: int, operation: str, args: tuple[Any, ...], version: int) -> dict[str, bytes]:
    """Return the fields of a log entry in format ``version`` (2, the only one so far)."""
    fields = {"v": b"%d" % version}
    if operation in WITH_BODY:  # the body is JSON already: carried as it is, next to the command
        fields["b"] = args[1]
        args = args[:1]
    fields["e"] = compact_json([origin, number, operation, list(args)])
    return fields


def decode_entry(fields: dict[bytes, bytes]) -> tuple[str, int, str, tuple[Any, ...]]:
    """Return ``(origin, number, operation, args)``; raise :class:`ValueError` for anything else."""
    version = fields.get(b"v")
    if version == b"2":
        origin, number, operation, args = loads(fields[b"e"])
        if operation in WITH_BODY and isinstance(args, list):
            args = [*args, fields[b"b"]]
    else:
        raise ValueError(f"entry format {version!r} is not one this version reads")
    if not (isinstance(origin, str) and isinstance(number, int) and isinstance(operation, str)):
        raise ValueError("malformed entry")
    if not isinstance(args, list):
        raise ValueError("malformed entry")
    return origin, number, operation, tuple(args)


def loads(data: bytes) -> Any:
    """``json.loads(data)``, without its encoding detection for the JSON this library writes.

    For bytes, ``json.loads`` first guesses the encoding from the first four bytes (a third of
    its time on a small message); UTF-8 JSON that starts with ``{"`` or ``["`` is guessed as
    UTF-8 every time, so this decodes it as ``json.loads`` would and skips the guess. Anything
    else goes to ``json.loads`` as it is: every version accepts and refuses the same entries.
    """
    if data[:2] in (b'{"', b'["'):
        return json.loads(data.decode("utf-8", "surrogatepass"))
    return json.loads(data)


def check_update_body(args: tuple[Any, ...]) -> None:
    """Raise :class:`ValueError` unless ``args`` end with a message body as this library encodes it.

    Bodies go to browsers as they are, inside an SSE event: a body written into the log by
    anything else (not JSON, a line break that would end the event, another topic) must not.
    """
    if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], bytes):
        raise ValueError("arguments of a publish have the shape (topic id, body)")
    try:
        message = loads(args[1])
    except (ValueError, RecursionError):
        raise ValueError("a published body is not JSON") from None
    if not isinstance(message, dict):
        raise ValueError("a published body is not a message this library encodes")
    updates = message.get("updates")
    if (
        b"\n" in args[1]
        or b"\r" in args[1]
        or message.get("sys", 0) is not None
        or not isinstance(updates, list)
        or len(updates) != 1
        or not isinstance(updates[0], dict)
        or updates[0].get("topic") != args[0]
        or "data" not in updates[0]
    ):
        raise ValueError("a published body is not a message this library encodes")


def compact_json(value: Any) -> bytes:
    """Return ``value`` as compact UTF-8 JSON: how entries and snapshots store their JSON parts."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
