"""Direct writes under ``gunicorn -k gevent``: publishers write events to idle streams' sockets.

Without them, a publish to 1,000 subscribers wakes 1,000 greenlets, each to
write a few bytes. With them, the publisher writes to each parked stream's
socket itself (non-blocking; what does not fit is left for the stream's own
greenlet), which costs a fraction of the CPU and reaches the last subscriber
sooner. gunicorn still sends the response head and the first chunk, so its
bookkeeping stays right; after that this module writes the rest of the body to
the socket, framed as gunicorn would have framed it.

Allowed only where it is safe (:func:`direct_framing`): gunicorn's gevent
worker with ``threading`` patched (publishers, the timer and the stream share
one OS thread and sockets never block the process), plain HTTP/1.x over TCP
(no TLS to go through, no HTTP/2 framing). Later body bytes bypass WSGI
middleware, which is why the adapters take ``direct_writes=False``.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any, Callable

from ..runtime import is_gevent_socket, original, under_gevent
from ..stream import Stream
from .body import StreamBody

__all__ = ["direct_framing", "DirectStreamBody"]

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


class DirectStreamBody(StreamBody):
    """A stream's body that is also its :class:`~pubsubsse.stream.DirectWriter`.

    The server sends the response head with the first chunk; after that
    publishers write to the parked stream themselves and this iterator writes
    the rest to the socket, returning only when the stream ends so the server
    can finish the response. One object per stream, because idle streams are
    what a process holds most of.
    """

    __slots__ = ("_sock", "_chunked", "_direct", "_fd", "_own")

    def __init__(self, stream: Stream, environ: dict[str, Any], chunked: bool) -> None:
        super().__init__(stream, environ)
        self._own = stream  # typed as the one-client stream that direct writes need
        sock = environ["gunicorn.socket"]
        self._sock = sock
        self._chunked = chunked
        #: Direct writes have started (the server has sent the head and the first chunk).
        self._direct = False
        self._fd = sock.fileno()
        _stream_loop()  # learnt here, in a stream's greenlet, not from whichever thread publishes first

    def __iter__(self) -> Iterator[bytes]:
        self._start_watching()
        return self

    def __next__(self) -> bytes:
        stream = self._own
        if not self._direct:
            self._direct = True
            return next(stream)
        stream.write_directly(self)
        sendall = self._sock.sendall
        while True:
            chunk = stream.read()
            unsent = stream.take_unsent()
            if unsent:
                sendall(unsent)
            if chunk is None:
                raise StopIteration
            if chunk:
                sendall(self.frame(chunk))

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

    def close(self) -> None:
        """Stop direct writes, then end the stream (before the server closes the socket and reuses its number)."""
        self._own.stop_writing_directly()
        super().close()
