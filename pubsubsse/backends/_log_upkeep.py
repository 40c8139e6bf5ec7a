"""The log backend's upkeep: loading the state, checking and replacing a lost log, reports, snapshots, trims."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from pubsubsse.backends import _snapshot as snapshots
from pubsubsse.backends._entries import FORMAT, MADE_HERE, SEQ_JUMP, START, Change, LogUnavailable
from pubsubsse.backends._log_base import LogState

__all__ = ["Upkeep"]

log = logging.getLogger("pubsubsse.backends.log")


class Upkeep(LogState):
    """What the reader thread does besides applying entries."""

    # Loading, checking and replacing the log --------------------------------------------------

    def _load(self) -> None:
        """Load the snapshot and apply the log after it; on failure leave the state empty."""
        try:
            epoch = self.transport.get_epoch()
            if epoch is None:
                # "/new": made by a process that had no state. A process that has state (its
                # Redis came back empty) replaces such a log while it is still empty.
                self.transport.create_epoch(self.transport.name_epoch(uuid.uuid4().hex) + "/new")
                epoch = self.transport.get_epoch()
            self._epoch = epoch
            self._position = START
            self._last_applied = {}
            self._held_version = -1  # the log may be a new one (a Redis that lost its data): all anew
            # Registered before the snapshot is read: a process that trims the log from now on
            # counts this one (at position 0) and leaves the entries it is about to read alone.
            self.transport.report(self._process_token, START, time.time(), FORMAT)
            blob = self.transport.load_snapshot()
            if blob is not None:
                self._import(blob)
            loaded_at = self._position
            head = self.transport.head()
            while head is not None and self._position < head:
                records = self._read(0)
                if not records:
                    break
                self._apply_records(records)
            if self.transport.trimmed_after(loaded_at):  # only a process trimming in the same instant: load again
                raise LogUnavailable("the log was trimmed while the snapshot was loaded")
            self._report(force=True)
        except LogUnavailable:
            self.replica.import_state({"public": [], "groups": []}, [])
            self._position, self._last_applied = START, {}
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
        self._last_applied = {}
        self._origins = {k: int(v) for k, v in header.get("origins", {}).items()}

    def _check_log(self) -> None:
        """After a failure: is the log still the one this process applied? If not, replace or reload it."""
        epoch = self.transport.get_epoch()
        head = self.transport.head()
        self._check_needed.clear()
        position = self._position
        if epoch == self._epoch and (position == START or (head is not None and head >= position)):
            missing = self._missing_last()
            if missing is None:
                return
            if missing == "trimmed":  # trimmed while this process looked dead: the snapshot is the way back
                self._reload(epoch)
                return
        has_state = position > START or bool(self._origins)
        replaceable = epoch is None or (epoch != self._epoch and epoch.endswith("/new") and head is None)
        if not has_state or (not replaceable and epoch != self._epoch):
            if epoch is None:
                self.transport.create_epoch(self.transport.name_epoch(uuid.uuid4().hex) + "/new")
                epoch = self.transport.get_epoch()
            if epoch != self._epoch:
                self._reload(epoch)  # another process replaced the log already, or nothing is lost here
            return
        new_epoch = self.transport.name_epoch(uuid.uuid4().hex)
        blob = b"".join(
            snapshots.encode(
                {"epoch": new_epoch, "position": list(START), "origins": self._origins, "jump": SEQ_JUMP},
                self._timed_slices(),
            )
        )
        if self.transport.replace_log(epoch, new_epoch, blob):
            self._counts["log_reseeds"] += 1
            log.warning("the pubsubsse log lost entries; replaced it with this process's state (every stream resyncs)")
        self._reload(self.transport.get_epoch())

    def _missing_last(self) -> str | None:
        """Whether the last entry applied from a stream of the log is gone: ``"trimmed"``, ``"lost"`` or ``None``.

        A log can end before this process's position (a Redis restarted without its newest
        entries), but also lose its newest entries and take new ones after them (a replica
        promoted before they reached it, then appended to): the head alone does not show that.
        """
        for before, last in list(self._last_applied.values()):
            if not self.transport.holds(before, last):
                return "trimmed" if self.transport.trimmed_after(before) else "lost"
        return None

    def _reload(self, epoch: str | None) -> None:
        """Load the base snapshot of a replaced log, and settle the changes it decides."""
        if epoch is None:
            raise LogUnavailable("the log has no epoch yet")
        blob = self.transport.load_snapshot()
        replaced, self._epoch = self._epoch, epoch
        self._position = START
        self._last_applied = {}
        self._held_version = -1
        if blob is not None:
            self._import(blob)
        else:  # a new, empty log
            self.replica.import_state({"public": [], "groups": []}, [], SEQ_JUMP)
            self._origins = {}
        with self._applied:
            self._applied.notify_all()
        # Changes of ours appended to the lost log: applied if the new base includes them.
        last = self._origins.get(self._process_token, 0)
        with self._waiting_lock:
            kept = [c for n, c in self._waiting.items() if n <= last]
            # Sent to the replaced log and not in the new base: some process may have applied it
            # (and its streams resync now), the shared state does not have it.
            gone = [c for n, c in self._waiting.items() if n > last and c.epoch == replaced != epoch]
            for change in gone:
                del self._waiting[change.number]
                if change.eventual:
                    self._outbox.put(Change(change.operation, change.args, eventual=True))
                elif not change.done.is_set():
                    change.fail("the log lost entries and was replaced; whether it reached anyone is unknown", True)
        for change in kept:
            if change.operation in MADE_HERE and not change.eventual:
                self._lose_result(change)
            else:
                self._settle(change.number, None, None)
        log.warning("loaded the replaced pubsubsse log (epoch %s); every stream resyncs", epoch[:8])

    def _lose_result(self, change: Change) -> None:
        """Fail a change the new base holds but this process never applied: what it returns was not made here.

        A stream attached in the base is detached again (no stream of it exists here), so that
        its client does not stay RECEIVING; the browser reconnects.
        """
        with self._waiting_lock:
            self._waiting.pop(change.number, None)
            if change.done.is_set():
                return
            change.fail("the log was replaced as this change was applied; its result is not known here", True)
        if change.operation == "attach":
            client_id, token = change.args[0], change.args[1]
            self._outbox.put(Change("detach", (client_id, token), eventual=True))

    # Maintenance: reports, liveness, snapshots, trimming --------------------------------------

    def _report(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._reported < min(1.0, self.alive / 4):
            return
        sent = time.monotonic()
        self.transport.report(self._process_token, self._position, now, FORMAT)
        if sent - self._report_sent > self.alive / 2:
            # The previous report may have looked dead meanwhile: a trim before this one landed
            # may have gone past this process. The reader checks once more after it.
            self._trim_check_due = True
        self._report_sent = sent
        self._reported = now
        if not force and self.transport.get_epoch() != self._epoch:
            # Replaced by another process while this one saw no error (a client library that
            # reconnected by itself): read no further on the old state; check, then reload.
            self._check_needed.set()
        reports = self.transport.reports()
        self._reports = reports
        self._reports_read_at = (now, time.monotonic())
        stale = [token for token, (_, wall, _) in reports.items() if now - wall > 10 * self.alive]
        if stale:
            self.transport.forget(stale)

    def _maintain(self) -> None:
        """Report this process's position, now and then snapshot the state and trim the log."""
        self._report()
        if self._since_snapshot < self.snapshot_every or self._check_needed.is_set():
            return
        self._since_snapshot = 0
        owner = f"{self._process_token}:{uuid.uuid4().hex[:8]}"
        if not self.transport.lock_snapshot(owner, 30.0):
            return
        try:
            position = self._position
            header = {"epoch": self._epoch, "position": list(position), "origins": self._origins}
            blob = b"".join(snapshots.encode(header, self._timed_slices()))
            self.transport.store_snapshot(blob, owner)
            self._counts["log_snapshots"] += 1
            # The reports are read by the trim itself, after the snapshot is stored: a process that
            # registered before is counted; one that registers later reads this snapshot or a newer
            # one. This process's own report is made current first, or it would hold the trim back.
            self._report(force=True)
            self.transport.trim(position, time.time() - self.alive)
        finally:
            self.transport.unlock_snapshot(owner)

    def _tell_held_topics(self) -> None:
        """Tell the transport which topics have streams held here, when that changed (or anew)."""
        again = self._held_version == -1
        changed = self.replica.held_topics(self._held_version)
        if changed is not None:
            version, topics = changed
            self.transport.hold(topics, again)
            self._held_version = version

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
