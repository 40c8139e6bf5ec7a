"""A log spread over several streams and read back in one order: the engine's side of partitioning.

:class:`MergedTransport` composes N transports (the *streams*; each a whole
log of its own: Redis keys with a hash tag each, or memory) into the one log a
:class:`~pubsubsse.backends.log.LogBackend` reads.

Appends
    A process appends every batch to its own stream (``home``), so a batch is
    still appended whole or not at all by one stream, its deadline checked on
    that stream's clock, and the marker that settles an unanswered append goes
    to the same stream, after it.

One order
    An entry's place is (its id in its stream, the stream's number). A read
    takes every stream's clock, then its entries; an entry is returned once no
    stream can still get one that comes before it: a stream's next id is at
    least its clock as read and above its last id. So a publish returns once
    it is applied here, as every other change does, not once it is appended. A merged position encodes
    (id, stream) in the engine's two integers, ``(ms, seq * N + stream)``, so
    reports, snapshots and resumes keep one position. Clocks apart only delay
    delivery. Since a change returns once it is applied, that is once every
    stream's clock was read past it, whatever is appended after it, anywhere,
    comes after it.

A clock that steps back
    could give an entry a place before one already applied. A reader notices
    (its stream is read from the last entry taken from it, not from the merged
    position) and reports the log as having lost entries (:meth:`holds`), so the
    engine seeds a new epoch and every stream resyncs, announced.

The epoch, the snapshot and the reports
    The first stream holds the snapshot and its lock; its epoch is the log's.
    Every stream checks its own copy of the epoch on append; a replace sets
    the first stream's, then every other's, and a read or an append that finds
    a stream of another epoch sets it there (a replace that stopped halfway)
    and reports the read as failed, so the engine checks the log. Every stream
    keeps every process's report, as the position in that stream, so each trims
    on its own, below the slowest live process.
"""

from __future__ import annotations

import random
import select
import threading
import time
from collections.abc import Sequence

from pubsubsse.backends._entries import START, Appended, LogUnavailable, NotAppended, Position, Record
from pubsubsse.backends._log_base import LogTransport

__all__ = ["MergedTransport", "checked_layout"]

_SEQ_MAX = (1 << 64) - 1
#: How long a read that found nothing to return waits before it looks again, at first and at most
#: (seconds); an append of this process ends the wait.
_FIRST_PAUSE = 0.001
_LAST_PAUSE = 0.016


def checked_layout(epoch: str, partitions: int, where: str) -> str:
    """Return ``epoch`` if it names ``partitions`` streams (``~pN``, none: one); else raise ``LogUnavailable``.

    A process built for another number would read part of the log, or miss part of it.
    """
    marked = epoch.partition("~p")[2].partition("/")[0]
    if (int(marked) if marked.isdigit() else 1) != partitions:
        raise LogUnavailable(
            f"the log at {where} is in {marked or 1} partition(s), this process is built for {partitions}:"
            " every process of a service needs the same partitions=",
            sent=False,
        )
    return epoch


def _predecessor(position: Position) -> Position:
    milliseconds, sequence = position
    return (milliseconds, sequence - 1) if sequence else (milliseconds - 1, _SEQ_MAX)


class MergedTransport(LogTransport):
    """N transports read as one log, each process appending to its own (see the module's docstring).

    ``streams``: the transports, in an order every process shares (the first
    holds the snapshot). ``home``: the stream this process appends to; a
    random one by default. Each process needs its own ``MergedTransport``
    (it remembers what it read); the streams may be shared.
    """

    #: An entry's place is known only once every stream's clock was read past it.
    places_on_append = False

    def __init__(self, streams: Sequence[LogTransport], home: int | None = None) -> None:
        if not streams:
            raise ValueError("a merged log needs at least one stream")
        self.streams = list(streams)
        self._count = len(self.streams)
        if home is None:
            home = random.randrange(self._count)
        if not 0 <= home < self._count:
            raise ValueError(f"home must name one of the {self._count} streams, got {home!r}")
        self.home = home
        #: Per stream, the last id returned from it, while reads go on from where the last one ended.
        self._taken: list[Position | None] = [None] * self._count
        self._ended_at: Position = START
        #: Set when a stream gave an entry before one already returned (its clock stepped back).
        self._out_of_order = False
        #: Whether the log's epoch was read once (a transport may refuse one of another layout).
        self._layout_checked = False
        self._lock = threading.Lock()
        self._appended = threading.Condition()
        self._interrupts = 0

    def __repr__(self) -> str:
        return f"<MergedTransport of {self._count} streams, home {self.home}>"

    # Positions ----------------------------------------------------------------------------------

    def merged(self, position: Position, stream: int) -> Position:
        """Return the merged position of ``position`` in stream number ``stream``."""
        return (position[0], position[1] * self._count + stream)

    def split(self, position: Position) -> tuple[Position, int]:
        """Return the position in its stream and the stream's number of a merged ``position``."""
        sequence, stream = divmod(position[1], self._count)
        return (position[0], sequence), stream

    def stream_of(self, position: Position) -> int:
        """Return the number of the stream a merged position is in."""
        return position[1] % self._count

    def _after(self, position: Position, stream: int) -> Position:
        """Return the position in ``stream`` after which its entries come after the merged ``position``."""
        if position == START:
            return START
        inner, at = self.split(position)
        return inner if stream <= at else _predecessor(inner)

    # The transport ------------------------------------------------------------------------------

    def serve(self, process_token: str) -> None:
        """Serve every stream for ``process_token``."""
        for stream in self.streams:
            stream.serve(process_token)

    def hold(self, topics: set[str], again: bool = False) -> None:
        """Tell every stream: each wakes this process for its publishes to ``topics``."""
        for stream in self.streams:
            stream.hold(topics, again)

    def connect(self) -> None:
        """Connect to every stream."""
        for stream in self.streams:
            stream.connect()

    def disconnect(self) -> None:
        """Disconnect from every stream."""
        for stream in self.streams:
            stream.disconnect()

    def interrupt(self) -> None:
        """End a waiting read now."""
        with self._appended:
            self._interrupts += 1
            self._appended.notify_all()

    def append(
        self, entries: list[dict[str, bytes]], epoch: str, deadline_ms: int, not_before_ms: int
    ) -> Appended | NotAppended:
        """Append to this process's stream; a stream left at an older epoch by a replace is brought up first."""
        if not self._layout_checked:  # a Publisher's first append ("*"): is the log laid out as this one?
            self.get_epoch()
        home = self.streams[self.home]
        outcome = home.append(entries, epoch, deadline_ms, not_before_ms)
        stale = isinstance(outcome, NotAppended) and outcome.reason == "stale" and epoch != "*"
        if stale and self._bring_up(self.home, epoch):
            outcome = home.append(entries, epoch, deadline_ms, not_before_ms)
        if isinstance(outcome, NotAppended):
            return outcome
        with self._appended:  # the reader looks at once
            self._appended.notify_all()
        return Appended([self.merged(position, self.home) for position in outcome.positions])

    def _bring_up(self, number: int, epoch: str | None) -> bool:
        """Give stream ``number`` the log's epoch if it is ``epoch`` and the stream's is another; return if it was."""
        if epoch is None or self.streams[0].get_epoch() != epoch:
            return False
        stream = self.streams[number]
        own = stream.get_epoch()
        if own == epoch:
            return False
        stream.replace_log(own, epoch, b"")
        return True

    def read(self, after: Position, block: float, count: int) -> list[Record]:
        """Return up to ``count`` entries after ``after`` in the merged order, waiting up to ``block`` seconds."""
        deadline = time.monotonic() + block
        with self._lock:
            if after != self._ended_at:  # a reload, or a read from elsewhere: start over from ``after``
                self._taken = [None] * self._count
            interrupts = self._interrupts
            pause = _FIRST_PAUSE
            while True:
                found, held_back = self._read_round(after, count)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0 or interrupts != self._interrupts:
                    break
                if held_back or not self._wait_for_wake_ups(remaining):
                    # Entries wait for another stream's clock, or the streams cannot wake this
                    # process: look again after an append of its own, or a pause (longer while
                    # nothing comes).
                    with self._appended:
                        self._appended.wait(min(remaining, pause))
                    pause = _FIRST_PAUSE if held_back else min(pause * 2, _LAST_PAUSE)
            if found:
                self._ended_at = found[-1].position
                for record in found:
                    self._taken[self.stream_of(record.position)] = self.split(record.position)[0]
            else:
                self._ended_at = after
            return found

    def _wait_for_wake_ups(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until a stream wakes this process, then take the wake-ups; ``False``: cannot."""
        filenos = [fileno for fileno in (stream.wake_fileno() for stream in self.streams) if fileno is not None]
        if len(filenos) < self._count:
            return False
        try:
            select.select(filenos, [], [], timeout)
        except (OSError, ValueError):  # a connection closed meanwhile (a failover): read, and learn why
            return True
        for stream in self.streams:
            stream.take_wake_ups()
        return True

    def _read_round(self, after: Position, count: int) -> tuple[list[Record], bool]:
        """Read every stream once; return the entries no stream can still get one before, and if some wait."""
        limit: Position | None = None
        candidates: list[Record] = []
        epochs: dict[int, str | None] = {}
        # The first stream last: a replace changes its epoch first, so an entry of a newer epoch
        # read from another stream shows as an epoch apart.
        for number in [*range(1, self._count), 0]:
            cursor = self._after(after, number)
            taken = self._taken[number]
            epochs[number], clock, records = self.streams[number].read_at(
                min(cursor, taken) if taken is not None else cursor, count
            )
            if records and records[0].position <= cursor:
                # Before what this process applied already: the stream's clock stepped back.
                self._out_of_order = True
                raise LogUnavailable(f"stream {number} of the log gave an entry out of order")
            # The smallest merged position this stream can still give: past the last entry read,
            # and not before its clock as read (later appends get at least that).
            next_id = (clock, 0)
            if records and (len(records) >= count or records[-1].position >= next_id):
                next_id = (records[-1].position[0], records[-1].position[1] + 1)
            bound = self.merged(next_id, number)
            limit = bound if limit is None else min(limit, bound)
            candidates += [Record(self.merged(record.position, number), record.fields) for record in records]
        for number, epoch in epochs.items():
            if epoch != epochs[0]:
                self._bring_up(number, epochs[0])
                raise LogUnavailable(f"stream {number} of the log was of another epoch; it is brought up")
        candidates.sort(key=lambda record: record.position)
        ready = [record for record in candidates if limit is None or record.position < limit]
        return ready[:count], len(ready) < len(candidates)

    def holds(self, before: Position, record: Record) -> bool:
        """Whether ``record`` is still where it was in its stream, or was trimmed from it (not lost).

        The last entry applied from a quiet stream is trimmed in time like any other, behind every
        process. ``False`` after a stream gave entries out of order.
        """
        if self._out_of_order:
            return False
        inner, number = self.split(record.position)
        stream = self.streams[number]
        found = stream.read(_predecessor(inner), 0, 1)
        if found and found[0].position == inner:
            return found[0].fields == record.fields  # another entry at its place: lost, then appended to
        return stream.trimmed_after(_predecessor(inner))

    def head(self) -> Position | None:
        """Return the merged position of the last entry any stream was given; ``None``: no stream has any."""
        heads = [(stream.head(), number) for number, stream in enumerate(self.streams)]
        known = [self.merged(head, number) for head, number in heads if head is not None]
        return max(known) if known else None

    def trimmed_after(self, position: Position) -> bool:
        """Whether any stream removed entries that come after ``position``."""
        return any(stream.trimmed_after(self._after(position, n)) for n, stream in enumerate(self.streams))

    def now_ms(self) -> int:
        """Return the clock of this process's stream (its appends' deadlines are checked on it)."""
        return self.streams[self.home].now_ms()

    def get_epoch(self) -> str | None:
        """Return the first stream's epoch: the log's."""
        epoch = self.streams[0].get_epoch()
        self._layout_checked = True
        return epoch

    def name_epoch(self, base: str) -> str:
        """Name a new epoch as the first stream does."""
        return self.streams[0].name_epoch(base)

    def create_epoch(self, epoch: str) -> None:
        """Give the first stream its epoch unless it has one, then every stream without one the same."""
        self.streams[0].create_epoch(epoch)
        chosen = self.streams[0].get_epoch()
        if chosen is None:  # replaced or lost meanwhile: the next check sees to it
            return
        for stream in self.streams[1:]:
            stream.create_epoch(chosen)

    def replace_log(self, old_epoch: str | None, new_epoch: str, snapshot: bytes) -> bool:
        """Replace the first stream (the decision, with ``snapshot``), then empty every other at ``new_epoch``."""
        if not self.streams[0].replace_log(old_epoch, new_epoch, snapshot):
            return False
        self._out_of_order = False
        for number in range(1, self._count):
            self._bring_up(number, new_epoch)
        return True

    def load_snapshot(self) -> bytes | None:
        """Return the first stream's snapshot."""
        return self.streams[0].load_snapshot()

    def store_snapshot(self, blob: bytes, owner: str) -> None:
        """Store the snapshot with the first stream."""
        self.streams[0].store_snapshot(blob, owner)

    def lock_snapshot(self, owner: str, seconds: float) -> bool:
        """Take the first stream's snapshot lock."""
        return self.streams[0].lock_snapshot(owner, seconds)

    def unlock_snapshot(self, owner: str) -> None:
        """Release the first stream's snapshot lock."""
        self.streams[0].unlock_snapshot(owner)

    def trim(self, before: Position, reported_after: float) -> None:
        """Trim every stream before ``before`` (below the slowest live process, each by its own reports)."""
        inner, at = self.split(before)
        for number, stream in enumerate(self.streams):
            # Entries of this stream before the merged ``before``: up to ``inner``, or before it.
            stream.trim((inner[0], inner[1] + 1) if number < at else inner, reported_after)

    def report(self, process_token: str, position: Position, wall: float, version: int) -> None:
        """Report to every stream the position in it that ``position`` stands for."""
        for number, stream in enumerate(self.streams):
            stream.report(process_token, self._after(position, number), wall, version)

    def reports(self) -> dict[str, tuple[Position, float, int]]:
        """Return the first stream's reports (their wall times and formats; the positions are its own)."""
        return self.streams[0].reports()

    def forget(self, process_tokens: list[str]) -> None:
        """Forget the processes in every stream."""
        for stream in self.streams:
            stream.forget(process_tokens)
