"""A replicated log: one service shared by every process that reads the same log, in order.

Every change is an *entry* appended to one log. Every process reads the log
with one connection and applies the entries in order to its
``pubsubsse.core._engine.Core``, so all of them hold the same state and give
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
    new processes can share a log during a rolling upgrade. Format 2 is the
    only one so far.

Snapshots, trimming and liveness
    Every ``snapshot_every`` entries one process stores a snapshot (built by
    the reader between entries, a slice of clients at a time, so streams keep
    moving) and trims the log behind it and behind every live process (the
    trim reads the reports itself, atomically). Processes report their
    position every second (every ``alive / 4`` if shorter); one that has
    neither reported nor written for ``alive`` seconds is dead, and the
    streams it held are detached by the others. A process that comes back
    after being declared dead sees those detaches and ends its streams, so
    their browsers reconnect. While its last report is older than
    ``alive / 2``, and once more after its next report lands, a process checks
    after each read that nothing after its position was trimmed; if something
    was, it loads the snapshot instead of reading on after the hole.

A lost log
    If the log loses entries (a Redis restarted without persistence, or with
    the last second lost), the process that notices first stores its own state
    as the base of a new *epoch*; every process then loads it. Appends of the
    old epoch are refused meanwhile. Every client's event ids jump ahead, so
    every stream gets an init message (a resync, announced) instead of a gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pubsubsse.backends._entries import (
    WITH_BODY,
    Appended,
    Change,
    LogUnavailable,
    NotAppended,
    Position,
    Record,
    check_update_body,
    decode_entry,
    encode_entry,
)
from pubsubsse.backends._log_base import LogOptions, LogState, LogTransport, log_options
from pubsubsse.backends._log_upkeep import Upkeep
from pubsubsse.backends._log_writer import Writer
from pubsubsse.core._engine import Effects
from pubsubsse.core._operations import OPERATIONS
from pubsubsse.errors import BackendUnavailable, PubSubError

__all__ = [
    "LogBackend",
    "LogOptions",
    "LogTransport",
    "LogUnavailable",
    "Position",
    "Appended",
    "NotAppended",
    "Record",
    "log_options",
]

log = logging.getLogger(__name__)


_FRESH = 3.0


class LogBackend(Upkeep, Writer, LogState):
    """A service shared through a replicated log: ``LogBackend(transport, **options)``.

    The engine: batches, deadlines, ordering, snapshots, trimming, liveness.
    ``transport`` says where the log lives (:class:`LogTransport`: Redis,
    PostgreSQL, memory); :class:`~pubsubsse.backends.redis.RedisBackend` and
    :class:`~pubsubsse.backends.postgres.PostgresBackend` build theirs.

    Its options (``timeout``, ``outcome_timeout``, ``snapshot_every``, ``alive``)
    are described by :class:`LogOptions`.
    """

    # Lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the shared state (or start unready if the log cannot be reached) and start the threads."""
        self._process_token = self.replica.process_token
        self.transport.serve(self._process_token)
        try:
            self.transport.connect()
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
        self.transport.interrupt()
        self._outbox.put(None)
        self._events.put(None)
        for thread in self._threads:
            thread.join(3)
        self.transport.disconnect()

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
        if process_token == self._process_token:
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
        change = Change(operation, args)
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

    def execute_eventually(self, operation: str, args: tuple[Any, ...]) -> None:
        """Queue a change that is retried until applied; its events fire in the events thread."""
        self._outbox.put(Change(operation, args, eventual=True))

    def stage(self, transaction: Any, operation: str, args: tuple[Any, ...]) -> None:
        """Write the change into the caller's ``transaction``, if the transport can (PostgreSQL's outbox).

        It is applied, everywhere, when the transaction commits, after every
        change already in the log; its events fire nowhere (like a
        :class:`~pubsubsse.Publisher`'s). See :meth:`.Backend.stage`.
        """
        stage = getattr(self.transport, "stage", None)
        if stage is None:
            super().stage(transaction, operation, args)
            return
        self.check_ready()
        entry = encode_entry(self._staging_origin, next(self._numbers), operation, args, self._format())
        stage(transaction, [entry], self._epoch)

    def sync(self) -> None:
        """Wait until this process has applied every change made before the call, here or anywhere.

        It appends a marker and waits until it is applied here: every entry
        appended before it, by any process, is applied by then, and so is every
        change this process had queued (a stream's detach, say), whose events
        have fired too.
        """
        self.execute("noop", ())
        fired = threading.Event()  # and the events of eventual changes before it have fired
        self._events.put(fired)
        fired.wait(self.timeout)

    # The reader: the only thread that applies entries -----------------------------------------

    def _run_reader(self) -> None:
        pause = 0.1
        while not self._closed.is_set():
            try:
                if not self._ready.is_set():
                    self.transport.connect()
                    self._load()
                    log.info("reached the pubsubsse log: the shared state is loaded")
                if self._check_needed.is_set():
                    self._check_log()
                records = self._read(0.25)
                if self._trim_check_due or time.monotonic() - self._report_sent > self.alive / 2:
                    # This process may have looked dead to the others (its last report is old: it
                    # was paused, cut off, or its reports failed), so they may have trimmed entries
                    # it has not applied; the read would then start after the hole. Checked after
                    # the read, so every trim that came before it shows; the snapshot is the way back.
                    if self.transport.trimmed_after(self._position):
                        log.warning("the log was trimmed behind this process while it looked dead; reloading")
                        self._counts["log_reloads"] += 1
                        self._reload(self._epoch)
                        records = []
                    self._trim_check_due = False
                if time.monotonic() - self._last_read > _FRESH:  # paused, or the log was away
                    self._watching_since = time.monotonic()
                self._last_read = time.monotonic()
            except LogUnavailable as error:
                if self._closed.is_set():
                    return
                self._load_error = str(error)
                self._warn_once("read", f"reading the pubsubsse log failed ({error}); retrying")
                self._end_streams_if_cut_off()
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
            self._streams_ended = False
            pause = 0.1
            if records:
                self._apply_records(records)
            try:
                self._maintain()
                self._tell_held_topics()
            except LogUnavailable as error:
                self._warn_once("maintain", f"pubsubsse log maintenance failed ({error}); will retry")

    def _end_streams_if_cut_off(self) -> None:
        """Once the log has been out of reach for ``alive`` seconds, end the streams held here.

        They would get heartbeats and nothing else for as long as the cut lasts; ended, their
        browsers reconnect, and through a load balancer reach a process that follows the log.
        """
        away = time.monotonic() - self._last_read
        if away > self.alive and not self._streams_ended:
            self._streams_ended = True
            log.warning("cut off from the pubsubsse log for %.0f s: ending the streams held here", away)
            self.replica.end_streams()

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message)

    def _apply_records(self, records: list[Record]) -> None:
        stream_of = self.transport.stream_of
        for record in records:
            self._last_applied[stream_of(record.position)] = (self._position, record)
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
            if operation in WITH_BODY:
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
        if origin == self._process_token:
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
        if change.eventual and effects is not None and effects.events:
            self._events.put(effects)

    def _run_events(self) -> None:
        """Fire the events of eventual changes, outside the reader (listeners may make changes)."""
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
