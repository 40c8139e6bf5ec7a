"""The stream loop: how a client's messages travel from publishers to its SSE stream.

Three pieces live here:

* :class:`Mailbox`, one per client: the event counter, the replay buffer that
  makes resume possible, and the attached stream (if any). Publishers deliver
  into it while holding the service lock (see :mod:`pubsubsse.service`);
  delivery never blocks.
* :class:`Stream`, one per attached connection: it owns the client's
  ``queue.Queue`` of outgoing ``(event id, body)`` pairs and turns them into SSE
  bytes. Each wake-up drains everything queued and returns it as one chunk, so
  a server does one socket write per wake-up, not one per event.
* :class:`DirectWriter`, optional, given to a stream by the HTTP layer when
  the server lets it write to the connection itself (gunicorn's gevent
  worker). While the stream's reader waits on an empty queue (it is
  *parked*), a publisher appends the event to the stream's pending bytes
  instead of queueing it, and once the publisher yields, one callback writes
  the pending bytes of every such stream to its socket without blocking.
  Waking one greenlet per subscriber costs more than the write itself, so a
  publish to 1,000 idle subscribers gets several times cheaper, and events
  published back to back still leave in one write per stream. What does not
  fit in a socket's buffer is left to the reader: nothing is reordered or lost.
* :class:`Ticker`, one per service: a single background thread (a greenlet
  under gevent) that queues heartbeats on idle streams and expires clients
  that have been ``WAITING`` too long. One timer for all streams is far cheaper
  than a timed ``get()`` per stream.

Slow consumers: a stream's queue holds at most ``queue_size`` events. When a
delivery finds it full, the queue is emptied and a resync marker is queued
instead; until the stream reaches that marker, new events go only to the
replay buffer. At the marker the stream catches up from the replay buffer if
it still holds every event the consumer has not seen, and otherwise sends a
fresh init message with the full current state. Either way nothing is lost
silently and memory stays bounded.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .encoding import HEARTBEAT, frame

if TYPE_CHECKING:
    from .model import Client
    from .service import SSEPubSubService

__all__ = ["DirectWriter", "Stream", "Mailbox", "Ticker"]

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
#: The queue overflowed: catch up from the replay buffer or resync.
RESYNC_MARK = _Marker("resync")
#: End the stream after everything queued before this marker.
CLOSE_MARK = _Marker("close")
#: Wake the reader to send what a direct write left over (see Stream.take_unsent).
FLUSH_MARK = _Marker("flush")


class Mailbox:
    """Outgoing messages of one client. Every attribute is guarded by the service lock."""

    __slots__ = ("seq", "replay", "stream", "replay_size", "queue_size")

    def __init__(self, replay_size: int, queue_size: int) -> None:
        #: Id of the last event given to this client; ids are 1, 2, 3, …
        self.seq = 0
        #: Bodies of the last events, oldest first; the last one has id ``seq``. A list trimmed in
        #: steps rather than a deque: a deque costs a 64-slot block even for the one or two events
        #: an idle client holds, and there may be tens of thousands of idle clients.
        self.replay: list[bytes] = []
        #: The attached stream, or ``None`` while the client is ``WAITING``.
        self.stream: Stream | None = None
        self.replay_size = replay_size
        self.queue_size = queue_size

    def record(self, body: bytes) -> int:
        """Give the next event id to ``body`` and keep it for replay, without queueing it."""
        self.seq += 1
        replay = self.replay
        replay.append(body)
        if len(replay) > self.replay_size + (self.replay_size >> 3):
            del replay[: len(replay) - self.replay_size]
        return self.seq

    def deliver(self, body: bytes) -> int:
        """Give the client one event with this encoded body; return its id. Never blocks."""
        self.record(body)
        stream = self.stream
        if stream is not None and not stream.resync_pending:
            if stream.parked and stream._write_soon(self.seq, body):
                return self.seq
            if stream.queue.qsize() >= self.queue_size:
                stream.request_resync()
            else:
                stream.enqueue((self.seq, body))
        return self.seq

    def since(self, last_id: int) -> list[tuple[int, bytes]] | None:
        """Return the events after ``last_id``, or ``None`` if the replay buffer no longer holds them all."""
        held = min(len(self.replay), self.replay_size)
        first = self.seq - held + 1
        if last_id < first - 1 or last_id > self.seq:
            return None
        start = len(self.replay) - (self.seq - last_id)
        return list(zip(itertools.count(last_id + 1), self.replay[start:]))


class DirectWriter(Protocol):
    """The connection of a stream, for writes that bypass the server's response iteration.

    Only a server whose sockets never block the process and that runs every
    request, timer and publisher in one OS thread (gunicorn's gevent worker)
    can offer one; see :meth:`Stream.write_directly`.
    """

    def frame(self, chunk: bytes) -> bytes:
        """Return ``chunk`` as it must go on the wire (for example as an HTTP/1.1 chunk)."""

    def send_nowait(self, data: bytes) -> int:
        """Write what fits of ``data`` without blocking; return the byte count, or -1 if the connection broke."""

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the running greenlet yields, outside any greenlet that could block."""


class _Flusher:
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
        for stream in dirty:
            try:
                stream._flush()
            except Exception:
                log.exception("pubsubsse: a direct write failed; the stream's reader takes over")


_FLUSHER = _Flusher()


class Stream:
    """One attached SSE connection of a client: an iterator of ready-to-send byte chunks.

    Get one from :meth:`Client.stream`. Iterating blocks until there is
    something to send and yields it as one chunk (several events are coalesced
    into one chunk). Iteration ends when the stream is closed, taken over by a
    newer stream of the same client, or the client is removed (after its final
    message). :meth:`close` detaches the stream; it is safe to call from any
    thread, any number of times, and wakes a reader blocked in the iterator.
    """

    __slots__ = (
        "_service",
        "client",
        "queue",
        "cursor",
        "resync_pending",
        "detached",
        "last_write",
        "_first",
        "_ended",
        "token",
        "parked",
        "_writer",
        "_unsent",
        "_pending",
    )

    def __init__(self, service: SSEPubSubService, client: Client, first_chunk: bytes, cursor: int, token: str) -> None:
        self._service = service
        #: Identifies this attachment across processes (see SSEPubSubService._op_attach).
        self.token = token
        self.client = client
        #: The client's outgoing queue: ``(event id, body)`` pairs and markers.
        self.queue: queue.Queue[Any] = queue.Queue()
        #: Id of the last event this stream has handed out.
        self.cursor = cursor
        #: Guarded by the service lock: a resync marker is queued and not yet handled.
        self.resync_pending = False
        #: Guarded by the service lock: the stream is no longer the client's stream.
        self.detached = False
        #: Monotonic time of the last chunk handed out; read by the ticker for heartbeats.
        self.last_write = time.monotonic()
        self._first: bytes | None = first_chunk
        self._ended = False
        #: The reader waits on an empty queue and publishers may write to ``_writer`` themselves.
        self.parked = False
        self._writer: DirectWriter | None = None
        #: The framed tail of a direct write that did not fit; the reader sends it before anything else.
        self._unsent = b""
        #: SSE pieces of the events given to the flusher and not written yet (a list only while
        #: there are some: idle streams are what a process holds most of).
        self._pending: list[bytes] | None = None

    def __repr__(self) -> str:
        return f"<Stream of {self.client!r} cursor={self.cursor}{' ended' if self._ended else ''}>"

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> bytes:
        while True:
            chunk = self.read()
            if chunk is None:
                raise StopIteration
            if chunk:
                return chunk

    def read(self, timeout: float | None = None) -> bytes | None:
        """Return the next chunk to send.

        Blocks up to ``timeout`` seconds (forever if ``None``). Returns ``b""``
        when the time ran out with nothing to send, and ``None`` once the stream
        has ended (everything queued before the end has been returned by then).
        """
        if self._first is not None:
            chunk, self._first = self._first, None
            self.last_write = time.monotonic()
            return chunk
        if self._ended:
            return None
        # Nothing can run between these lines and the get() switching away (one OS thread, see
        # write_directly); get() returns without switching when something is queued.
        self.parked = self._writer is not None
        try:
            first = self.queue.get(timeout=timeout)
        except queue.Empty:
            return b""
        finally:
            self.parked = False
        return self._compose(first)

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
                pieces += self._service._catch_up(self)
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
        """Return ``first`` and everything queued behind it, without blocking.

        Only the public ``queue.Queue`` API is used: under gevent's monkey
        patching ``queue.Queue`` is gevent's own queue, with other internals.
        """
        q = self.queue
        items = [first]
        for _ in range(q.qsize()):
            try:
                items.append(q.get_nowait())
            except queue.Empty:
                break
        return items

    def write_directly(self, writer: DirectWriter) -> None:
        """Let publishers write events to ``writer`` while this stream's reader is parked.

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
        self.parked = False
        self._pending = None

    def take_unsent(self) -> bytes:
        """Return (and forget) the framed bytes direct writes left for the reader to send."""
        unsent, self._unsent = self._unsent, b""
        if self._pending and self._writer is not None:
            unsent += self._writer.frame(b"".join(self._pending))
        self._pending = None
        return unsent

    def _write_soon(self, event_id: int, body: bytes) -> bool:
        """Give one event to the flusher; return ``False`` if it must be queued instead.

        Called under the service lock, only while the reader is parked. At most
        ``queue_size`` events wait for the flusher, like in the queue.
        """
        writer = self._writer
        pending = self._pending
        if writer is None or self.detached:
            return False
        if pending is None:
            pending = self._pending = []
            _FLUSHER.add(self, writer)
        elif len(pending) >= 3 * self._service._queue_size:
            return False
        pending += frame(event_id, body)
        self.cursor = event_id
        return True

    def _flush(self) -> None:
        """Write the pending events without blocking; leave what does not fit to the reader."""
        writer = self._writer
        if not self._pending or writer is None:
            return
        data = writer.frame(b"".join(self._pending))
        self._pending = None
        sent = writer.send_nowait(data)
        self.last_write = time.monotonic()
        if sent < len(data):
            # The rest (all of it if the connection broke) must go before anything else; the
            # reader's blocking write sends it, or fails and ends the stream.
            self._unsent = data[max(sent, 0) :]
            self.enqueue(FLUSH_MARK)

    def request_resync(self) -> None:
        """Empty the queue and queue a resync marker instead. Called under the service lock."""
        self._service._counters.queue_overflows += 1
        closing = False
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            closing = closing or item is CLOSE_MARK
        self.resync_pending = True
        self.enqueue(RESYNC_MARK)
        if closing:
            self.enqueue(CLOSE_MARK)

    def enqueue(self, item: Any) -> None:
        """Queue an event or a marker for the reader; from now on publishers queue too.

        Direct writes are allowed only while the reader is parked on an *empty*
        queue. Once something is queued the reader has been woken, and until it
        has run, whatever is published must go behind the queued items: written
        directly, it would overtake them and the reader would then skip them as
        already sent.
        """
        self.parked = False
        self.queue.put_nowait(item)

    def close(self) -> None:
        """Detach the stream and end the iteration. Idempotent, callable from any thread."""
        self._service._detach(self)
        self.enqueue(CLOSE_MARK)

    @property
    def ended(self) -> bool:
        """Whether the stream has handed out its last chunk."""
        return self._ended and self._first is None

    def _end(self) -> None:
        self._ended = True
        self._service._detach(self)


class Ticker:
    """The service's one timer: heartbeats for idle streams, expiry of long-``WAITING`` clients.

    Started lazily by the first stream (so that a service built before a
    server forks, or before gevent patches ``threading``, does not own a thread
    in the wrong process) and restarted if the process has forked since.
    """

    def __init__(self, service: SSEPubSubService, interval: float) -> None:
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
        pid = os.getpid()
        if self._pid == pid and not self._stop.is_set():
            return
        with self._lock:
            if self._pid == pid and not self._stop.is_set():
                return
            self._stop = threading.Event()
            self._pid = pid
            threading.Thread(target=self._run, args=(self._stop,), name="pubsubsse-ticker", daemon=True).start()

    def stop(self) -> None:
        """Stop the timer; it ends within one interval at most (at once, in practice)."""
        self._stop.set()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            try:
                self._service._tick(time.monotonic())
            except Exception:
                log.exception("pubsubsse ticker failed; it keeps running")
