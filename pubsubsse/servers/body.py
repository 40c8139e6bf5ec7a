"""A stream as a WSGI response body.

The server iterates the body for the stream's chunks and calls ``close()``
when the response ends, however it ends; meanwhile the socket the server
exposes (``gunicorn.socket``, ``werkzeug.socket``) is watched so that a peer
that goes away while its stream is idle ends the stream at once (see
:mod:`pubsubsse.servers.disconnect`). A server that exposes no socket
(waitress, uWSGI, Django's ``runserver``) notices a closed connection at the
next heartbeat, when a write fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..stream import Stream
from .disconnect import Watch, watch

__all__ = ["StreamBody", "server_socket"]


def server_socket(environ: dict[str, Any]) -> Any:
    """Return the connection's socket if the server exposes it in the WSGI environ, else ``None``."""
    return environ.get("gunicorn.socket") or environ.get("werkzeug.socket")


class StreamBody:
    """The body of an ``/event`` response: ``stream``'s chunks, the stream closed with the response."""

    __slots__ = ("_stream", "_sock", "_watch")

    def __init__(self, stream: Stream, sock: Any = None) -> None:
        self._stream = stream
        self._sock = sock
        self._watch: Watch | None = None

    def __iter__(self) -> Iterator[bytes]:
        self._start_watching()
        return self._stream

    def _start_watching(self) -> None:
        if self._sock is not None and self._watch is None:
            self._watch = watch(self._sock, self._stream.close)

    def close(self) -> None:
        """End the stream and stop watching its socket (before the server closes the socket)."""
        if self._watch is not None:
            self._watch.cancel()
        self._stream.close()
