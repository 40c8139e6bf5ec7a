"""Multiplexed streams: one connection carrying the streams of several clients (``/event/shared``).

A browser opens at most about six HTTP/1.1 connections to one origin, so the
seventh tab holding its own ``EventSource`` stalls. The browser client avoids
it by electing one tab to hold a single connection for every tab of the
origin. Each tab keeps its own client, subscriptions and resume position; the
connection carries all of them:

* each client has its own ``pubsubsse.streams._stream.Stream``, attached exactly
  as for ``/event`` (resume from its last id, takeover of an older stream,
  the catch-up, the bounded queue and resync);
* each of its events is sent with ``event: c<i>``, where ``i`` is the client's
  position in the request, and keeps its ``id:``, the client's own event id;
* when a client's stream ends, an ``event: end`` with ``data: {"client": i,
  "reason": ...}`` says why: ``"removed"`` (after the client's final message),
  ``"client not found"`` (unknown when the stream opened) or ``"closed"`` (taken
  over by another connection, or closed by the server; not sent when it is
  the last stream, as the connection then ends);
* the connection ends when every client's stream has ended.

How the chunks of several streams meet on one connection: each stream rings
the multiplexed stream's ready queue when something is queued for it (at most once
until it is read), and the reader drains the streams that rang. Heartbeats
come from the streams' own timer, once per connection and wake-up.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence

from pubsubsse.streams._sse import HEARTBEAT, end_notice, tagged
from pubsubsse.streams._stream import Chunks, EventQueue, Stream

__all__ = ["MAX_MULTIPLEXED_CLIENTS", "MultiplexStream"]

#: How many clients one multiplexed stream may carry.
MAX_MULTIPLEXED_CLIENTS = 32


class MultiplexStream(Chunks):
    """The streams of several clients as one iterator of SSE chunks.

    ``streams`` holds each client's stream, or ``None`` at the position of a
    client that could not be attached (announced at once with reason
    ``"client not found"``). A stream that ends later is announced with reason
    ``"removed"`` if its client was removed, else ``"closed"`` (taken over by
    another connection, or closed by the server). ``reframe(chunk, index)``
    turns a stream's chunk into what the connection sends (by default, each
    event tagged ``event: c<index>``). Iterate it for the chunks; :meth:`close` ends every stream and is
    safe from any thread, any number of times.
    """

    __slots__ = ("_streams", "_live", "_ready", "_rung", "_first", "_reframe", "on_ready")

    def __init__(
        self,
        streams: Sequence[Stream | None],
        reframe: Callable[[bytes, int], bytes] = tagged,
    ) -> None:
        self._streams = list(streams)
        # How a stream's chunk is sent on this connection: tagged with its client's index, or (one
        # client's HTML stream) re-framed as HTML events.
        self._reframe = reframe
        #: Called (never blocking, perhaps with the service lock held) when something gets ready
        #: to read: how a body that holds no greenlet learns it has something to write.
        self.on_ready: Callable[[], None] | None = None
        # An EventQueue, not a queue.Queue: an idle multiplexed connection is mostly its ready queue (0.3 KB, not 2.5).
        self._ready = EventQueue()
        self._rung: set[Stream] = set()
        notices = b"".join(end_notice(i, "client not found") for i, stream in enumerate(streams) if stream is None)
        self._first: bytes | None = notices or None
        self._live = {stream: i for i, stream in enumerate(streams) if stream is not None}
        for stream in self._live:
            stream.notify = self._mark_ready
            self._mark_ready(stream)  # each stream's first chunk: its init message, or what it resumes with

    def __repr__(self) -> str:
        return f"<MultiplexStream of {len(self._streams)} clients, {len(self._live)} live>"

    def _mark_ready(self, stream: Stream) -> None:
        # Called with the service lock held, or by a closing thread: never blocks. At most one ring
        # per stream is waiting; the reader forgets it before it reads the stream, so an item queued
        # after that read rings again.
        if stream not in self._rung:
            self._rung.add(stream)
            self._ready.put_nowait(stream)
            on_ready = self.on_ready
            if on_ready is not None:
                on_ready()

    def read(self, timeout: float | None = None) -> bytes | None:
        """Return the next chunk: every event ready on any of the streams, each tagged with its client.

        Blocks up to ``timeout`` seconds (forever if ``None``; heartbeats wake it
        while idle). Returns ``b""`` when the time ran out with nothing to send
        and ``None`` once every stream has ended.
        """
        if self._first is not None:
            notices, self._first = self._first, None
            return notices
        if not self._live:
            return None
        try:
            rang = [self._ready.get_nowait() if timeout == 0 else self._ready.get(timeout)]
        except queue.Empty:
            return b""
        for _ in range(self._ready.qsize()):
            try:
                rang.append(self._ready.get_nowait())
            except queue.Empty:
                break
        pieces: list[bytes] = []
        ended: list[tuple[int, Stream]] = []
        heartbeat = False
        for stream in rang:
            if stream is None or stream not in self._live:
                continue
            self._rung.discard(stream)
            index = self._live[stream]
            chunk = stream.poll()
            if chunk == HEARTBEAT:
                heartbeat = True
            elif chunk:
                pieces.append(self._reframe(chunk, index))
            if chunk is None or stream.ended:
                del self._live[stream]
                stream.notify = None
                ended.append((index, stream))
        for index, stream in ended:
            # A removal is always announced; streams closed together with the last one end the
            # connection, which says enough.
            if stream.record.removed:
                pieces.append(end_notice(index, "removed"))
            elif self._live:
                pieces.append(end_notice(index, "closed"))
        if pieces:
            now = time.monotonic()
            for stream in self._live:
                stream.last_write = now  # the connection is not idle: no stream needs a heartbeat
            return b"".join(pieces)
        if heartbeat:
            return HEARTBEAT
        return None if not self._live else b""

    def close(self) -> None:
        """End every client's stream and wake the reader. Idempotent, callable from any thread."""
        for stream in list(self._live):
            stream.close()
        self._ready.put_nowait(None)
        on_ready = self.on_ready
        if on_ready is not None:
            on_ready()

    @property
    def has_ready(self) -> bool:
        """Whether :meth:`read` has something to return without waiting (its end included)."""
        return self._first is not None or not self._live or not self._ready.empty()

    @property
    def ended(self) -> bool:
        """Whether every client's stream has ended and the last chunk was handed out."""
        return not self._live and self._first is None
