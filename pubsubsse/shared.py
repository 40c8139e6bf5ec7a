"""Shared streams: one connection carrying the streams of several clients (``/event/shared``).

A browser opens at most about six HTTP/1.1 connections to one origin, so the
seventh tab holding its own ``EventSource`` stalls. The browser client avoids
it by electing one tab to hold a single connection for every tab of the
origin. Each tab keeps its own client, subscriptions and resume position; the
connection carries all of them:

* each client has its own :class:`~pubsubsse.stream.Stream`, attached exactly
  as for ``/event`` (resume from its last id, takeover of an older stream,
  the replay buffer, the bounded queue and resync);
* each of its events is sent with ``event: c<i>``, where ``i`` is the client's
  position in the request, and keeps its ``id:``, the client's own event id;
* when a client's stream ends, an ``event: end`` with ``data: {"client": i,
  "reason": ...}`` says why: ``"removed"`` (after the client's final message),
  ``"client not found"`` (unknown when the stream opened) or ``"closed"`` (taken
  over by another connection, or closed by the server; not sent when it is
  the last stream, as the connection then ends);
* the connection ends when every client's stream has ended.

How the chunks of several streams meet on one connection: each stream rings
the shared stream's doorbell when something is queued for it (at most once
until it is read), and the reader drains the streams that rang. Heartbeats
come from the streams' own timer, once per connection and wake-up.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Sequence

from .encoding import HEARTBEAT
from .stream import Chunks, Inbox, Stream

__all__ = ["MAX_SHARED_CLIENTS", "SharedStream"]

#: How many clients one shared stream may carry.
MAX_SHARED_CLIENTS = 32

_DATA = b"\ndata: "


def end_notice(index: int, reason: str) -> bytes:
    """Return the ``end`` event that tells the reader the stream of client ``index`` has ended."""
    return b"event: end\ndata: %s\n\n" % json.dumps({"client": index, "reason": reason}).encode()


class SharedStream(Chunks):
    """The streams of several clients as one iterator of SSE chunks.

    ``streams`` holds each client's stream, or ``None`` at the position of a
    client that could not be attached (announced at once with reason
    ``"client not found"``). A stream that ends later is announced with reason
    ``"removed"`` if its client was removed, else ``"closed"`` (taken over by
    another connection, or closed by the server). Iterate it for the chunks; :meth:`close` ends every stream and is
    safe from any thread, any number of times.
    """

    __slots__ = ("_streams", "_live", "_doorbell", "_rung", "_first", "on_ready")

    def __init__(
        self,
        streams: Sequence[Stream | None],
    ) -> None:
        self._streams = list(streams)
        #: Called (never blocking, perhaps with the service lock held) when something gets ready
        #: to read: how a body that holds no greenlet learns it has something to write.
        self.on_ready: Callable[[], None] | None = None
        # An Inbox, not a queue.Queue: an idle shared connection is mostly its doorbell (0.3 KB, not 2.5).
        self._doorbell = Inbox()
        self._rung: set[Stream] = set()
        notices = b"".join(end_notice(i, "client not found") for i, stream in enumerate(streams) if stream is None)
        self._first: bytes | None = notices or None
        self._live = {stream: i for i, stream in enumerate(streams) if stream is not None}
        for stream in self._live:
            stream.bell = self._ring
            self._ring(stream)  # each stream's first chunk: its init message, or what it resumes with

    def __repr__(self) -> str:
        return f"<SharedStream of {len(self._streams)} clients, {len(self._live)} live>"

    def _ring(self, stream: Stream) -> None:
        # Called with the service lock held, or by a closing thread: never blocks. At most one ring
        # per stream is waiting; the reader forgets it before it reads the stream, so an item queued
        # after that read rings again.
        if stream not in self._rung:
            self._rung.add(stream)
            self._doorbell.put_nowait(stream)
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
            rang = [self._doorbell.get_nowait() if timeout == 0 else self._doorbell.get(timeout)]
        except queue.Empty:
            return b""
        for _ in range(self._doorbell.qsize()):
            try:
                rang.append(self._doorbell.get_nowait())
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
                pieces.append(_tagged(chunk, index))
            if chunk is None or stream.ended:
                del self._live[stream]
                stream.bell = None
                ended.append((index, stream))
        for index, stream in ended:
            # A removal is always announced; streams closed together with the last one end the
            # connection, which says enough.
            if stream.client._removed:
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
        self._doorbell.put_nowait(None)
        on_ready = self.on_ready
        if on_ready is not None:
            on_ready()

    @property
    def has_ready(self) -> bool:
        """Whether :meth:`read` has something to return without waiting (its end included)."""
        return self._first is not None or not self._live or not self._doorbell.empty()

    @property
    def ended(self) -> bool:
        """Whether every client's stream has ended and the last chunk was handed out."""
        return not self._live and self._first is None


def _tagged(chunk: bytes, index: int) -> bytes:
    """Return a stream's chunk with each event tagged ``event: c<index>``.

    Every event of a stream is an ``id:`` line followed by one ``data:`` line
    (the JSON never holds a line break), so the tag goes before each ``data:``.
    A first chunk's ``retry:`` line stays: it applies to the connection.
    """
    return chunk.replace(_DATA, b"\nevent: c%d%s" % (index, _DATA))
