"""A log in this process's memory: several services in one process sharing one log.

::

    from pubsubsse.backends.log import LogBackend
    from pubsubsse.backends.memory import MemoryTransport

    log = MemoryTransport()
    a = SSEPubSubService(backend=LogBackend(log))
    b = SSEPubSubService(backend=LogBackend(log))   # a and b are one service, as two workers would be

For tests: the shared-log engine (ordering, deadlines, epochs, snapshots,
trimming, a lost answer) without Redis or PostgreSQL, with a clock the test
may set and faults it may switch on. It behaves as the Redis transport does,
position for position; it is not a way to share a service between processes.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

from pubsubsse.backends.log import Appended, LogTransport, LogUnavailable, NotAppended, Position, Record

__all__ = ["MemoryTransport"]


def _wall_ms() -> int:
    return int(time.time() * 1000)


class MemoryTransport(LogTransport):
    """The log, its epoch, snapshot, lock and reports, in memory; thread-safe.

    ``clock`` returns the log's time in milliseconds (the wall clock by
    default): deadlines, positions and the snapshot lock's expiry follow it.

    Faults, for tests: while :attr:`unreachable` is true every call raises
    :class:`~pubsubsse.backends.log.LogUnavailable`; :attr:`lose_answers`
    appends that many more batches and then raises as if their answer was lost.
    """

    def __init__(self, clock: Callable[[], int] = _wall_ms) -> None:
        self.clock = clock
        #: While true, the log cannot be reached: every call raises ``LogUnavailable``.
        self.unreachable = False
        #: How many of the next appends are applied but answered with ``LogUnavailable(sent=True)``.
        self.lose_answers = 0
        self._changed = threading.Condition()
        self._disconnects = 0
        self._entries: list[Record] = []
        self._positions: list[Position] = []
        self._last: Position | None = None  # None: no log (never appended, or replaced)
        self._max_deleted: Position = (0, 0)
        self._epoch: str | None = None
        self._snapshot: bytes | None = None
        self._lock: tuple[str, int] | None = None
        self._reports: dict[str, tuple[Position, float, int]] = {}
        self._lose_all()

    def _lose_all(self) -> None:
        self._entries = []
        self._positions = []
        self._last = None
        self._max_deleted = (0, 0)
        self._epoch = None
        self._snapshot = None
        self._lock = None
        self._reports = {}

    def __repr__(self) -> str:
        return f"<MemoryTransport {len(self._entries)} entries>"

    def _check(self, sent: bool = True) -> None:
        if self.unreachable:
            raise LogUnavailable("the memory log is unreachable (a test's fault)", sent=sent)

    def connect(self) -> None:
        """Raise ``LogUnavailable`` while :attr:`unreachable`."""
        self._check(sent=False)

    def disconnect(self) -> None:
        """Wake the reads waiting for entries."""
        self.interrupt()

    def interrupt(self) -> None:
        """Wake the reads waiting for entries (an engine closing need not wait for their timeout)."""
        with self._changed:
            self._disconnects += 1
            self._changed.notify_all()

    def append(
        self, entries: list[dict[str, bytes]], epoch: str, deadline_ms: int, not_before_ms: int
    ) -> Appended | NotAppended:
        """Append ``entries`` whole, or refuse them (``stale``, ``expired``, ``early``) as Redis's script does."""
        self._check(sent=False)
        with self._changed:
            if self._epoch is None or (epoch != "*" and epoch != self._epoch):
                return NotAppended("stale")
            now = self.clock()
            if now > deadline_ms:
                return NotAppended("expired")
            if now <= not_before_ms:
                return NotAppended("early")
            positions = [self._add(fields, now) for fields in entries]
            self._changed.notify_all()
            if self.lose_answers > 0:
                self.lose_answers -= 1
                raise LogUnavailable("the answer was lost (a test's fault)", sent=True)
            return Appended(positions)

    def _add(self, fields: dict[str, bytes], now: int) -> Position:
        last = self._last or (0, 0)
        position = (now, 0) if now > last[0] else (last[0], last[1] + 1)
        self._entries.append(Record(position, {name.encode(): value for name, value in fields.items()}))
        self._positions.append(position)
        self._last = position
        return position

    def read(self, after: Position, block: float, count: int) -> list[Record]:
        """Return up to ``count`` entries after ``after``, waiting up to ``block`` seconds for one."""
        self._check()
        deadline = time.monotonic() + block
        with self._changed:
            disconnects = self._disconnects
            while True:
                start = bisect.bisect_right(self._positions, after)
                found = self._entries[start : start + count]
                remaining = deadline - time.monotonic()
                if found or remaining <= 0 or disconnects != self._disconnects:
                    return found
                self._changed.wait(remaining)
                self._check()

    def read_at(self, after: Position, count: int) -> tuple[str | None, int, list[Record]]:
        """Return the epoch, the clock and up to ``count`` entries after ``after``, in one step."""
        with self._changed:
            return super().read_at(after, count)

    def head(self) -> Position | None:
        """Return the last position appended in this epoch, trimmed or not."""
        self._check()
        return self._last

    def trimmed_after(self, position: Position) -> bool:
        """Whether an entry after ``position`` was trimmed."""
        self._check()
        return self._max_deleted > position

    def now_ms(self) -> int:
        """Return the log's clock."""
        self._check()
        return self.clock()

    def get_epoch(self) -> str | None:
        """Return the epoch, or ``None``."""
        self._check()
        return self._epoch

    def create_epoch(self, epoch: str) -> None:
        """Set the epoch unless there is one."""
        self._check()
        with self._changed:
            if self._epoch is None:
                self._epoch = epoch

    def replace_log(self, old_epoch: str | None, new_epoch: str, snapshot: bytes) -> bool:
        """If the epoch is still ``old_epoch``: store ``snapshot``, empty the log, set ``new_epoch``."""
        self._check()
        with self._changed:
            if self._epoch != old_epoch:
                return False
            self._snapshot = snapshot
            self._entries = []
            self._positions = []
            self._last = None
            self._max_deleted = (0, 0)
            self._epoch = new_epoch
            self._changed.notify_all()
            return True

    def fail_over(self, lost: int, appended: list[dict[str, bytes]] | None = None) -> None:
        """Lose the newest ``lost`` entries, then append ``appended`` (a test's fault).

        What a replica promoted before the newest entries reached it does, once another
        process appends to it: the epoch, snapshot and reports stay; the log goes on from
        the last entry the replica had.
        """
        with self._changed:
            if lost:
                del self._entries[-lost:]
                del self._positions[-lost:]
                self._last = self._positions[-1] if self._positions else None
            now = self.clock()
            for fields in appended or []:
                self._add(fields, now)
            self._changed.notify_all()

    def lose(self) -> None:
        """Lose everything, as a Redis restarted without its data would (a test's fault)."""
        with self._changed:
            self._lose_all()
            self._changed.notify_all()

    def load_snapshot(self) -> bytes | None:
        """Return the stored snapshot."""
        self._check()
        return self._snapshot

    def store_snapshot(self, blob: bytes, owner: str) -> None:
        """Store ``blob`` if ``owner`` holds the snapshot lock."""
        self._check()
        with self._changed:
            if self._lock_owner() == owner:
                self._snapshot = blob

    def lock_snapshot(self, owner: str, seconds: float) -> bool:
        """Take the snapshot lock for ``seconds`` unless someone holds it."""
        self._check()
        with self._changed:
            if self._lock_owner() is not None:
                return False
            self._lock = (owner, self.clock() + int(seconds * 1000))
            return True

    def unlock_snapshot(self, owner: str) -> None:
        """Release the lock if ``owner`` holds it."""
        self._check()
        with self._changed:
            if self._lock_owner() == owner:
                self._lock = None

    def _lock_owner(self) -> str | None:
        if self._lock is None or self._lock[1] <= self.clock():
            return None
        return self._lock[0]

    def trim(self, before: Position, reported_after: float) -> None:
        """Remove the entries before ``before`` and every live process's position; remember the last one removed."""
        self._check()
        with self._changed:
            for position, wall, _ in self._reports.values():
                if wall > reported_after:
                    before = min(before, position)
            start = bisect.bisect_left(self._positions, before)
            if start > 0:
                self._max_deleted = max(self._max_deleted, self._positions[start - 1])
                del self._entries[:start]
                del self._positions[:start]

    def report(self, process_token: str, position: Position, wall: float, version: int) -> None:
        """Record a process's position, time and format."""
        self._check()
        with self._changed:
            self._reports[process_token] = (position, wall, version)

    def reports(self) -> dict[str, tuple[Position, float, int]]:
        """Return every process's last report."""
        self._check()
        with self._changed:
            return dict(self._reports)

    def forget(self, process_tokens: list[str]) -> None:
        """Remove the reports of ``process_tokens``."""
        self._check()
        with self._changed:
            for token in process_tokens:
                self._reports.pop(token, None)
