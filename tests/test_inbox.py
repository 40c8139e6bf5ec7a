"""A stream's Inbox: many putters, one reader, no lost wake-up, nothing reordered."""

from __future__ import annotations

import queue
import threading

import pytest

from pubsubsse import stream
from pubsubsse.stream import Inbox


def test_the_reader_waits_and_times_out_like_a_queue():
    inbox = Inbox()
    with pytest.raises(queue.Empty):
        inbox.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        inbox.get_nowait()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert (inbox.qsize(), inbox.empty()) == (2, False)
    assert inbox.get(timeout=0) == 1
    assert inbox.take_all() == [2] and inbox.empty()
    threading.Timer(0.05, inbox.put_nowait, (3,)).start()
    assert inbox.get() == 3  # woken by a put from another thread


def test_a_put_between_the_readers_check_and_its_wait_wakes_it(monkeypatch):
    """The one window of a lost wake-up, forced: a put lands after the reader found the inbox
    empty and before its waiter is visible to putters."""
    inbox = Inbox()
    real_lock = threading.Lock

    class RacingLock:
        def __init__(self) -> None:
            self._lock = real_lock()
            self._first = True

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            got = self._lock.acquire(blocking, timeout)
            if self._first:  # the reader took its fresh waiter: a put now sees no waiter to release
                self._first = False
                inbox.put_nowait("raced")
            return got

        def release(self) -> None:
            self._lock.release()

    monkeypatch.setattr(stream, "_new_waiter", RacingLock)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(inbox.get()), daemon=True)
    reader.start()
    reader.join(10)  # a lost wake-up leaves the reader asleep for good
    assert got == ["raced"]


@pytest.mark.timeout(60)
def test_concurrent_putters_never_leave_the_reader_asleep():
    inbox = Inbox()
    putters, per_putter = 4, 5000
    start = threading.Barrier(putters + 1)

    def put(n: int) -> None:
        start.wait()
        for i in range(per_putter):
            inbox.put_nowait((n, i))

    threads = [threading.Thread(target=put, args=(n,)) for n in range(putters)]
    for thread in threads:
        thread.start()
    start.wait()
    got: list[tuple[int, int]] = []
    while len(got) < putters * per_putter:
        # No time limit: a lost wake-up leaves the reader asleep here and the test times out.
        got.append(inbox.get())
        got += inbox.take_all()
    for thread in threads:
        thread.join()
    for n in range(putters):
        assert [i for m, i in got if m == n] == list(range(per_putter))
    assert inbox.empty()
