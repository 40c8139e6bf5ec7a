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

Either way the callback (normally ``pubsubsse.streams._stream.Stream.close``) runs in a greenlet or
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
import time
from typing import Any, Callable, Protocol

from pubsubsse.servers._runtime import is_gevent_socket, original

__all__ = ["Watch", "watch", "watch_in_loop", "watch_polled", "peer_closed"]

log = logging.getLogger(__name__)


class Watch(Protocol):
    """A registration that :func:`watch` returns; ``cancel()`` it when the stream ends."""

    def cancel(self) -> None:
        """Stop watching. Idempotent."""
        ...


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
    __slots__ = ("_watcher", "_sock", "_on_close", "_cancelled")

    def __init__(self, sock: Any, on_close: Callable[[], None]) -> None:
        from gevent import get_hub

        self._sock = sock
        self._on_close = on_close
        self._cancelled = False
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
            if self._cancelled:
                return
            if peer_closed(self._sock):
                self._on_close()
                return
        # Readable, yet not closed: the peer sent bytes that nobody reads while the stream runs
        # (a pipelined request, a TLS record). The watcher would fire again at once for them, so
        # from now on the socket is looked at twice a second, as the selector thread does.
        _gevent_poller().add(self)

    def closed(self) -> bool:
        return peer_closed(self._sock)

    def close_now(self) -> None:
        if not self._cancelled:
            self._on_close()

    def cancel(self) -> None:
        self._cancelled = True
        self._watcher.stop()
        self._watcher.close()
        _gevent_poller().discard(self)


class _GeventPoller:
    """One greenlet per process that looks at the gevent-watched sockets which cannot be waited on."""

    _RECHECK = 0.5

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._watches: set[_GeventWatch] = set()
        self._running = False

    def add(self, watch: _GeventWatch) -> None:
        import gevent

        self._watches.add(watch)
        if not self._running:
            self._running = True
            gevent.spawn(self._run)

    def discard(self, watch: _GeventWatch) -> None:
        self._watches.discard(watch)

    def _run(self) -> None:
        import gevent

        try:
            while self._watches:
                gevent.sleep(self._RECHECK)
                for watch in [w for w in self._watches if w.closed()]:
                    self._watches.discard(watch)
                    gevent.spawn(watch.close_now)
        finally:
            self._running = False


_poller: _GeventPoller | None = None


def _gevent_poller() -> _GeventPoller:
    global _poller
    if _poller is None or _poller.pid != os.getpid():
        _poller = _GeventPoller()
    return _poller


class _SelectorWatcher:
    """One thread per process watching every stream socket of a threaded server, on :mod:`selectors`.

    A socket that becomes readable without its peer having closed (the peer sent a TLS record
    or a pipelined request, which nobody reads while the stream runs) would wake the selector
    in a loop, so it leaves the selector and is looked at twice a second instead, as are the
    connections a server lets us ask about but not watch (:func:`watch_polled`).
    """

    _RECHECK = 0.5

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._polled: dict[int, _Watch] = {}
        self._next_poll = 0.0
        self.pid = os.getpid()
        # This pipe wakes the thread so that a new watch is seen at once (some selectors copy
        # the set they wait on).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="pubsubsse-disconnect", daemon=True)
        self._thread.start()

    def add(self, watch: _Watch) -> None:
        with self._lock:
            if watch.fd is None:
                self._polled[id(watch)] = watch
            else:
                self._selector.register(watch.fd, selectors.EVENT_READ, watch)
        with contextlib.suppress(BlockingIOError):  # full: the thread is awake already
            os.write(self._wake_w, b"x")

    def remove(self, watch: _Watch) -> None:
        with self._lock:
            if self._polled.pop(id(watch), None) is not None or watch.fd is None:
                return
            try:
                registered = self._selector.get_key(watch.fd).data is watch
            except KeyError:
                return
            if registered:
                self._selector.unregister(watch.fd)

    def _run(self) -> None:
        while True:
            timeout = max(0.0, self._next_poll - time.monotonic()) if self._polled else None
            events = self._selector.select(timeout)
            closed: list[_Watch] = []
            with self._lock:
                for key, _ in events:
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        continue
                    watch = key.data
                    self._selector.unregister(watch.fd)
                    if watch.closed():
                        closed.append(watch)
                    else:
                        self._polled[id(watch)] = watch
                now = time.monotonic()
                if now >= self._next_poll:
                    self._next_poll = now + self._RECHECK
                    for key_id, watch in list(self._polled.items()):
                        if watch.closed():
                            del self._polled[key_id]
                            closed.append(watch)
            for watch in closed:
                self._handle(watch)

    def _handle(self, watch: _Watch) -> None:
        # A method of its own so that no loop variable keeps the last stream alive.
        try:
            watch.on_close()
        except Exception:
            log.exception("closing a stream whose peer went away failed")


class _Watch:
    """A watch of the selector thread: on a socket (``fd``), or polled through ``is_closed``."""

    __slots__ = ("fd", "sock", "is_closed", "on_close", "_owner")

    def __init__(
        self,
        owner: _SelectorWatcher,
        on_close: Callable[[], None],
        sock: Any = None,
        is_closed: Callable[[], bool] | None = None,
    ) -> None:
        self.sock = sock
        self.fd: int | None = sock.fileno() if sock is not None else None
        self.is_closed = is_closed
        self.on_close = on_close
        self._owner = owner
        owner.add(self)

    def closed(self) -> bool:
        if self.is_closed is not None:
            try:
                return bool(self.is_closed())
            except Exception:
                return True
        return peer_closed(self.sock)

    def cancel(self) -> None:
        self._owner.remove(self)


_watcher: _SelectorWatcher | None = None
_watcher_lock = threading.Lock()


def _selector_watcher() -> _SelectorWatcher:
    global _watcher
    with _watcher_lock:
        if _watcher is None or _watcher.pid != os.getpid():
            _watcher = _SelectorWatcher()
        return _watcher


def watch(sock: Any, on_close: Callable[[], None]) -> Watch | None:
    """Call ``on_close()`` (once, from another greenlet or thread) when the peer of ``sock`` closes it.

    ``sock`` is a socket, or any object with a ``fileno()``. Returns a handle
    to cancel, or ``None`` when the socket cannot be watched (then heartbeats
    alone detect the closed connection).
    """
    try:
        if sock.fileno() < 0:
            return None
        if is_gevent_socket(sock):
            return _GeventWatch(sock, on_close)
        return _Watch(_selector_watcher(), on_close, sock=sock)
    except (OSError, ValueError, AttributeError):
        log.debug("socket of type %s cannot be watched; relying on heartbeats", type(sock).__name__)
        return None


def watch_in_loop(fileobj: Any, on_close: Callable[[], None]) -> Watch:
    """Like :func:`watch`, with gevent's event loop, for a descriptor taken over from a gevent server."""
    return _GeventWatch(fileobj, on_close)


def watch_polled(is_closed: Callable[[], bool], on_close: Callable[[], None]) -> Watch:
    """Call ``on_close()`` once ``is_closed()`` returns true; it is asked twice a second.

    For servers that say whether a connection is closed but do not hand over
    its socket (waitress's ``waitress.client_disconnected``).
    """
    return _Watch(_selector_watcher(), on_close, is_closed=is_closed)
