"""A stream as a WSGI response body.

The server iterates the body for the stream's chunks and calls ``close()``
when the response ends, however it ends; meanwhile the connection is watched
so that a peer that goes away while its stream is idle ends the stream at once
(see ``pubsubsse.servers._disconnect``). Each server lets us see the
connection its own way, all of them found in :func:`watch_connection`:
gunicorn and Werkzeug put the socket in the environ, uWSGI tells its
descriptor, waitress says whether the client went away (when
``channel_request_lookahead`` is set). A server that does none of these
(Django's ``runserver``) notices a closed connection at a heartbeat, when a
write fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

from pubsubsse.servers._disconnect import Watch, watch, watch_polled
from pubsubsse.streams._multiplex import MultiplexStream
from pubsubsse.streams._stream import Stream

__all__ = ["StreamBody", "server_socket", "watch_connection"]


def server_socket(environ: dict[str, Any]) -> Any:
    """Return the connection's socket if the server exposes it in the WSGI environ, else ``None``."""
    return environ.get("gunicorn.socket") or environ.get("werkzeug.socket")


class _Descriptor:
    """A descriptor that the server owns, as something with a ``fileno()`` to watch."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def watch_connection(environ: dict[str, Any], on_close: Callable[[], None]) -> Watch | None:
    """Call ``on_close()`` when the request's connection closes, if the server lets us see it."""
    sock = server_socket(environ)
    if sock is not None:
        return watch(sock, on_close)
    if "uwsgi.version" in environ:
        import uwsgi  # only importable inside uWSGI

        return watch(_Descriptor(uwsgi.connection_fd()), on_close)
    client_disconnected = environ.get("waitress.client_disconnected")
    if callable(client_disconnected):
        return watch_polled(lambda: bool(client_disconnected()), on_close)
    return None


class StreamBody:
    """The body of an ``/event`` or ``/event/shared`` response: the stream's chunks; it is closed with the response."""

    __slots__ = ("_stream", "_environ", "_watch")

    def __init__(self, stream: Stream | MultiplexStream, environ: dict[str, Any]) -> None:
        self._stream = stream
        self._environ: dict[str, Any] | None = environ
        self._watch: Watch | None = None

    def __iter__(self) -> Iterator[bytes]:
        self._start_watching()
        return self._stream

    def _start_watching(self) -> None:
        # In the server's request thread or greenlet, where uWSGI knows the connection.
        if self._environ is not None:
            self._watch = watch_connection(self._environ, self._stream.close)
            self._environ = None  # the request's environ is not kept alive with an idle stream

    def close(self) -> None:
        """End the stream and stop watching its socket (before the server closes the socket)."""
        if self._watch is not None:
            self._watch.cancel()
        self._stream.close()
