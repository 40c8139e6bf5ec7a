"""A stream's EventQueue: many putters, one reader, no lost wake-up, nothing reordered."""

from __future__ import annotations

import queue
import threading

import pytest

from pubsubsse.streams import _stream as stream
from pubsubsse.streams._stream import EventQueue


def test_the_reader_waits_and_times_out_like_a_queue():
    events = EventQueue()
    with pytest.raises(queue.Empty):
        events.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        events.get_nowait()
    events.put_nowait(1)
    events.put_nowait(2)
    assert (events.qsize(), events.empty()) == (2, False)
    assert events.get(timeout=0) == 1
    assert events.take_all() == [2] and events.empty()
    threading.Timer(0.05, events.put_nowait, (3,)).start()
    assert events.get() == 3  # woken by a put from another thread


def test_a_put_between_the_readers_check_and_its_wait_wakes_it(monkeypatch):
    """The one window of a lost wake-up, forced: a put lands after the reader found the events
    empty and before its waiter is visible to putters."""
    events = EventQueue()
    real_lock = threading.Lock

    class RacingLock:
        def __init__(self) -> None:
            self._lock = real_lock()
            self._first = True

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            got = self._lock.acquire(blocking, timeout)
            if self._first:  # the reader took its fresh waiter: a put now sees no waiter to release
                self._first = False
                events.put_nowait("raced")
            return got

        def release(self) -> None:
            self._lock.release()

    monkeypatch.setattr(stream, "_new_waiter", RacingLock)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(events.get()), daemon=True)
    reader.start()
    reader.join(10)  # a lost wake-up leaves the reader asleep for good
    assert got == ["raced"]


@pytest.mark.timeout(60)
def test_concurrent_putters_never_leave_the_reader_asleep():
    events = EventQueue()
    putters, per_putter = 4, 5000
    start = threading.Barrier(putters + 1)

    def put(n: int) -> None:
        start.wait()
        for i in range(per_putter):
            events.put_nowait((n, i))

    threads = [threading.Thread(target=put, args=(n,)) for n in range(putters)]
    for thread in threads:
        thread.start()
    start.wait()
    got: list[tuple[int, int]] = []
    while len(got) < putters * per_putter:
        # No time limit: a lost wake-up leaves the reader asleep here and the test times out.
        got.append(events.get())
        got += events.take_all()
    for thread in threads:
        thread.join()
    for n in range(putters):
        assert [i for m, i in got if m == n] == list(range(per_putter))
    assert events.empty()
