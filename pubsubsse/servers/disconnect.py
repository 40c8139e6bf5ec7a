"""Prompt detection of peers that closed their connection while their stream is idle.

A WSGI server notices a closed connection only when a write fails, and the
first write after the peer closed usually succeeds (the peer answers it with
a reset). An idle stream would therefore linger for up to two heartbeat
intervals. Instead, the stream's socket is watched for readability: a
browser sends nothing after its request, so the socket becomes readable only
when the peer closes it (end of file) or sends another request.

Two implementations, chosen by the socket the server hands over:

* gevent sockets: a libev read watcher per stream, no greenlet while idle;
* plain sockets (threaded servers): one thread per process on :mod:`selectors`
  (epoll on Linux, kqueue on BSD and macOS).

Either way the callback (normally :meth:`Stream.close`) runs in a greenlet or
thread of its own, never in the gevent hub.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import selectors
import socket
import threading
from typing import Any, Callable, Protocol

from ..runtime import original

__all__ = ["Watch", "watch", "peer_closed"]

log = logging.getLogger(__name__)


class Watch(Protocol):
    """A registration that :func:`watch` returns; ``cancel()`` it when the stream ends."""

    def cancel(self) -> None:
        """Stop watching. Idempotent."""


_POLLRDHUP: int = getattr(select, "POLLRDHUP", 0)
_HANGUP = _POLLRDHUP | getattr(select, "POLLHUP", 0) | getattr(select, "POLLERR", 0) | getattr(select, "POLLNVAL", 0)


def peer_closed(sock: Any) -> bool:
    """Return whether the peer of ``sock`` has closed its end (or the connection broke), reading nothing.

    Works for TLS sockets too: the check never goes through the TLS layer
    (which refuses ``recv`` flags). Where the system reports a half-closed
    connection (Linux's ``POLLRDHUP``) that is asked directly, so bytes the
    peer sent before closing (a TLS ``close_notify``) do not hide the close;
    elsewhere the first byte on the descriptor is peeked at, and only an end of
    file counts.
    """
    try:
        fd = sock.fileno()
    except (OSError, ValueError):
        return True
    if fd < 0:
        return True
    if _POLLRDHUP:
        poller = original("select", "poll")()
        poller.register(fd, select.POLLIN | _POLLRDHUP)
        return any(mask & _HANGUP for _, mask in poller.poll(0))
    raw = original("socket", "socket")(fileno=fd)
    try:
        return bool(raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        raw.detach()  # the descriptor stays the server's


#: After a readable socket shows no close yet, look again after these pauses (seconds): a TLS
#: peer sends its close_notify just before the TCP close, and the first look may fall between.
_LOOK_AGAIN = (0.05, 0.25, 1.0)


class _GeventWatch:
    __slots__ = ("_watcher", "_sock", "_on_close")

    def __init__(self, sock: Any, on_close: Callable[[], None]) -> None:
        from gevent import get_hub

        self._sock = sock
        self._on_close = on_close
        self._watcher = get_hub().loop.io(sock.fileno(), 1)
        self._watcher.start(self._readable)

    def _readable(self) -> None:
        import gevent

        self._watcher.stop()
        gevent.spawn(self._check)

    def _check(self) -> None:
        import gevent

        for pause in (0.0, *_LOOK_AGAIN):
            gevent.sleep(pause)
            if peer_closed(self._sock):
                self._on_close()
                return

    def cancel(self) -> None:
        self._watcher.stop()
        self._watcher.close()


class _SelectorWatcher:
    """One thread per process watching every stream socket of a threaded server, on :mod:`selectors`.

    A socket that becomes readable without its peer having closed (the peer sent a TLS record
    or a pipelined request, which nobody reads while the stream runs) would wake the selector
    in a loop, so it leaves the selector and is looked at again once a second instead.
    """

    _RECHECK = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._rechecked: dict[int, _SelectorWatch] = {}
        self.pid = os.getpid()
        # Registering from another thread is safe with every selector CPython has; this pipe
        # wakes the thread so that a new socket is seen at once (kqueue and select copy the set).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="pubsubsse-disconnect", daemon=True)
        self._thread.start()

    def add(self, watch: _SelectorWatch) -> None:
        with self._lock:
            self._selector.register(watch.fd, selectors.EVENT_READ, watch)
        with contextlib.suppress(BlockingIOError):  # full: the thread is awake already
            os.write(self._wake_w, b"x")

    def remove(self, watch: _SelectorWatch) -> None:
        with self._lock:
            if self._rechecked.get(watch.fd) is watch:
                del self._rechecked[watch.fd]
                return
            try:
                registered = self._selector.get_key(watch.fd).data is watch
            except KeyError:
                return
            if registered:
                self._selector.unregister(watch.fd)

    def _run(self) -> None:
        while True:
            events = self._selector.select(self._RECHECK if self._rechecked else None)
            closed: list[_SelectorWatch] = []
            with self._lock:
                for key, _ in events:
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        continue
                    watch = key.data
                    self._selector.unregister(watch.fd)
                    if peer_closed(watch.sock):
                        closed.append(watch)
                    else:
                        self._rechecked[watch.fd] = watch
                if not events:
                    for fd, watch in list(self._rechecked.items()):
                        if peer_closed(watch.sock):
                            del self._rechecked[fd]
                            closed.append(watch)
            for watch in closed:
                self._handle(watch)

    def _handle(self, watch: _SelectorWatch) -> None:
        # A method of its own so that no loop variable keeps the last stream alive.
        try:
            watch.on_close()
        except Exception:
            log.exception("closing a stream whose peer went away failed")


class _SelectorWatch:
    __slots__ = ("fd", "sock", "on_close", "_owner")

    def __init__(self, owner: _SelectorWatcher, sock: Any, on_close: Callable[[], None]) -> None:
        self.fd = sock.fileno()
        self.sock = sock
        self.on_close = on_close
        self._owner = owner
        owner.add(self)

    def cancel(self) -> None:
        self._owner.remove(self)


_watcher: _SelectorWatcher | None = None
_watcher_lock = threading.Lock()


def watch(sock: Any, on_close: Callable[[], None]) -> Watch | None:
    """Call ``on_close()`` (once, from another greenlet or thread) when the peer of ``sock`` closes it.

    Returns a handle to cancel, or ``None`` when the socket cannot be watched
    (then heartbeats alone detect the closed connection).
    """
    global _watcher
    try:
        if sock.fileno() < 0:
            return None
        if type(sock).__module__.startswith("gevent."):
            return _GeventWatch(sock, on_close)
        with _watcher_lock:
            if _watcher is None or _watcher.pid != os.getpid():
                _watcher = _SelectorWatcher()
            owner = _watcher
        return _SelectorWatch(owner, sock, on_close)
    except (OSError, ValueError, AttributeError):
        log.debug("socket of type %s cannot be watched; relying on heartbeats", type(sock).__name__)
        return None
