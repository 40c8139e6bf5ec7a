"""A replicated log: one service shared by every process that reads the same log, in order.

Every change is an *entry* appended to one log. Every process reads the log
with one connection and applies the entries in order to its
:class:`~pubsubsse.core.Core`, so all of them hold the same state and give
every client the same event ids; each process queues events only for the
streams it holds. A change returns once this process has applied it
(read-your-writes); its events fire only here, in the caller's thread.

This module holds what does not depend on where the log lives; a transport
(:mod:`pubsubsse.backends.redis`) subclasses :class:`~pubsubsse.backends.log.LogBackend` and fills in
the methods under "The transport". What lives here:

Ordering and waiting
    One writer thread appends changes in batches (whatever accumulated while
    the previous batch was on its way), one batch at a time; one reader thread
    applies what the log holds. A caller waits until the reader has applied
    its own entry, then fires the events and gets the result.

Unambiguous answers
    A change either returns (it is applied, in every process, at its place in
    the log) or raises :class:`~pubsubsse.errors.BackendUnavailable` meaning it
    is *not* applied and never will be. Each batch carries a deadline on the
    log's clock, and the append refuses it after that deadline (atomically,
    on the log's side). When an append gets no answer (a timeout, a broken
    connection), the writer waits until the log answers again and until its
    clock is past the deadline, appends a marker, and once the marker is
    applied here it knows: the batch was applied if and only if it came
    before the marker. Only if the log stays unreachable for
    ``outcome_timeout`` seconds does a change raise with
    ``outcome_unknown`` set; the writer still resolves it later and logs the
    outcome.

Nothing stops for good
    An entry this version cannot apply (an unknown format version or
    operation, arguments of the wrong shape: a newer version during a rolling
    upgrade, a damaged entry) is skipped, logged once per kind and counted
    (``log_entries_skipped``), by every process alike, so replicas stay equal.
    Changes that must happen eventually (a stream's detach, an expiry) are
    retried until they are applied. Nothing the timer or the disconnect watcher
    does waits for the log.

Versions
    Entries carry a format version. Every process reports the newest format it
    reads; writers use the oldest format any live process reads, so old and
    new processes can share a log during a rolling upgrade (format 1 is the
    one of pubsubsse 0.1.0).

Snapshots, trimming and liveness
    Every ``snapshot_every`` entries one process stores a snapshot (built by
    the reader between entries, a slice of clients at a time, so streams keep
    moving) and trims the log behind it and behind every live process.
    Processes report their position every second; one that has neither
    reported nor written for ``alive`` seconds is dead, and the streams it held
    are detached by the others. A process that comes back after being declared
    dead sees those detaches and ends its streams, so their browsers reconnect.

A lost log
    If the log loses entries (a Redis restarted without persistence, or with
    the last second lost), the process that notices first stores its own state
    as the base of a new *epoch*; every process then loads it. Appends of the
    old epoch are refused meanwhile. Every client's event ids jump ahead, so
    every stream gets an init message (a resync, announced) instead of a gap.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from ..core import OPERATIONS, OPERATIONS_V1, Effects
from ..errors import BackendUnavailable, PubSubError
from . import snapshot as snapshots
from .base import Backend

__all__ = ["LogBackend", "LogUnavailable", "Position", "Appended", "Refused", "Record"]

log = logging.getLogger(__name__)

#: A place in the log: two integers that order the entries (Redis: the entry id's two parts).
Position = tuple[int, int]
START: Position = (0, 0)

#: The entry format this version writes, and the oldest it still reads and writes.
FORMAT = 2
OLDEST_FORMAT = 1

#: How far every client's event ids jump when a lost log is replaced (see "A lost log").
SEQ_JUMP = 1 << 20


class LogUnavailable(Exception):
    """Raised by a transport when the log did not answer.

    ``sent`` is ``False`` when nothing reached the log (the connection could
    not be made): an append that raises this was certainly not applied.
    Otherwise its outcome is unknown.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class Refused:
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


class _Change:
    """One change on its way through the log, and what its caller waits for.

    Its fields are guarded by ``LogBackend._waiting_lock`` until ``done`` is set.
    """

    __slots__ = ("operation", "args", "number", "submitted", "cancelled", "done", "result", "effects", "error")

    def __init__(self, operation: str, args: tuple[Any, ...], submitted: bool = False) -> None:
        self.operation = operation
        self.args = args
        #: Set by the writer when the change goes into a batch; 0 until then.
        self.number = 0
        #: Nobody waits: retried until applied, its events fired by the events thread.
        self.submitted = submitted
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


#: Operations whose last argument is a message body: format 2 carries it in a field of its own.
_WITH_BODY = frozenset({"pub", "pub_named"})

#: How old (seconds) the reports read from the log and the last read of it may be for this
#: process to judge another one dead (reports are read every second).
_FRESH = 3.0

#: Operations whose caller waits only until the log holds them, not until they are applied here:
#: a publish returns nothing and fires no event, and its place in the log is fixed once appended
#: (any later change of the caller's comes after it). Waiting for the apply too would serialise
#: a process's publishes behind its own fan-out: each log read would bring one entry, and each
#: stream would get one write per event instead of one per read.
_SETTLED_ON_APPEND = frozenset({"pub"})


def encode_entry(origin: str, number: int, operation: str, args: tuple[Any, ...], version: int) -> dict[str, bytes]:
    """Return the fields of a log entry in format ``version``."""
    if version == 1:  # pubsubsse 0.1.0: one JSON field, a published body carried as text inside it
        if operation == "pub":
            args = (args[0], args[1].decode("utf-8"))
        return {"c": _dumps([origin, number, operation, list(args)])}
    fields = {"v": b"2"}
    if operation in _WITH_BODY:  # the body is JSON already: carried as it is, next to the command
        fields["b"] = args[1]
        args = args[:1]
    fields["e"] = _dumps([origin, number, operation, list(args)])
    return fields


def decode_entry(fields: dict[bytes, bytes]) -> tuple[str, int, str, tuple[Any, ...]]:
    """Return ``(origin, number, operation, args)``; raise :class:`ValueError` for anything else."""
    version = fields.get(b"v")
    if version is None and b"c" in fields:
        origin, number, operation, args = json.loads(fields[b"c"])
        if operation == "pub" and isinstance(args, list) and len(args) == 2 and isinstance(args[1], str):
            args = [args[0], args[1].encode("utf-8")]
    elif version == b"2":
        origin, number, operation, args = json.loads(fields[b"e"])
        if operation in _WITH_BODY and isinstance(args, list):
            args = [*args, fields[b"b"]]
    else:
        raise ValueError(f"entry format {version!r} is not one this version reads")
    if not (isinstance(origin, str) and isinstance(number, int) and isinstance(operation, str)):
        raise ValueError("malformed entry")
    if not isinstance(args, list):
        raise ValueError("malformed entry")
    return origin, number, operation, tuple(args)


def check_update_body(args: tuple[Any, ...]) -> None:
    """Raise :class:`ValueError` unless ``args`` end with a message body as this library encodes it.

    Bodies go to browsers as they are, inside an SSE event: a body written into the log by
    anything else (not JSON, a line break that would end the event, another topic) must not.
    """
    if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], bytes):
        raise ValueError("arguments of a publish have the shape (topic id, body)")
    try:
        message = json.loads(args[1])
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


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class LogBackend(Backend):
    """The generic part of a replicated log; a transport subclass says where the log lives.

    Options (all in seconds unless said otherwise):

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

    shared = True

    def __init__(
        self, *, timeout: float = 5.0, outcome_timeout: float = 60.0, snapshot_every: int = 10000, alive: float = 30.0
    ) -> None:
        super().__init__()
        for name, value in [("timeout", timeout), ("outcome_timeout", outcome_timeout), ("alive", alive)]:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or snapshot_every < 1:
            raise ValueError(f"snapshot_every must be a positive int, got {snapshot_every!r}")
        self.timeout = float(timeout)
        self.outcome_timeout = float(outcome_timeout)
        self.snapshot_every = snapshot_every
        self.alive = float(alive)
        self._origin = ""
        self._numbers = itertools.count(1)
        self._outbox: queue.Queue[_Change | None] = queue.Queue()
        #: Changes sent and not settled yet, by number.
        self._waiting: dict[int, _Change] = {}
        self._waiting_lock = threading.Lock()
        #: Events of submitted changes to fire, barriers of sync() (set when reached), None to stop.
        self._events: queue.Queue[Effects | threading.Event | None] = queue.Queue()
        #: Position of the last entry applied here; changed only by the reader, after applying.
        self._position: Position = START
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
        self._last_read = time.monotonic()
        self._warned: set[str] = set()
        self._counts = {
            "log_entries_applied": 0,
            "log_entries_skipped": 0,
            "log_changes_refused": 0,
            "log_changes_retried": 0,
            "log_reseeds": 0,
            "log_snapshots": 0,
            "log_thread_restarts": 0,
        }
        self.longest_snapshot_slice = 0.0
        self._threads: list[threading.Thread] = []

    # The transport: what a subclass implements ------------------------------------------------

    def connect(self) -> None:
        """Open the connections; raise :class:`LogUnavailable` if the log cannot be reached."""

    def disconnect(self) -> None:
        """Close the connections."""

    def append(
        self, entries: list[dict[str, bytes]], epoch: str, deadline_ms: int, not_before_ms: int
    ) -> Appended | Refused:
        """Append ``entries`` in one atomic step, or refuse them all.

        Refused with ``"stale"`` if the log has no epoch or its epoch is not
        ``epoch`` (``"*"`` accepts any, for a publisher that holds no replica), with
        ``"expired"`` if the log's clock is past ``deadline_ms``, with
        ``"early"`` if it is not past ``not_before_ms``. Raise
        :class:`LogUnavailable` if the log did not answer.
        """
        raise NotImplementedError

    def read(self, after: Position, block: float, count: int) -> list[Record]:
        """Return up to ``count`` entries after ``after``, waiting up to ``block`` seconds for one."""
        raise NotImplementedError

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

    def trim(self, before: Position) -> None:
        """Remove the entries before ``before``."""
        raise NotImplementedError

    def report(self, origin: str, position: Position, wall: float, version: int) -> None:
        """Record that ``origin`` has applied the log up to ``position`` at ``wall`` and reads ``version``."""
        raise NotImplementedError

    def reports(self) -> dict[str, tuple[Position, float, int]]:
        """Return every process's last report: position, wall time and the newest format it reads."""
        raise NotImplementedError

    def forget(self, origins: list[str]) -> None:
        """Remove the reports of ``origins`` (processes dead for long)."""
        raise NotImplementedError

    # Lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the shared state (or start unready if the log cannot be reached) and start the threads."""
        self._origin = self.replica.process_token
        try:
            self.connect()
            self._load()
        except LogUnavailable as error:
            # Raising here would make gunicorn halt every worker (a worker that fails to boot
            # stops the arbiter), so an outage during a worker restart would take the whole
            # server down. Start unready instead: changes and lookups answer 503 meanwhile.
            self._load_error = str(error)
            log.warning("cannot reach the pubsubsse log (%s); retrying in the background", error)
        for name, target in [("reader", self._run_reader), ("writer", self._run_writer), ("events", self._run_events)]:
            thread = threading.Thread(
                target=self._restarted, args=(name, target), name=f"pubsubsse-log-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _restarted(self, name: str, target: Callable[[], None]) -> None:
        """Run one of the threads' loops; if an error ends it (a bug), log it and run it again.

        The loops catch what they expect; this is the net under them, so that nothing the
        log holds or a bug does can stop a process's reader for good while its publishes
        are still taken.
        """
        while True:
            try:
                target()
                return
            except Exception:
                self._counts["log_thread_restarts"] += 1
                log.exception("the pubsubsse log %s stopped on an error; starting it again", name)
                if self._closed.wait(0.5):
                    return

    def close(self) -> None:
        """Stop the threads and close the connections; the service is then unusable."""
        self._closed.set()
        self._outbox.put(None)
        self._events.put(None)
        for thread in self._threads:
            thread.join(3)
        self.disconnect()

    def check_ready(self) -> None:
        """Raise :class:`~pubsubsse.errors.BackendUnavailable` until the shared state has been loaded."""
        if not self._ready.is_set():
            raise BackendUnavailable(f"the shared log is not loaded yet ({self._load_error})")

    def stats(self) -> dict[str, int]:
        """Counters since start: log entries applied and skipped, changes refused and retried, reseeds, snapshots."""
        return dict(self._counts)

    def is_live(self, process_token: str) -> bool:
        """Return whether ``process_token`` reported or wrote within ``alive`` seconds.

        Judged only from a fresh view: after this process was paused (a long GC, a VM
        migration, SIGSTOP) the reports it holds and the entries it has applied are old, and
        every other process would look dead; after the log itself was away, nobody could
        report. So a process is dead only once this one has followed the log without a gap
        for ``alive`` seconds and read fresh reports, and it stayed silent all that time.
        """
        if process_token == self._origin:
            return True
        read_wall, read_at = self._reports_read_at
        now = time.monotonic()
        if now - read_at > _FRESH or now - self._last_read > _FRESH or now - self._watching_since < self.alive:
            return True
        report = self._reports.get(process_token)
        if report is not None and read_wall - report[1] < self.alive:
            return True
        written = self._last_written.get(process_token)
        return written is not None and now - written < self.alive

    # Changes ----------------------------------------------------------------------------------

    def execute(self, operation: str, args: tuple[Any, ...]) -> Any:
        """Append the change, wait until it is applied here, fire its events, return its result.

        Raises :class:`~pubsubsse.errors.BackendUnavailable` if it was not applied (and never
        will be), or, with ``outcome_unknown`` set, if the log stayed
        unreachable for ``outcome_timeout`` seconds after the change was sent.
        """
        self.check_ready()
        change = _Change(operation, args)
        self._outbox.put(change)
        if not change.done.wait(self.timeout):
            with self._waiting_lock:
                if change.number == 0 and not change.done.is_set():
                    change.cancelled = True
                    change.fail(f"the change was not sent within {self.timeout} s; it was not applied")
            change.done.wait(self.outcome_timeout + 2 * self.timeout)
        with self._waiting_lock:
            if not change.done.is_set():  # not expected: _resolve gives up before this
                change.fail("the change's outcome is unknown", unknown=True)
        if change.error is not None:
            raise change.error
        if isinstance(change.result, PubSubError):
            raise change.result
        if change.effects is not None:
            change.effects.fire()
        return change.result

    def submit(self, operation: str, args: tuple[Any, ...]) -> None:
        """Queue a change that is retried until applied; its events fire in the events thread."""
        self._outbox.put(_Change(operation, args, submitted=True))

    def sync(self) -> None:
        """Wait until this process has applied every change made before the call, here or anywhere.

        It appends a marker and waits until it is applied here: every entry
        appended before it, by any process, is applied by then, and so is every
        change this process had queued (a stream's detach, say), whose events
        have fired too.
        """
        self.execute(*self._marker())
        fired = threading.Event()  # and the events of submitted changes before it have fired
        self._events.put(fired)
        fired.wait(self.timeout)

    def _marker(self) -> tuple[str, tuple[Any, ...]]:
        """Return an operation that changes nothing, in the format every live process reads."""
        # pubsubsse 0.1.0 knows no "noop": a detach of nobody changes nothing either.
        return ("noop", ()) if self._format() >= 2 else ("detach", ("C-marker", "P-marker:0"))

    # The writer: one batch at a time ----------------------------------------------------------

    def _run_writer(self) -> None:
        retry: list[_Change] = []
        while not self._closed.is_set():
            batch = self._take_batch(retry)
            if batch is None:
                return
            if not batch:
                retry = []
                continue
            if not self._ready.is_set():
                retry = self._refuse(batch, f"the shared log is not loaded yet ({self._load_error})")
            else:
                try:
                    retry = self._write(batch)
                except Exception:
                    log.exception("pubsubsse log writer failed; the batch was not applied")
                    retry = self._refuse(batch, "internal error")
            if retry:
                self._closed.wait(0.2)

    def _take_batch(self, retry: list[_Change]) -> list[_Change] | None:
        """Return the next batch: the changes to retry and whatever else is queued; ``None`` at close."""
        pending = list(retry)
        if not pending:
            first = self._outbox.get()
            if first is None:
                return None
            pending.append(first)
        size = 0
        while len(pending) < 256 and size < 1 << 20:
            try:
                change = self._outbox.get_nowait()
            except queue.Empty:
                break
            if change is None:
                self._outbox.put(None)
                break
            pending.append(change)
            size += len(change.args[-1]) if change.operation in _WITH_BODY else 100
        batch = []
        with self._waiting_lock:
            for change in pending:
                if not change.cancelled:
                    change.number = next(self._numbers)
                    self._waiting[change.number] = change
                    batch.append(change)
        return batch

    def _format(self) -> int:
        """Return the format to write: the oldest any live process reads."""
        version = FORMAT
        now = time.time()
        for origin, (_, wall, reads) in self._reports.items():
            if origin != self._origin and now - wall < self.alive:
                version = min(version, reads)
        return max(version, OLDEST_FORMAT)

    def _log_now(self) -> int:
        """Return the log's clock as estimated here (checked against the log every 10 seconds)."""
        if time.monotonic() - self._clock_checked > 10:
            before = time.time()
            log_now = self.now_ms()
            after = time.time()
            self._clock_offset = log_now - (before + after) * 500
            self._clock_checked = time.monotonic()
        return int(time.time() * 1000 + self._clock_offset)

    def _write(self, batch: list[_Change]) -> list[_Change]:
        """Append one batch; return the submitted changes to try again."""
        version = self._format()
        if version < 2:
            unknown = [c for c in batch if c.operation not in OPERATIONS_V1]
            if unknown:  # a pubsubsse 0.1.0 process would stop at them
                self._refuse(unknown, "a process of pubsubsse 0.1.0 shares the log; it cannot apply this change")
                batch = [c for c in batch if c.operation in OPERATIONS_V1]
                if not batch:
                    return []
        entries = [encode_entry(self._origin, c.number, c.operation, c.args, version) for c in batch]
        deadline = 0
        try:
            deadline = self._log_now() + int(self.timeout * 1000)
            outcome = self.append(entries, self._epoch or "", deadline, 0)
            if isinstance(outcome, Refused) and outcome.reason == "expired":
                self._clock_checked = -1e9  # a log clock that jumped: one more try with a fresh deadline
                deadline = self._log_now() + int(self.timeout * 1000)
                outcome = self.append(entries, self._epoch or "", deadline, 0)
        except LogUnavailable as error:
            if not deadline or not error.sent:
                return self._refuse(batch, f"the shared log is unavailable: {error}")
            log.warning("an append to the pubsubsse log got no answer (%s); finding out whether it was applied", error)
            applied = self._resolve(batch, deadline)
            if applied:
                return []
            if applied is None:
                return self._unknown(batch)
            return self._refuse(batch, "the shared log did not answer in time")
        if isinstance(outcome, Refused):
            if outcome.reason == "stale":
                self._check_needed.set()
            return self._refuse(batch, f"the shared log refused it ({outcome.reason})")
        with self._waiting_lock:
            for change in batch:
                if change.operation in _SETTLED_ON_APPEND and not change.done.is_set():
                    change.done.set()  # result None; the reader still looks at it when it applies it
        return []  # appended: the reader settles the other changes as it applies them

    def _refuse(self, batch: list[_Change], why: str) -> list[_Change]:
        """Settle a batch that was not applied; return its submitted changes, to be tried again."""
        retry = []
        with self._waiting_lock:
            for change in batch:
                self._waiting.pop(change.number, None)
                if change.done.is_set():
                    continue
                if change.submitted:
                    self._counts["log_changes_retried"] += 1
                    retry.append(_Change(change.operation, change.args, submitted=True))
                else:
                    self._counts["log_changes_refused"] += 1
                    change.fail(f"the change was not applied: {why}")
        return retry

    def _unknown(self, batch: list[_Change]) -> list[_Change]:
        """Settle a batch whose outcome could not be learnt; submitted changes are tried again."""
        retry = []
        with self._waiting_lock:
            for change in batch:
                if change.done.is_set():
                    continue
                if change.submitted:
                    retry.append(_Change(change.operation, change.args, submitted=True))
                else:
                    change.fail("the shared log did not answer; the change's outcome is not known", unknown=True)
        return retry

    def _resolve(self, batch: list[_Change], deadline: int) -> bool | None:
        """Learn whether a batch whose append got no answer was applied; ``None`` if the log stays away.

        Once the log's clock is past the batch's deadline, nothing can append
        it any more; a marker appended after that point and applied here
        comes after the batch if the batch is in the log at all.
        """
        give_up = time.monotonic() + self.outcome_timeout
        pause = 0.05
        while time.monotonic() < give_up and not self._closed.is_set():
            self._closed.wait(pause)
            pause = min(pause * 2, 1.0)
            if batch[0].done.is_set() and batch[0].error is None:
                return True  # the reader applied it meanwhile: it was appended after all
            version = self._format()
            operation, args = self._marker()
            marker = _Change(operation, args)
            with self._waiting_lock:
                marker.number = next(self._numbers)
                self._waiting[marker.number] = marker
            entry = encode_entry(self._origin, marker.number, operation, args, version)
            try:
                outcome = self.append([entry], self._epoch or "", self._log_now() + int(self.timeout * 1000), deadline)
            except LogUnavailable:
                outcome = Refused("unanswered")
            if isinstance(outcome, Refused):
                with self._waiting_lock:
                    self._waiting.pop(marker.number, None)
                if outcome.reason == "stale":
                    self._check_needed.set()
                continue
            if not marker.done.wait(max(0.0, give_up - time.monotonic())):
                break
            # The reader applied the marker; it settled the batch on the way if the batch was there.
            settled = batch[0].done.is_set() and batch[0].error is None
            log.warning("the change(s) whose append got no answer were %s", "applied" if settled else "not applied")
            return settled
        log.error(
            "the pubsubsse log stayed unreachable for %.0f s; the outcome of %d change(s) is unknown",
            self.outcome_timeout,
            len(batch),
        )
        return None

    # The reader: the only thread that applies entries -----------------------------------------

    def _run_reader(self) -> None:
        pause = 0.1
        while not self._closed.is_set():
            try:
                if not self._ready.is_set():
                    self.connect()
                    self._load()
                    log.info("reached the pubsubsse log: the shared state is loaded")
                if self._check_needed.is_set():
                    self._check_log()
                started = time.monotonic()
                records = self.read(self._position, 0.25, 1000)
                away = started - self._last_read > self.alive / 2 or time.monotonic() - started > self.alive / 2
                # Paused (or cut off) long enough to have been thought dead: the others may have
                # trimmed entries this process has not applied. Then the snapshot is the way back.
                if away and self.trimmed_after(self._position):
                    log.warning("this process was away and the log was trimmed behind it; reloading")
                    self._reload(self._epoch)
                    records = []
                if time.monotonic() - self._last_read > _FRESH:  # paused, or the log was away
                    self._watching_since = time.monotonic()
                self._last_read = time.monotonic()
            except LogUnavailable as error:
                if self._closed.is_set():
                    return
                self._load_error = str(error)
                self._warn_once("read", f"reading the pubsubsse log failed ({error}); retrying")
                self._check_needed.set()  # whatever happened meanwhile, make sure the log is still ours
                self._closed.wait(pause)
                pause = min(pause * 2, 1.0)
                continue
            except Exception:
                # A bug or a damaged snapshot must not stop the reader for good: log it, go on.
                log.exception("the pubsubsse log reader failed; retrying")
                self._closed.wait(pause)
                pause = min(pause * 2, 1.0)
                continue
            if pause > 0.1:
                log.info("the pubsubsse log answers again")
                self._warned.discard("read")
            pause = 0.1
            if records:
                self._apply_records(records)
            try:
                self._maintain()
            except LogUnavailable as error:
                self._warn_once("maintain", f"pubsubsse log maintenance failed ({error}); will retry")

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message)

    def _apply_records(self, records: list[Record]) -> None:
        for record in records:
            try:
                self._apply_record(record)
            except Exception:
                # Whatever an entry makes go wrong, it goes wrong alike in every process: skip it
                # there too, never stop the reader (publishes would still be taken and go nowhere).
                log.exception("a pubsubsse log entry could not be handled; skipping it")
                self._counts["log_entries_skipped"] += 1
                self._position = record.position
        with self._applied:
            self._applied.notify_all()

    def _apply_record(self, record: Record) -> None:
        """Apply one entry, or skip it (every process alike) if this version cannot."""
        result: Any = None
        effects: Effects | None = None
        try:
            origin, number, operation, args = decode_entry(record.fields)
        except Exception as error:  # RecursionError too: JSON nested 100,000 deep
            self._skip("undecodable", f"skipping a pubsubsse log entry this version cannot read: {error!r:.200}")
            self._position = record.position
            return
        process = not origin.startswith("Q-")  # "Q-": a Publisher, which never sends an entry twice
        if process and number <= self._origins.get(origin, 0):
            # An origin's numbers only grow in log order: this entry is a copy (a client that sent
            # it twice), and applying it again would, say, publish twice.
            self._skip("duplicate", f"skipping a duplicate pubsubsse log entry from {origin[:10]}…")
            self._position = record.position
            return
        try:
            if operation in _WITH_BODY:
                check_update_body(args)
            result, effects = self.replica.apply(operation, args)
        except ValueError as error:
            kind = operation if operation not in OPERATIONS else f"{operation}-args"
            self._skip(kind, f"skipping a pubsubsse log entry: {error}")
            result = PubSubError(f"the shared log could not apply {operation!r}")
        except Exception:
            log.exception("applying a pubsubsse log entry failed; skipping it")
            self._counts["log_entries_skipped"] += 1
            result = PubSubError(f"the shared log could not apply {operation!r}")
        else:
            self._counts["log_entries_applied"] += 1
        if process:  # publishers come and go (a cron job each run): their origins are not kept
            self._origins[origin] = number
            self._last_written[origin] = time.monotonic()
        self._position = record.position  # after applying: sync() must never return before it
        self._since_snapshot += 1
        if origin == self._origin:
            self._settle(number, result, effects)

    def _skip(self, kind: str, message: str) -> None:
        self._counts["log_entries_skipped"] += 1
        self._warn_once("skip:" + kind, message + " (further ones of this kind are only counted)")

    def _settle(self, number: int, result: Any, effects: Effects | None) -> None:
        with self._waiting_lock:
            change = self._waiting.pop(number, None)
            if change is None:
                return
            if change.done.is_set():
                if change.error is not None and change.error.outcome_unknown:
                    log.warning("a change whose outcome was reported unknown turned out applied: %s", change.operation)
                elif isinstance(result, PubSubError):
                    # Settled when appended; refused when applied (its topic was removed by a change
                    # that came first in the log). Every process skipped it alike.
                    log.warning("a publish reached no one: %s", result)
                return
            change.result, change.effects = result, effects
            change.done.set()
        if change.submitted and effects is not None and effects.events:
            self._events.put(effects)

    def _run_events(self) -> None:
        """Fire the events of submitted changes, outside the reader (listeners may make changes)."""
        while True:
            effects = self._events.get()
            if effects is None:
                return
            if isinstance(effects, threading.Event):
                effects.set()
                continue
            try:
                effects.fire()
            except Exception:
                log.exception("firing pubsubsse events failed")

    # Loading, checking and replacing the log --------------------------------------------------

    def _load(self) -> None:
        """Load the snapshot and apply the log after it; on failure leave the state empty."""
        try:
            epoch = self.get_epoch()
            if epoch is None:
                # "/new": made by a process that had no state. A process that has state (its
                # Redis came back empty) replaces such a log while it is still empty.
                self.create_epoch(uuid.uuid4().hex + "/new")
                epoch = self.get_epoch()
            self._epoch = epoch
            self._position = START
            # Registered before the snapshot is read: a process that trims the log from now on
            # counts this one (at position 0) and leaves the entries it is about to read alone.
            self.report(self._origin, START, time.time(), FORMAT)
            blob = self.load_snapshot()
            if blob is not None:
                self._import(blob)
            loaded_at = self._position
            head = self.head()
            while head is not None and self._position < head:
                records = self.read(self._position, 0, 1000)
                if not records:
                    break
                self._apply_records(records)
            if self.trimmed_after(loaded_at):  # only a process trimming in the same instant: load again
                raise LogUnavailable("the log was trimmed while the snapshot was loaded")
            self._report(force=True)
        except LogUnavailable:
            self.replica.import_state({"public": [], "groups": []}, [])
            self._position = START
            raise
        self._check_needed.clear()
        self._ready.set()

    def _import(self, blob: bytes) -> None:
        """Load a snapshot into the service (the epoch must be the log's)."""
        try:
            saved = snapshots.decode(blob)
        except (ValueError, KeyError, TypeError) as error:
            log.error("the stored pubsubsse snapshot cannot be read (%s); starting from the log alone", error)
            return
        header = saved.header
        if header.get("epoch") not in (None, self._epoch):
            raise LogUnavailable("the snapshot belongs to another epoch (the log is being replaced)")
        self.replica.import_state(saved.groups, saved.clients, int(header.get("jump", 0)))
        milliseconds, sequence = header["position"]
        self._position = (int(milliseconds), int(sequence))
        self._origins = {k: int(v) for k, v in header.get("origins", {}).items()}

    def _check_log(self) -> None:
        """After a failure: is the log still the one this process applied? If not, replace or reload it."""
        epoch = self.get_epoch()
        head = self.head()
        self._check_needed.clear()
        position = self._position
        if epoch == self._epoch and (position == START or (head is not None and head >= position)):
            return
        has_state = position > START or bool(self._origins)
        replaceable = epoch is None or (epoch != self._epoch and epoch.endswith("/new") and head is None)
        if not has_state or (not replaceable and epoch != self._epoch):
            if epoch is None:
                self.create_epoch(uuid.uuid4().hex + "/new")
                epoch = self.get_epoch()
            if epoch != self._epoch:
                self._reload(epoch)  # another process replaced the log already, or nothing is lost here
            return
        if self._format() < 2:
            log.error("the pubsubsse log lost entries, and a pubsubsse 0.1.0 process is live: not replacing it")
            self._epoch = epoch
            return
        new_epoch = uuid.uuid4().hex
        blob = b"".join(
            snapshots.encode(
                {"epoch": new_epoch, "position": list(START), "origins": self._origins, "jump": SEQ_JUMP},
                self._timed_slices(),
            )
        )
        if self.replace_log(epoch, new_epoch, blob):
            self._counts["log_reseeds"] += 1
            log.warning("the pubsubsse log lost entries; replaced it with this process's state (every stream resyncs)")
        self._reload(self.get_epoch())

    def _reload(self, epoch: str | None) -> None:
        """Load the base snapshot of a replaced log, and settle the changes it decides."""
        if epoch is None:
            raise LogUnavailable("the log has no epoch yet")
        blob = self.load_snapshot()
        self._epoch = epoch
        self._position = START
        if blob is not None:
            self._import(blob)
        else:  # a new, empty log
            self.replica.import_state({"public": [], "groups": []}, [], SEQ_JUMP)
            self._origins = {}
        with self._applied:
            self._applied.notify_all()
        # Changes of ours appended to the lost log: applied if the new base includes them.
        last = self._origins.get(self._origin, 0)
        with self._waiting_lock:
            lost = [c for n, c in self._waiting.items() if n <= last]
        for change in lost:
            self._settle(change.number, None, None)
        log.warning("loaded the replaced pubsubsse log (epoch %s); every stream resyncs", epoch[:8])

    # Maintenance: reports, liveness, snapshots, trimming --------------------------------------

    def _report(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._reported < 1.0:
            return
        self.report(self._origin, self._position, now, FORMAT)
        self._reported = now
        reports = self.reports()
        self._reports = reports
        self._reports_read_at = (now, time.monotonic())
        stale = [origin for origin, (_, wall, _) in reports.items() if now - wall > 10 * self.alive]
        if stale:
            self.forget(stale)

    def _maintain(self) -> None:
        """Report this process's position, now and then snapshot the state and trim the log."""
        self._report()
        if self._since_snapshot < self.snapshot_every:
            return
        self._since_snapshot = 0
        owner = f"{self._origin}:{uuid.uuid4().hex[:8]}"
        if not self.lock_snapshot(owner, 30.0):
            return
        try:
            position = self._position
            if self._format() < 2:
                blob = snapshots.encode_legacy(f"{position[0]}-{position[1]}", self._timed_slices())
            else:
                header = {"epoch": self._epoch, "position": list(position), "origins": self._origins}
                blob = b"".join(snapshots.encode(header, self._timed_slices()))
            self.store_snapshot(blob, owner)
            self._counts["log_snapshots"] += 1
            # Reports read now, after the snapshot is stored: a process that registered before this
            # read is counted; one that registers later reads this snapshot or a newer one.
            oldest = position
            now = time.time()
            for origin, (applied, wall, _) in self.reports().items():
                if now - wall < self.alive and origin != self._origin:
                    oldest = min(oldest, applied)
            self.trim(oldest)
        finally:
            self.unlock_snapshot(owner)

    def _timed_slices(self) -> Iterator[Any]:
        """Yield the service's state in slices, letting other threads run between them; note the longest."""
        slices = self.replica.export_state(1000)
        while True:
            started = time.perf_counter()
            part = next(slices, None)
            self.longest_snapshot_slice = max(self.longest_snapshot_slice, time.perf_counter() - started)
            if part is None:
                return
            yield part
            time.sleep(0)
