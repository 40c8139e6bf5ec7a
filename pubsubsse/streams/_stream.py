"""The stream loop: how a client's messages travel from publishers to its SSE stream.

The pieces that live here:

* :class:`Stream`, one per attached connection: the client's record
  (``core/_records``) offers it every event (with the service
  lock held; an offer never blocks), and it owns the client's
  :class:`EventQueue` of outgoing ``(event id, body)`` pairs and turns them into SSE
  bytes. Each wake-up drains everything queued and returns it as one chunk, so
  a server does one socket write per wake-up, not one per event.
* ``DirectWriter``, optional, given to a stream by the HTTP layer when
  the server lets it write to the connection itself (gunicorn's gevent
  worker). While the stream's reader waits on an empty queue (it is
  *waiting*), a publisher appends the event to the stream's pending bytes
  instead of queueing it, and once the publisher yields, one callback writes
  the pending bytes of every such stream to its socket without blocking.
  Waking one greenlet per subscriber costs more than the write itself, so a
  publish to 1,000 idle subscribers gets several times cheaper, and events
  published back to back still leave in one write per stream. What does not
  fit in a socket's buffer is left to the reader: nothing is reordered or lost.
* :class:`Timer`, one per service: a single background thread (a greenlet
  under gevent) that queues heartbeats on idle streams and expires clients
  that have been ``WAITING`` too long. One timer for all streams is far cheaper
  than a timed ``get()`` per stream.

Slow consumers: a stream's queue holds at most ``queue_size`` events. When a
delivery finds it full, the queue is emptied and a resync marker is queued
instead; until the stream reaches that marker, new events are only kept (in
their topics' histories). At the marker the stream catches up from them if
they still hold every event the consumer has not seen, and otherwise sends a
fresh init message with the full current state. Either way nothing is lost
silently and memory stays bounded.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Protocol

from pubsubsse.core._records import ClientRecord
from pubsubsse.streams._sse import EVENT, HEARTBEAT, frame

__all__ = ["Chunks", "DirectWriter", "EventQueue", "Stream", "StreamOwner", "Timer"]


class StreamOwner(Protocol):
    """What a stream needs from the service that made it (the service, which this layer does not import)."""

    def catch_up(self, stream: Stream) -> list[bytes]:
        """Return the framed events the stream must send to catch up (from the histories, or an init)."""
        ...

    def detach(self, stream: Stream) -> None:
        """Detach the stream from its client (never waits for the backend)."""
        ...

    def count_overflow(self) -> None:
        """Count a queue overflow. Called with the service lock held."""
        ...

    def tick(self, now: float) -> None:
        """Queue heartbeats and expiries: what the timer runs every interval."""
        ...


log = logging.getLogger(__name__)


class _Marker:
    """A queue item that is not an event: tells the stream to do something."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


#: Write a heartbeat comment if nothing else is written in this wake-up.
HEARTBEAT_MARK = _Marker("heartbeat")
#: The queue overflowed: catch up from the histories or resync.
RESYNC_MARK = _Marker("resync")
#: End the stream after everything queued before this marker.
CLOSE_MARK = _Marker("close")
#: Wake the reader to send what a direct write left over (see Stream.take_unsent).
FLUSH_MARK = _Marker("flush")


#: This process's id, kept current across fork: ``os.getpid()`` is a system call, and the
#: timer's check runs on every operation.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _new_waiter() -> Any:
    """Return a new lock for a reader to wait on: gevent's once ``threading`` is patched."""
    return threading.Lock()


class EventQueue:
    """A stream's queue: what ``queue.Queue`` offers a stream, in a tenth of the memory.

    An idle stream's queue is empty and its reader waits on it, so what counts is
    what an empty queue with a waiting reader costs: here a list and one lock,
    made for the wait (``queue.Queue`` holds a deque, a lock and three
    conditions: about 2.5 KB under gevent, this about 0.3 KB). Any number of
    threads may put; one reader takes. The lock is looked up when a reader
    waits, so it is gevent's once ``threading`` is patched.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: Any = None

    def put_nowait(self, item: Any) -> None:
        """Append ``item`` and wake the reader if it waits. Never blocks."""
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            try:  # noqa: SIM105 (cheaper than contextlib.suppress, on the publish path)
                waiter.release()
            except (RuntimeError, ValueError):
                pass  # another thread's put released it first

    def get(self, timeout: float | None = None) -> Any:
        """Return the first item, waiting up to ``timeout`` seconds (forever if ``None``) for one.

        Raises :class:`queue.Empty` if none came in time.
        """
        if not self._items:
            waiter = _new_waiter()
            waiter.acquire()
            self._waiter = waiter
            # Checked again once the waiter is visible: a put before this saw no waiter to release.
            if not self._items:
                waiter.acquire(True, -1 if timeout is None else timeout)
            self._waiter = None
            if not self._items:
                raise queue.Empty
        return self._items.pop(0)

    def get_nowait(self) -> Any:
        """Return the first item; raise :class:`queue.Empty` if there is none."""
        if not self._items:
            raise queue.Empty
        return self._items.pop(0)

    def take_all(self) -> list[Any]:
        """Return every item, in order, and leave the queue empty."""
        items, self._items = self._items, []
        return items

    def qsize(self) -> int:
        """Return how many items wait."""
        return len(self._items)

    def empty(self) -> bool:
        """Return whether no item waits."""
        return not self._items


class DirectWriter(Protocol):
    """The connection of a stream, for writes that bypass the server's response iteration.

    Only a server whose sockets never block the process and that runs every
    request, timer and publisher in one OS thread (gunicorn's gevent worker)
    can offer one; see ``pubsubsse.streams._stream.Stream.write_directly``.
    """

    def frame(self, chunk: bytes) -> bytes:
        """Return ``chunk`` as it must go on the wire (for example as an HTTP/1.1 chunk)."""
        ...

    def send_nowait(self, data: bytes) -> int:
        """Write what fits of ``data`` without blocking; return the byte count, or -1 if the connection broke."""
        ...

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the running greenlet yields, outside any greenlet that could block."""
        ...


class _DirectWrites:
    """The direct writes of one process, sent together once the publishing greenlet yields.

    Deferring them lets several publishes in a row leave in one write per
    stream, as a woken reader would have coalesced them.
    """

    __slots__ = ("_dirty",)

    def __init__(self) -> None:
        self._dirty: list[Stream] = []

    def add(self, stream: Stream, writer: DirectWriter) -> None:
        if not self._dirty:
            writer.call_soon(self._flush)
        self._dirty.append(stream)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        now = time.monotonic()  # one clock read for the batch: it only spaces heartbeats
        for stream in dirty:
            try:
                stream._flush(now)
            except Exception:
                log.exception("pubsubsse: a direct write failed; the stream's reader takes over")


_DIRECT_WRITES = _DirectWrites()


class Chunks:
    """An iterator of ready-to-send SSE chunks over ``read()``: ends when ``read()`` returns ``None``."""

    __slots__ = ()

    def read(self, timeout: float | None = None) -> bytes | None:
        """Return the next chunk, ``b""`` if ``timeout`` ran out first, ``None`` once ended."""
        raise NotImplementedError

    def __iter__(self) -> Chunks:
        return self

    def __next__(self) -> bytes:
        while True:
            chunk = self.read()
            if chunk is None:
                raise StopIteration
            if chunk:
                return chunk


class Stream(Chunks):
    """One attached SSE connection of a client: an iterator of ready-to-send byte chunks.

    Get one from :meth:`~pubsubsse.Client.stream`. Iterating blocks until there is
    something to send and yields it as one chunk (several events are coalesced
    into one chunk). Iteration ends when the stream is closed, taken over by a
    newer stream of the same client, or the client is removed (after its final
    message). :meth:`close` detaches the stream; it is safe to call from any
    thread, any number of times, and wakes a reader blocked in the iterator.
    """

    __slots__ = (
        "_service",
        "_queue_size",
        "record",
        "queue",
        "cursor",
        "resync_pending",
        "detached",
        "last_write",
        "_first",
        "_ended",
        "token",
        "reader_waiting",
        "_writer",
        "_unsent",
        "_pending",
        "_pending_events",
        "notify",
    )

    def __init__(
        self,
        service: StreamOwner,
        record: ClientRecord,
        first_chunk: bytes,
        cursor: int,
        token: str,
        queue_size: int,
    ) -> None:
        self._service = service
        self._queue_size = queue_size
        #: Identifies this attachment across processes (see SSEPubSubService._op_attach).
        self.token = token
        #: The client's record (its handle is :attr:`client`).
        self.record = record
        #: The client's outgoing queue: ``(event id, body)`` pairs and markers.
        self.queue = EventQueue()
        #: Id of the last event this stream has handed out.
        self.cursor = cursor
        #: Guarded by the service lock: a resync marker is queued and not yet handled.
        self.resync_pending = False
        #: Guarded by the service lock: the stream is no longer the client's stream.
        self.detached = False
        #: Monotonic time of the last chunk handed out; read by the timer for heartbeats.
        self.last_write = time.monotonic()
        self._first: bytes | None = first_chunk
        self._ended = False
        #: The reader waits on an empty queue and publishers may write to ``_writer`` themselves.
        self.reader_waiting = False
        self._writer: DirectWriter | None = None
        #: The framed tail of a direct write that did not fit; the reader sends it before anything else.
        self._unsent = b""
        #: The SSE text of the events given to the direct writes and not written yet, and how many they
        #: are. Bytes, not a list of pieces: a publish to 1,000 streams made 1,000 lists, objects
        #: the cyclic garbage collector tracks, and its full collections (30-40 ms with 1,000
        #: streams) stalled every stream of the process a few times a minute.
        self._pending: bytes | bytearray | None = None
        self._pending_events = 0
        #: Called with this stream after each item queued: a multiplexed connection's ready queue (see
        #: ``pubsubsse.streams._multiplex.MultiplexStream``), ``None`` for a stream with its own connection.
        self.notify: Callable[[Stream], None] | None = None

    @property
    def client(self) -> Any:
        """The :class:`~pubsubsse.Client` whose stream this is."""
        return self.record.view

    def __repr__(self) -> str:
        return f"<Stream of {self.client!r} cursor={self.cursor}{' ended' if self._ended else ''}>"

    def read(self, timeout: float | None = None) -> bytes | None:
        """Return the next chunk to send.

        Blocks up to ``timeout`` seconds (forever if ``None``). Returns ``b""``
        when the time ran out with nothing to send, and ``None`` once the stream
        has ended (everything queued before the end has been returned by then).
        """
        if self._first is not None or self._ended:
            return self._take_first()
        # Nothing can run between these lines and the get() switching away (one OS thread, see
        # write_directly); get() returns without switching when something is queued.
        self.reader_waiting = self._writer is not None
        try:
            first = self.queue.get(timeout=timeout)
        except queue.Empty:
            return b""
        finally:
            self.reader_waiting = False
        return self._compose(first)

    def poll(self) -> bytes | None:
        """Return what is ready to send without waiting: like :meth:`read` with no time to wait."""
        if self._first is not None or self._ended:
            return self._take_first()
        try:
            first = self.queue.get_nowait()
        except queue.Empty:
            return b""
        return self._compose(first)

    def _take_first(self) -> bytes | None:
        """Return the first chunk if it is still to send, else ``None`` (the stream has ended)."""
        chunk, self._first = self._first, None
        if chunk is not None:
            self.last_write = time.monotonic()
        return chunk

    def _compose(self, first: Any) -> bytes | None:
        """Turn ``first`` and everything queued behind it into one chunk (see :meth:`read`)."""
        pieces: list[bytes] = []
        heartbeat = False
        for item in self._drain(first):
            if type(item) is tuple:
                event_id, body = item
                if event_id > self.cursor:
                    self.cursor = event_id
                    pieces += frame(event_id, body)
            elif item is HEARTBEAT_MARK:
                heartbeat = True
            elif item is RESYNC_MARK:
                pieces += self._service.catch_up(self)
            elif item is CLOSE_MARK:
                self._end()
                break
        if pieces:
            chunk = b"".join(pieces)
        elif heartbeat:
            chunk = HEARTBEAT
        elif self._ended:
            return None
        else:
            return b""
        self.last_write = time.monotonic()
        return chunk

    def _drain(self, first: Any) -> list[Any]:
        """Return ``first`` and everything queued behind it, without blocking."""
        return [first, *self.queue.take_all()]

    def write_directly(self, writer: DirectWriter) -> None:
        """Let publishers write events to ``writer`` while this stream's reader is waiting.

        Call it from the reader, after the server has sent the response head
        and everything read so far. From then on the reader must send
        :meth:`take_unsent` before each chunk it reads, framed by
        ``writer.frame``. Only valid when publishers, the timer and the reader
        all run in one OS thread (gevent with ``threading`` patched), so that
        a publisher never writes while the reader does.
        """
        self._writer = writer

    def stop_writing_directly(self) -> None:
        """Stop direct writes, for example because the server is about to close the socket."""
        self._writer = None
        self.reader_waiting = False
        self._pending = None

    def take_unsent(self) -> bytes:
        """Return (and forget) the framed bytes direct writes left for the reader to send."""
        unsent, self._unsent = self._unsent, b""
        if self._pending and self._writer is not None:
            unsent += self._writer.frame(bytes(self._pending))
        self._pending = None
        return unsent

    def offer(self, event_id: int, body: bytes) -> None:
        """Take one event of the client (the core's ``AttachedStream`` protocol). Lock held; never blocks.

        Written directly if the reader is waiting and a direct writer is set,
        else queued; a full queue is replaced by a resync marker (see the
        module's docstring), and until the stream reaches it, events are only
        kept where a catch-up finds them.
        """
        if self.resync_pending:
            return
        if self.reader_waiting and self._write_soon(event_id, body):
            return
        if self.queue.qsize() >= self._queue_size:
            self.request_resync()
        else:
            self.enqueue((event_id, body))

    def end(self, superseded: bool) -> None:
        """End the stream (the core's ``AttachedStream`` protocol). Lock held.

        A superseded stream is detached at once: it sends nothing more and
        proposes no detach of its own when it ends.
        """
        if superseded:
            self.detached = True
        self.enqueue(CLOSE_MARK)

    def _write_soon(self, event_id: int, body: bytes) -> bool:
        """Give one event to the direct writes; return ``False`` if it must be queued instead.

        Called under the service lock, only while the reader is waiting. At most
        ``queue_size`` events wait to be written directly, like in the queue.
        """
        writer = self._writer
        pending = self._pending
        if writer is None or self.detached:
            return False
        text = EVENT % (event_id, body)
        if pending is None:
            self._pending = text
            self._pending_events = 1
            _DIRECT_WRITES.add(self, writer)
        elif self._pending_events >= self._queue_size:
            return False
        else:
            if type(pending) is bytes:
                pending = self._pending = bytearray(pending)
            pending += text
            self._pending_events += 1
        self.cursor = event_id
        return True

    def _flush(self, now: float) -> None:
        """Write the pending events without blocking; leave what does not fit to the reader."""
        writer = self._writer
        pending = self._pending
        if not pending or writer is None:
            return
        data = writer.frame(pending if type(pending) is bytes else bytes(pending))  # bytes() costs a call
        self._pending = None
        sent = writer.send_nowait(data)
        self.last_write = now
        if sent < len(data):
            # The rest (all of it if the connection broke) must go before anything else; the
            # reader's blocking write sends it, or fails and ends the stream.
            self._unsent = data[max(sent, 0) :]
            self.enqueue(FLUSH_MARK)

    def request_resync(self) -> None:
        """Empty the queue and queue a resync marker instead. Called under the service lock."""
        self._service.count_overflow()
        closing = any(item is CLOSE_MARK for item in self.queue.take_all())
        self.resync_pending = True
        self.enqueue(RESYNC_MARK)
        if closing:
            self.enqueue(CLOSE_MARK)

    def enqueue(self, item: Any) -> None:
        """Queue an event or a marker for the reader; from now on publishers queue too.

        Direct writes are allowed only while the reader is waiting on an *empty*
        queue. Once something is queued the reader has been woken, and until it
        has run, whatever is published must go behind the queued items: written
        directly, it would overtake them and the reader would then skip them as
        already sent.
        """
        self.reader_waiting = False
        self.queue.put_nowait(item)
        if self.notify is not None:
            self.notify(self)

    def close(self) -> None:
        """Detach the stream and end the iteration. Idempotent, callable from any thread."""
        self._service.detach(self)
        self.enqueue(CLOSE_MARK)

    @property
    def ended(self) -> bool:
        """Whether the stream has handed out its last chunk."""
        return self._ended and self._first is None

    def _end(self) -> None:
        self._ended = True
        self._service.detach(self)


class Timer:
    """The service's one timer: heartbeats for idle streams, expiry of long-``WAITING`` clients.

    Started lazily by the first stream (so that a service built before a
    server forks, or before gevent patches ``threading``, does not own a thread
    in the wrong process) and restarted if the process has forked since.
    """

    def __init__(self, service: StreamOwner, interval: float) -> None:
        self._service = service
        self._interval = interval
        self._stop = threading.Event()
        self._pid = 0
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start the timer thread unless it already runs in this process.

        Called for every new stream, so the usual case reads plain attributes
        only: ``Thread.is_alive()`` takes a lock, which under gevent yields to
        the hub, and thousands of streams opening at once queued up behind it.
        The thread ends only when :meth:`stop` is called.
        """
        pid = _pid
        if self._pid == pid and not self._stop.is_set():
            return
        with self._lock:
            if self._pid == pid and not self._stop.is_set():
                return
            self._stop = threading.Event()
            self._pid = pid
            threading.Thread(target=self._run, args=(self._stop,), name="pubsubsse-timer", daemon=True).start()

    def stop(self) -> None:
        """Stop the timer; it ends within one interval at most (at once, in practice)."""
        self._stop.set()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            try:
                self._service.tick(time.monotonic())
            except Exception:
                log.exception("pubsubsse timer failed; it keeps running")
