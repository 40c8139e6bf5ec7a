"""The log backend's writer thread: changes appended one batch at a time, their outcome learnt."""

from __future__ import annotations

import logging
import queue
import time

from pubsubsse.backends._entries import (
    FORMAT,
    OLDEST_FORMAT,
    SETTLED_ON_APPEND,
    WITH_BODY,
    Appended,
    Change,
    LogUnavailable,
    NotAppended,
    Position,
    encode_entry,
)
from pubsubsse.backends._log_base import LogState

__all__ = ["Writer"]

log = logging.getLogger("pubsubsse.backends.log")


class Writer(LogState):
    """Appends queued changes in batches; settles, refuses or retries each one."""

    def _run_writer(self) -> None:
        retry: list[Change] = []
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

    def _take_batch(self, retry: list[Change]) -> list[Change] | None:
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
            size += len(change.args[-1]) if change.operation in WITH_BODY else 100
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
        for token, (_, wall, reads) in self._reports.items():
            if token != self._process_token and now - wall < self.alive:
                version = min(version, reads)
        return max(version, OLDEST_FORMAT)

    def _log_now(self) -> int:
        """Return the log's clock as estimated here (checked against the log every 10 seconds)."""
        if time.monotonic() - self._clock_checked > 10:
            before = time.time()
            log_now = self.transport.now_ms()
            after = time.time()
            self._clock_offset = log_now - (before + after) * 500
            self._clock_checked = time.monotonic()
        return int(time.time() * 1000 + self._clock_offset)

    def _write(self, batch: list[Change]) -> list[Change]:
        """Append one batch; return the eventual changes to try again."""
        version = self._format()
        entries = [encode_entry(self._process_token, c.number, c.operation, c.args, version) for c in batch]
        deadline = 0
        for change in batch:
            change.epoch = self._epoch
        try:
            deadline = self._log_now() + int(self.timeout * 1000)
            outcome = self.transport.append(entries, self._epoch or "", deadline, 0)
            if isinstance(outcome, NotAppended) and outcome.reason == "expired":
                self._clock_checked = -1e9  # a log clock that jumped: one more try with a fresh deadline
                deadline = self._log_now() + int(self.timeout * 1000)
                outcome = self.transport.append(entries, self._epoch or "", deadline, 0)
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
        if isinstance(outcome, NotAppended):
            if outcome.reason == "stale":
                self._check_needed.set()
            return self._refuse(batch, f"the shared log refused it ({outcome.reason})")
        if not self.transport.places_on_append:
            return []
        with self._waiting_lock:
            for change in batch:
                if change.operation in SETTLED_ON_APPEND and not change.done.is_set():
                    change.done.set()  # result None; the reader still looks at it when it applies it
        return []  # appended: the reader settles the other changes as it applies them

    def _refuse(self, batch: list[Change], why: str) -> list[Change]:
        """Settle a batch that was not applied; return its eventual changes, to be tried again."""
        retry = []
        with self._waiting_lock:
            for change in batch:
                self._waiting.pop(change.number, None)
                if change.done.is_set():
                    continue
                if change.eventual:
                    self._counts["log_changes_retried"] += 1
                    retry.append(Change(change.operation, change.args, eventual=True))
                else:
                    self._counts["log_changes_refused"] += 1
                    change.fail(f"the change was not applied: {why}")
        return retry

    def _unknown(self, batch: list[Change]) -> list[Change]:
        """Settle a batch whose outcome could not be learnt; eventual changes are tried again."""
        retry = []
        with self._waiting_lock:
            for change in batch:
                if change.done.is_set():
                    continue
                if change.eventual:
                    retry.append(Change(change.operation, change.args, eventual=True))
                else:
                    change.fail("the shared log did not answer; the change's outcome is not known", unknown=True)
        return retry

    def _resolve(self, batch: list[Change], deadline: int) -> bool | None:
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
            marker = Change("noop", ())
            # Its epoch: a reload of a replaced log that lacks it fails it (see _reload).
            epoch = marker.epoch = self._epoch
            with self._waiting_lock:
                marker.number = next(self._numbers)
                self._waiting[marker.number] = marker
            entry = encode_entry(self._process_token, marker.number, "noop", (), version)
            try:
                until = self._log_now() + int(self.timeout * 1000)
                outcome = self.transport.append([entry], epoch or "", until, deadline)
            except LogUnavailable:
                outcome = NotAppended("unanswered")
            if isinstance(outcome, Appended) and not self._marker_applied(marker, outcome.positions[-1], give_up):
                if not marker.done.is_set() and time.monotonic() >= give_up:
                    break
                outcome = NotAppended("lost")  # a failover lost it, or the log was replaced: another one
            if isinstance(outcome, NotAppended):
                with self._waiting_lock:
                    self._waiting.pop(marker.number, None)
                if outcome.reason == "stale":
                    self._check_needed.set()
                continue
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

    def _marker_applied(self, marker: Change, position: Position, give_up: float) -> bool:
        """Wait until the reader applied ``marker`` (appended at ``position``); ``False`` if it never will.

        It never will once the reader is past ``position`` without it (a failover lost it) or the
        log was replaced (its epoch changed), or at ``give_up`` (monotonic).
        """
        epoch = marker.epoch

        def over() -> bool:
            # The reader notes an entry's origin number, then its position, then settles it: past
            # the position with this number noted, the marker is being settled, not lost.
            lost = self._position >= position and self._origins.get(self._process_token, 0) < marker.number
            return marker.done.is_set() or lost or self._epoch != epoch

        with self._applied:
            self._applied.wait_for(over, max(0.0, give_up - time.monotonic()))
        return marker.done.is_set() and marker.error is None
