"""The log backend's base: the transport interface, the options, and the state the engine's threads share."""

from __future__ import annotations

import itertools
import queue
import threading
import time
import uuid
from typing import TYPE_CHECKING, NamedTuple, TypedDict

from pubsubsse.backends._entries import (
    READ_FIRST,
    START,
    Appended,
    Change,
    NotAppended,
    Position,
    Record,
    read_count,
)
from pubsubsse.backends.base import Backend
from pubsubsse.core._engine import Effects

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["LogOptions", "LogTransport", "LogState", "LogSettings", "log_options"]


class LogTransport:
    """Where the log lives: what a :class:`~pubsubsse.backends.log.LogBackend` asks of it.

    A transport (Redis, PostgreSQL, memory) is an object the engine is given;
    it keeps no state of the engine's. Each method raises
    :class:`~pubsubsse.backends.log.LogUnavailable` when the log cannot be
    reached. The engine calls them from its reader, writer and upkeep threads:
    a transport gives each thread its own connection, or locks.
    """

    #: Whether an entry's place in the log is fixed once its append returns: every entry appended
    #: after that, anywhere, comes after it (one stream: yes). If not, a publish returns only once
    #: it is applied here, as every other change does.
    places_on_append = True

    def serve(self, process_token: str) -> None:
        """Read for the process ``process_token`` (called once, before :meth:`connect`)."""

    def hold(self, topics: set[str], again: bool = False) -> None:
        """Learn which topics have a subscriber whose stream this process holds (``again``: say it anew).

        A transport that can may then skip waking the reader for publishes to other topics: they
        are read with the next entry it is woken for, or ``block`` seconds later. The default
        ignores it: every entry wakes the reader.
        """

    def connect(self) -> None:
        """Open the connections; raise :class:`LogUnavailable` if the log cannot be reached."""

    def disconnect(self) -> None:
        """Close the connections."""

    def interrupt(self) -> None:
        """Make a :meth:`read` that waits for entries return now: the engine is closing.

        Called from another thread, before the engine joins its reader. The default does
        nothing: the read then returns within its ``block`` seconds.
        """

    def append(
        self, entries: list[dict[str, bytes]], epoch: str, deadline_ms: int, not_before_ms: int
    ) -> Appended | NotAppended:
        """Append ``entries`` in one atomic step, or refuse them all.

        NotAppended with ``"stale"`` if the log has no epoch or its epoch is not
        ``epoch`` (``"*"`` accepts any, for a publisher that holds no replica), with
        ``"expired"`` if the log's clock is past ``deadline_ms``, with
        ``"early"`` if it is not past ``not_before_ms``. Raise
        :class:`LogUnavailable` if the log did not answer.
        """
        raise NotImplementedError

    def read(self, after: Position, block: float, count: int) -> list[Record]:
        """Return up to ``count`` entries after ``after``, waiting up to ``block`` seconds for one."""
        raise NotImplementedError

    def wake_fileno(self) -> int | None:
        """Return a file descriptor that becomes readable when this process is woken; ``None``: none.

        For a reader that waits on several logs at once (``pubsubsse.backends._merged``): it
        waits until one of them is readable, then takes the wake-ups (:meth:`take_wake_ups`) and
        reads. Woken as :meth:`read` would be: for changes, and for publishes to held topics.
        """
        return None

    def take_wake_ups(self) -> None:
        """Take every wake-up waiting (after :meth:`wake_fileno` was readable)."""

    def read_at(self, after: Position, count: int) -> tuple[str | None, int, list[Record]]:
        """Return the epoch, the clock and up to ``count`` entries after ``after``.

        The clock is read before the entries (an entry appended after it has a later position),
        the epoch after them (a log replaced meanwhile shows its new epoch). The default makes
        three calls; a transport may make them one round trip.
        """
        now = self.now_ms()
        records = self.read(after, 0, count)
        return self.get_epoch(), now, records

    def name_epoch(self, base: str) -> str:
        """Return the name of a new epoch made from the unique ``base``: a log may mark its layout in it.

        The default is ``base``. A Redis log of several streams adds how many, and a process
        built for another number refuses it (:meth:`get_epoch` raises), instead of reading a part.
        """
        return base

    def stream_of(self, position: Position) -> int:
        """Return which of the log's streams ``position`` is in (a log of one stream: 0)."""
        return 0

    def holds(self, before: Position, record: Record) -> bool:
        """Return whether ``record``, read after ``before``, is still in the log where it was.

        ``False`` once the log lost it (a failover that lost the newest entries) or it was trimmed;
        the engine then asks :meth:`trimmed_after` which. A log of several streams answers ``True``
        for an entry trimmed from its stream behind every process (a quiet stream's last one).
        """
        found = self.read(before, 0, 1)
        return bool(found) and found[0].position == record.position and found[0].fields == record.fields

    def head(self) -> Position | None:
        """Return the position of the last entry appended in this epoch (trimmed or not); ``None``: no log."""
        raise NotImplementedError

    def trimmed_after(self, position: Position) -> bool:
        """Return whether entries after ``position`` have been removed from the log (trimmed)."""
        raise NotImplementedError

    def now_ms(self) -> int:
        """Return the log's clock, in milliseconds."""
        raise NotImplementedError

    def get_epoch(self) -> str | None:
        """Return the log's epoch, or ``None`` if it has none (new, or lost)."""
        raise NotImplementedError

    def create_epoch(self, epoch: str) -> None:
        """Give the log its first epoch, unless it has one already."""
        raise NotImplementedError

    def replace_log(self, old_epoch: str | None, new_epoch: str, snapshot: bytes) -> bool:
        """If the epoch is still ``old_epoch``: store ``snapshot``, empty the log, set ``new_epoch``; atomically."""
        raise NotImplementedError

    def load_snapshot(self) -> bytes | None:
        """Return the stored snapshot, or ``None``."""
        raise NotImplementedError

    def store_snapshot(self, blob: bytes, owner: str) -> None:
        """Store ``blob`` as the snapshot, if ``owner`` still holds the snapshot lock."""
        raise NotImplementedError

    def lock_snapshot(self, owner: str, seconds: float) -> bool:
        """Take the snapshot lock for ``seconds`` unless another process holds it."""
        raise NotImplementedError

    def unlock_snapshot(self, owner: str) -> None:
        """Release the snapshot lock if ``owner`` holds it."""
        raise NotImplementedError

    def trim(self, before: Position, reported_after: float) -> None:
        """Remove the entries before ``before`` that every live process has applied; atomically.

        A process is live if its last report's wall time is later than
        ``reported_after``; no entry after a live process's reported position
        is removed. The reports are read in the same atomic step as the entries
        are removed: a process that reported before the trim is never trimmed past.
        """
        raise NotImplementedError

    def report(self, process_token: str, position: Position, wall: float, version: int) -> None:
        """Record that process ``process_token`` applied the log up to ``position`` at ``wall``, reading ``version``."""
        raise NotImplementedError

    def reports(self) -> dict[str, tuple[Position, float, int]]:
        """Return every process's last report: position, wall time and the newest format it reads."""
        raise NotImplementedError

    def forget(self, process_tokens: list[str]) -> None:
        """Remove the reports of ``process_tokens`` (processes dead for long)."""
        raise NotImplementedError


class LogOptions(TypedDict, total=False):
    """The options of every log backend (``RedisBackend(url, **options)``), all in seconds unless said otherwise.

    ``timeout`` (default 5)
        How long a change may wait to be sent, and the network timeout. A
        change is appended only until ``timeout`` after it was sent, on the
        log's clock.
    ``outcome_timeout`` (default 60)
        How long a change whose append got no answer waits for the log to
        answer again (to learn whether it was applied) before it raises with
        ``outcome_unknown``.
    ``snapshot_every`` (entries, default 10000)
        How often a snapshot is stored and the log trimmed.
    ``alive`` (default 30)
        A process that has neither reported its position nor written for this
        long is dead: the streams it held are detached.
    """

    timeout: float
    outcome_timeout: float
    snapshot_every: int
    alive: float


class LogSettings(NamedTuple):
    """The options, checked and complete with their defaults (see :class:`LogOptions`)."""

    timeout: float
    outcome_timeout: float
    snapshot_every: int
    alive: float


def log_options(
    *, timeout: float = 5.0, outcome_timeout: float = 60.0, snapshot_every: int = 10000, alive: float = 30.0
) -> LogSettings:
    """Return the options complete with their defaults; raise :class:`ValueError` for a bad value."""
    for name, value in [("timeout", timeout), ("outcome_timeout", outcome_timeout), ("alive", alive)]:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or snapshot_every < 1:
        raise ValueError(f"snapshot_every must be a positive int, got {snapshot_every!r}")
    return LogSettings(float(timeout), float(outcome_timeout), snapshot_every, float(alive))


class LogState(Backend):
    """The state the log backend's threads share; its options are :class:`LogOptions`."""

    shared = True

    def __init__(self, transport: LogTransport, **options: Unpack[LogOptions]) -> None:
        super().__init__()
        settings = log_options(**options)
        #: Where the log lives.
        self.transport = transport
        self.timeout = settings.timeout
        self.outcome_timeout = settings.outcome_timeout
        self.snapshot_every = settings.snapshot_every
        self.alive = settings.alive
        #: This process's token (the service's ``process_token``): the origin of the entries it writes.
        #: An entry's origin is the token of the process that wrote it, or a Publisher's ``Q-`` id.
        self._process_token = ""
        self._numbers = itertools.count(1)
        #: The origin of the changes written into applications' transactions: like a Publisher's,
        #: never a copy of another entry, and not one the reader settles.
        self._staging_origin = "Q-" + uuid.uuid4().hex
        self._outbox: queue.Queue[Change | None] = queue.Queue()
        #: Changes sent and not settled yet, by number.
        self._waiting: dict[int, Change] = {}
        self._waiting_lock = threading.Lock()
        #: Events of eventual changes to fire, barriers of sync() (set when reached), None to stop.
        self._events: queue.Queue[Effects | threading.Event | None] = queue.Queue()
        #: Position of the last entry applied here; changed only by the reader, after applying.
        self._position: Position = START
        #: Per stream of the log (one but in a merged log), the position before the last entry
        #: applied from it and that entry (none after a snapshot was loaded): a log that lost it
        #: lost entries this process applied.
        self._last_applied: dict[int, tuple[Position, Record]] = {}
        #: The version of the held topics last told to the transport (-1: tell them, all anew).
        self._held_version = -1
        self._applied = threading.Condition()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._check_needed = threading.Event()
        self._load_error = "not loaded yet"
        self._epoch: str | None = None
        #: Per origin, the number of the last entry applied from it (carried by snapshots).
        self._origins: dict[str, int] = {}
        #: Per origin, when (monotonic) an entry of it was last applied here.
        self._last_written: dict[str, float] = {}
        self._reports: dict[str, tuple[Position, float, int]] = {}
        #: When (wall clock, and monotonic) ``_reports`` were read from the log.
        self._reports_read_at = (0.0, -1e9)
        #: Since when (monotonic) this process has followed the log without a gap: only a process
        #: silent for ``alive`` seconds of that is dead (an outage silenced every process alike).
        self._watching_since = time.monotonic()
        self._clock_offset = 0.0
        self._clock_checked = -1e9
        self._since_snapshot = 0
        self._reported = 0.0
        #: When (monotonic) the last report that reached the log was sent; until a trim check
        #: after the next one, a report older than ``alive / 2`` may have looked dead to a trim.
        self._report_sent = -1e9
        self._trim_check_due = True
        self._last_read = time.monotonic()
        self._read_count = READ_FIRST
        #: Whether the streams held here were ended because the log was out of reach (once per cut).
        self._streams_ended = False
        self._warned: set[str] = set()
        self._counts = {
            "log_entries_applied": 0,
            "log_entries_skipped": 0,
            "log_changes_refused": 0,
            "log_changes_retried": 0,
            "log_reseeds": 0,
            "log_reloads": 0,
            "log_snapshots": 0,
            "log_thread_restarts": 0,
        }
        self.longest_snapshot_slice = 0.0
        self._threads: list[threading.Thread] = []

    def _read(self, block: float) -> list[Record]:
        """Read the entries after this process's position: as many as the last read's sizes allow."""
        records = self.transport.read(self._position, block, self._read_count)
        if records:
            self._read_count = read_count(self._read_count, records)
        return records

    # The reader's, in LogBackend; the upkeep calls them too.

    def _apply_records(self, records: list[Record]) -> None:
        raise NotImplementedError

    def _settle(self, number: int, result: object, effects: Effects | None) -> None:
        raise NotImplementedError
