"""Prompt detection of peers that closed their connection while their stream is idle.

A WSGI server notices a closed connection only when a write fails, and the
first write after the peer closed usually succeeds (the peer answers it with
a reset). An idle stream would therefore linger for up to two heartbeat
intervals. Instead, the stream's socket is watched for readability: a
browser sends nothing after its request, so the socket becomes readable only
when the peer closes it (end of file) or sends another request.

Two implementations, chosen by the socket the server hands over:

* gevent sockets: a libev read watcher per stream, no greenlet while idle;
* plain sockets (threaded servers): one ``epoll`` thread per process.

Either way the callback (normally :meth:`Stream.close`) runs in a greenlet or
thread of its own, never in the gevent hub.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from typing import Any, Callable, Protocol

from .runtime import original

__all__ = ["watch", "peer_closed"]

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


class _EpollWatcher:
    """One epoll thread per process watching every stream socket of a threaded server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoll = select.epoll()
        self._watches: dict[int, _EpollWatch] = {}
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="pubsubsse-disconnect", daemon=True)
        self._thread.start()

    def add(self, watch: _EpollWatch) -> None:
        with self._lock:
            self._watches[watch.fd] = watch
            self._epoll.register(watch.fd, select.EPOLLIN | select.EPOLLRDHUP)

    def remove(self, watch: _EpollWatch) -> None:
        with self._lock:
            if self._watches.get(watch.fd) is watch:
                del self._watches[watch.fd]
                self._epoll.unregister(watch.fd)

    def _run(self) -> None:
        while True:
            try:
                events = self._epoll.poll(5.0)
            except InterruptedError:
                continue
            for fd, mask in events:
                with self._lock:
                    watch = self._watches.get(fd)
                    if watch is None:
                        continue
                    closed = bool(mask & (select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR))
                    if closed or peer_closed(watch.sock):
                        del self._watches[fd]
                        self._epoll.unregister(fd)
                    else:
                        # The peer sent bytes (a TLS record, a pipelined request) but has not
                        # closed: wait for the close alone, or the unread bytes would wake us
                        # in a loop.
                        self._epoll.modify(fd, select.EPOLLRDHUP)
                        continue
                self._handle(watch)

    def _handle(self, watch: _EpollWatch) -> None:
        # A method of its own so that no loop variable keeps the last stream alive.
        try:
            watch.on_close()
        except Exception:
            log.exception("closing a stream whose peer went away failed")


class _EpollWatch:
    __slots__ = ("fd", "sock", "on_close", "_owner")

    def __init__(self, owner: _EpollWatcher, sock: Any, on_close: Callable[[], None]) -> None:
        self.fd = sock.fileno()
        self.sock = sock
        self.on_close = on_close
        self._owner = owner
        owner.add(self)

    def cancel(self) -> None:
        self._owner.remove(self)


_epoll_watcher: _EpollWatcher | None = None
_epoll_lock = threading.Lock()


def _is_gevent_socket(sock: Any) -> bool:
    module = type(sock).__module__
    return module.startswith("gevent.")


def watch(sock: Any, on_close: Callable[[], None]) -> Watch | None:
    """Call ``on_close()`` (once, from another greenlet or thread) when the peer of ``sock`` closes it.

    Returns a handle to cancel, or ``None`` when the socket cannot be watched
    (then heartbeats alone detect the closed connection).
    """
    global _epoll_watcher
    try:
        if sock.fileno() < 0:
            return None
        if _is_gevent_socket(sock):
            return _GeventWatch(sock, on_close)
        if not hasattr(select, "epoll"):
            return None
        with _epoll_lock:
            if _epoll_watcher is None or _epoll_watcher._pid != os.getpid():
                _epoll_watcher = _EpollWatcher()
            owner = _epoll_watcher
        return _EpollWatch(owner, sock, on_close)
    except (OSError, ValueError, AttributeError):
        log.debug("socket of type %s cannot be watched; relying on heartbeats", type(sock).__name__)
        return None
