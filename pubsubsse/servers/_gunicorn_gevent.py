"""Direct writes under ``gunicorn -k gevent``: publishers write events to idle streams' sockets.

Without them, a publish to 1,000 subscribers wakes 1,000 greenlets, each to
write a few bytes. With them, the publisher writes to each waiting stream's
socket itself (non-blocking; what does not fit is left to the :class:`Writer`),
which costs a fraction of the CPU and reaches the last subscriber
sooner. gunicorn still sends the response head and the first chunk, so its
bookkeeping stays right; after that this module writes the rest of the body to
the socket, framed as gunicorn would have framed it.

Once the head and the first chunk are out, the stream's body takes the
connection over from gunicorn (``release()``): gunicorn's
socket object lets go of the descriptor, the request's greenlet ends, and the
stream holds no greenlet while idle. What direct writes cannot send at once,
heartbeats and the end of the response are then written by one greenlet per
process for all such streams (:class:`Writer`), as the socket accepts them. An
idle stream then costs its client, its stream, its socket and a watcher, not a
greenlet and a WSGI request: about half the memory. gunicorn's
``--worker-connections`` no longer counts these streams (only requests in
progress), and a worker that stops ends them at once (the browsers resume
elsewhere). A multiplexed stream (``/event/shared``, several clients on one
connection) is released the same way (:class:`MultiplexBody`), without
direct writes: its clients' streams ring it, and the :class:`Writer` writes.

Allowed only where it is safe (:func:`direct_framing`): gunicorn's gevent
worker with ``threading`` patched (publishers, the timer and the stream share
one OS thread and sockets never block the process), plain HTTP/1.x over TCP
(no TLS to go through, no HTTP/2 framing). Later body bytes bypass WSGI
middleware, which is why the adapters take ``direct_writes=False``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import queue
import socket
from collections.abc import Iterator
from typing import Any, Callable

from pubsubsse.servers._body import StreamBody, _Descriptor
from pubsubsse.servers._disconnect import watch_in_loop
from pubsubsse.servers._runtime import is_gevent_socket, original, under_gevent
from pubsubsse.streams._multiplex import MultiplexStream
from pubsubsse.streams._stream import Stream

__all__ = ["direct_framing", "ReleasedBody", "DirectStreamBody", "MultiplexBody", "Writer"]

log = logging.getLogger(__name__)


def direct_framing(environ: dict[str, Any]) -> bool | None:
    """Return whether direct writes to the request's connection must be chunked, or ``None`` if not allowed.

    gunicorn frames a body of unknown length as chunks exactly when the
    request is HTTP/1.1, so direct writes must too.
    """
    sock = environ.get("gunicorn.socket")
    if sock is None or not is_gevent_socket(sock):
        return None
    protocol = environ.get("SERVER_PROTOCOL")
    if protocol not in ("HTTP/1.0", "HTTP/1.1") or environ.get("wsgi.url_scheme") != "http":
        return None
    if hasattr(sock, "do_handshake") or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    if not under_gevent():
        return None
    return bool(protocol == "HTTP/1.1")


_warned_foreign_thread = False


@functools.lru_cache(maxsize=1)
def _native_get_ident() -> Callable[[], int]:
    get_ident: Callable[[], int] = original("_thread", "get_ident")
    return get_ident


def _native_thread_id() -> int:
    return _native_get_ident()()


@functools.lru_cache(maxsize=1)
def _stream_loop_of(pid: int) -> tuple[Any, int]:
    from gevent import get_hub

    return get_hub().loop, _native_thread_id()


def _stream_loop() -> tuple[Any, int]:
    """Return the event loop that runs this process's streams (the first stream's), and its OS thread."""
    return _stream_loop_of(os.getpid())


class ReleasedBody(StreamBody):
    """A stream's body that takes the connection over from gunicorn once the head and first chunk are out.

    From then on the request's greenlet has ended and the :class:`Writer` writes
    what the stream has ready (:meth:`write_ready`), without blocking, as the
    socket takes it, and ends the response when the stream ends. Subclasses say
    what is ready (``_take()``) and how the stream tells that it has more.
    """

    __slots__ = (
        "_sock",
        "_chunked",
        "_fd",
        "_started",
        "_released",
        "_out",
        "_ending",
        "_rung",
        "_writable",
        "_write_timeout",
        "_stalled",
    )

    def __init__(
        self,
        stream: Stream | MultiplexStream,
        environ: dict[str, Any],
        chunked: bool,
        write_timeout: float | None = None,
    ) -> None:
        super().__init__(stream, environ)
        self._write_timeout = write_timeout
        #: A libev timer while ``_out`` waits for the socket, with ``write_timeout``; ``True`` once it fired.
        self._stalled: Any = None
        sock = environ["gunicorn.socket"]
        self._sock = sock
        self._chunked = chunked
        self._fd = sock.fileno()
        #: The server has sent the head and the first chunk.
        self._started = False
        #: gunicorn let go of the connection: this body writes the rest and closes it.
        self._released = False
        self._out = b""  # framed bytes the socket has not taken yet
        self._ending = False  # the stream has ended: close once _out is sent
        self._rung = False  # waiting in the writer's ready queue
        self._writable: Any = None  # a libev write watcher while _out waits for the socket
        _stream_loop()  # learnt here, in a stream's greenlet, not from whichever thread publishes first

    def __iter__(self) -> Iterator[bytes]:
        self._start_watching()
        return self

    def __next__(self) -> bytes:
        if not self._started:
            self._started = True
            return next(self._stream)
        self.release()
        # gunicorn treats a broken pipe as a client gone: it closes its (detached) socket object
        # quietly and ends the request's greenlet. The connection lives on, written by the Writer.
        raise BrokenPipeError(errno.EPIPE, "the stream took its connection over (not an error)")

    def frame(self, chunk: bytes) -> bytes:
        """Frame ``chunk`` as the server frames the body."""
        return b"%X\r\n%s\r\n" % (len(chunk), chunk) if self._chunked else chunk

    def send_nowait(self, data: bytes) -> int:
        """Write what fits now; return the bytes written, ``-1`` once the connection is gone."""
        # gevent keeps every socket non-blocking at the OS level, so this never stalls the process.
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            return -1

    def release(self) -> None:
        """Take the connection over from gunicorn (whose socket is a gevent socket: :func:`direct_framing`).

        gunicorn's socket object gives up its descriptor (``detach()``), so its
        ``close()`` leaves the connection open; the watch for a closed peer
        moves to the descriptor.
        """
        fd = self._sock.detach()
        if self._watch is not None:
            self._watch.cancel()
        self._fd = fd
        self._released = True
        self._watch = watch_in_loop(_Descriptor(fd), self._stream.close)
        self._taken_over()
        self._mark_ready()  # what was queued while the head went out

    def _taken_over(self) -> None:
        """Have the stream ring this body (``_mark_ready()``) when it has something ready."""
        raise NotImplementedError

    def _take(self) -> bytes:
        """Return the framed bytes the stream has ready; once it has ended, set ``_ending`` (and add the end)."""
        raise NotImplementedError

    def _mark_ready(self, *_: object) -> None:
        if not self._rung:
            self._rung = True
            _writer().ring(self)

    def write_ready(self) -> None:
        """Write what the stream has ready, without blocking: called by the :class:`Writer`."""
        self._rung = False
        if self._stalled is True:
            log.info(
                "pubsubsse: a stream's connection took nothing for %s s (write_timeout): ending it", self._write_timeout
            )
            self._finish()
            return
        if self._fd < 0 or self._writable is not None:
            return  # closed, or waiting for the socket to take what is left
        if not self._out and not self._ending:
            self._out = self._take()
        if self._out:
            sent = self.send_nowait(self._out)
            if sent < 0:
                self._finish()  # the peer is gone
                return
            self._out = self._out[sent:]
            if self._out:
                from gevent import get_hub

                self._waiting_for_socket()
                loop = get_hub().loop
                self._writable = loop.io(self._fd, 2)
                self._writable.start(self._socket_writable)
                if self._write_timeout is not None:
                    self._stalled = loop.timer(self._write_timeout)
                    self._stalled.start(self._timed_out)
                return
        if self._ending:
            self._finish()
        else:
            self._idle()

    def _waiting_for_socket(self) -> None:
        """Note that the socket took part of what was ready: the rest waits until it takes more."""

    def _idle(self) -> None:
        """Wait for the stream to ring: everything ready was sent."""

    def _end(self) -> bytes:
        self._ending = True
        return b"0\r\n\r\n" if self._chunked else b""

    def _socket_writable(self) -> None:
        self._stop_writable()
        self._mark_ready()

    def _timed_out(self) -> None:
        # A callback of the event loop, which must not wait for the service lock: the Writer ends it.
        self._stop_writable()
        self._stalled = True
        self._mark_ready()

    def _stop_writable(self) -> None:
        if self._writable is not None:
            self._writable.stop()
            self._writable.close()
            self._writable = None
        stalled, self._stalled = self._stalled, None
        if stalled is not None and stalled is not True:
            stalled.stop()
            stalled.close()

    def _finish(self) -> None:
        """End a released stream: stop watching, close the connection."""
        self._stop_writable()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        self._stream.close()

    def close(self) -> None:
        """End the stream (before the server closes the socket and reuses its number), unless it was released.

        Once released, the server's close is not the end: the stream goes on and
        ends by itself (:meth:`write_ready` closes the connection).
        """
        if not self._released:
            super().close()


class DirectStreamBody(ReleasedBody):
    """A client's stream released from gunicorn, and also its ``pubsubsse.streams._stream.DirectWriter``.

    The server sends the response head with the first chunk; then the body
    takes the connection over (``release()``) and ends the server's part of
    the request. From then on publishers write to the waiting stream themselves
    and the :class:`Writer` writes the rest (``write_ready()``), and ends the
    response when the stream ends. One object per stream, because idle
    streams are what a process holds most of.
    """

    __slots__ = ("_own",)

    def __init__(
        self, stream: Stream, environ: dict[str, Any], chunked: bool, write_timeout: float | None = None
    ) -> None:
        super().__init__(stream, environ, chunked, write_timeout)
        self._own = stream  # typed as the one-client stream that direct writes need

    def __next__(self) -> bytes:
        if self._started:
            self._own.write_directly(self)
        return super().__next__()

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` soon in the streams' event loop."""
        loop, thread = _stream_loop()
        if _native_thread_id() == thread:
            loop.run_callback(callback)
            return
        # A publish from another OS thread (gevent's threadpool, a C library's callback): its own
        # hub would never run the callback and every direct write of the process would wait for
        # heartbeats. Hand it to the streams' loop, and say that this is not supported.
        global _warned_foreign_thread
        if not _warned_foreign_thread:
            _warned_foreign_thread = True
            log.error(
                "pubsubsse: a change was made from a native thread under gevent; gevent objects are not "
                "thread-safe: hand such calls to the worker's hub with hub.loop.run_callback_threadsafe()"
            )
        loop.run_callback_threadsafe(callback)

    def _taken_over(self) -> None:
        self._own.notify = self._mark_ready

    def _take(self) -> bytes:
        stream = self._own
        chunk = stream.poll()
        out = stream.take_unsent()
        if chunk:
            out += self.frame(chunk)
        if chunk is None:
            out += self._end()
        return out

    def _waiting_for_socket(self) -> None:
        self._own.reader_waiting = False  # publishers queue behind what is left

    def _idle(self) -> None:
        stream = self._own
        if stream.queue.empty():
            stream.reader_waiting = True  # idle again: publishers write directly
        else:
            self._mark_ready()

    def _finish(self) -> None:
        stream = self._own
        stream.notify = None
        stream.stop_writing_directly()
        super()._finish()

    def close(self) -> None:
        """Stop direct writes, then end the stream, unless it was released (then it ends by itself)."""
        if not self._released:
            self._own.stop_writing_directly()
        super().close()


class MultiplexBody(ReleasedBody):
    """A multiplexed stream (``/event/shared``) released from gunicorn: no greenlet per connection while idle.

    Publishers queue events on the clients' streams as usual (no direct writes:
    the connection carries several clients); each stream rings the shared
    stream, which rings this body, and the :class:`Writer` sends what is ready.
    """

    __slots__ = ("_shared",)

    def __init__(
        self, shared: MultiplexStream, environ: dict[str, Any], chunked: bool, write_timeout: float | None = None
    ) -> None:
        super().__init__(shared, environ, chunked, write_timeout)
        self._shared = shared

    def _taken_over(self) -> None:
        self._shared.on_ready = self._mark_ready

    def _take(self) -> bytes:
        chunk = self._shared.read(0)
        if chunk is None:
            return self._end()
        return self.frame(chunk) if chunk else b""

    def _idle(self) -> None:
        if self._shared.has_ready:
            self._mark_ready()

    def _finish(self) -> None:
        self._shared.on_ready = None
        super()._finish()


class Writer:
    """The one greenlet of a process that writes for released streams.

    A released stream rings it when something is queued for it (what direct
    writes left over, a heartbeat, a resync, its end) or its socket can take
    more; the greenlet writes without blocking and moves on, so a slow reader
    holds up nobody. It may wait for the service lock (a resync), which a
    callback of the event loop must not.
    """

    def __init__(self) -> None:
        import gevent

        self._ready: queue.Queue[ReleasedBody] = queue.Queue()
        self._greenlet = gevent.spawn(self._run)

    def ring(self, body: ReleasedBody) -> None:
        """Have ``body`` write what it has ready, soon."""
        self._ready.put_nowait(body)

    def _run(self) -> None:
        while True:
            self._write(self._ready.get())  # in a call of its own: no local keeps the last stream alive

    @staticmethod
    def _write(body: ReleasedBody) -> None:
        try:
            body.write_ready()
        except Exception:
            log.exception("pubsubsse: writing to a released stream failed; the stream ends")
            try:
                body._finish()
            except Exception:
                log.exception("pubsubsse: ending a released stream failed")


@functools.lru_cache(maxsize=1)
def _writer_of(pid: int) -> Writer:
    return Writer()


def _writer() -> Writer:
    """Return this process's :class:`Writer` (a forked worker makes its own)."""
    return _writer_of(os.getpid())
