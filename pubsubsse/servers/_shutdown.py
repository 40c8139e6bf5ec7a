"""End open streams promptly when the server stops this process.

gunicorn stops a worker (on shutdown, reload or max-requests) with SIGTERM and
then waits up to ``graceful_timeout`` for its open requests. An SSE stream
never finishes by itself, so without help every stopping worker would hang
for the full timeout and clients would reconnect late. The HTTP
adapters therefore chain a SIGTERM handler that ends every stream of the services it
serves (each client's ``EventSource`` reconnects and resumes elsewhere), then
runs the handler that was installed before (gunicorn's own).

Signal handlers can only be installed from the main thread. gunicorn imports
the app in the worker's main thread after installing its own handlers, and
gevent runs every request in the main thread, so both cases are covered.

A worker also exits without a signal: gunicorn's ``--max-requests`` stops it from
inside, and under the gevent worker the streams that direct writes released
hold no request it would wait for. So the same ending runs at the process's
normal exit too (``atexit``), then waits a moment for the streams' ends to be
written and, with a shared backend, for their detaches to reach the log: the
other processes must not keep these clients ``RECEIVING``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from pubsubsse.servers._runtime import under_gevent

if TYPE_CHECKING:
    from pubsubsse.service import SSEPubSubService

__all__ = ["close_streams_on_sigterm", "install_handler"]

log = logging.getLogger(__name__)

_services: weakref.WeakSet[SSEPubSubService] = weakref.WeakSet()
_installed_in_pid = 0
_lock = threading.Lock()


def _close_all() -> None:
    log.info("SIGTERM: ending open streams so clients reconnect elsewhere")
    for service in list(_services):
        service.close()


def _open_streams(service: SSEPubSubService) -> int:
    return int(service.stats()["streams"])


def _end_streams_at_exit(pid: int, wait: float = 3.0) -> None:
    """At a normal exit: end every open stream, wait (at most ``wait`` s) for it, then for the detaches."""
    if pid != os.getpid():  # registered before a fork: the parent's services are not this process's
        return
    open_streams = {s: _open_streams(s) for s in list(_services)}
    services = [s for s, n in open_streams.items() if n]
    if not services:
        return
    log.info("exiting: ending %d open streams so clients reconnect elsewhere", sum(open_streams.values()))
    for service in services:
        service.close()
    if under_gevent():  # the streams' writer is a greenlet: let it run
        from gevent import sleep
    else:
        from time import sleep
    deadline = time.monotonic() + wait
    while any(_open_streams(s) for s in services) and time.monotonic() < deadline:
        sleep(0.02)
    for service in services:
        if service.backend.shared:
            with contextlib.suppress(Exception):  # the log is away: the others detach them once it is back
                service.backend.sync()


def _start_closing() -> None:
    """Run :func:`_close_all` elsewhere: a signal handler must neither block nor take locks.

    Under gevent the handler may run inside the event loop, where even starting a (patched)
    thread blocks; a spawned greenlet is only scheduled.
    """
    if under_gevent():
        import gevent

        gevent.spawn(_close_all)
    else:
        threading.Thread(target=_close_all, name="pubsubsse-shutdown", daemon=True).start()


def _handler_chaining(previous: Any) -> Any:
    def on_sigterm(signum: int, frame: Any) -> None:
        _start_closing()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return on_sigterm


def close_streams_on_sigterm(service: SSEPubSubService) -> None:
    """Make SIGTERM end every stream of ``service`` before the previous handler runs.

    Safe to call often: the handler is installed once per process, and only
    from the main thread (elsewhere the call just registers the service).
    """
    _services.add(service)
    install_handler()


def install_handler() -> bool:
    """Install the SIGTERM handler now, for services registered later; return whether it is installed.

    For apps whose service is built on first use, perhaps in a request thread
    where handlers cannot be installed: call this at startup, in the main
    thread (the adapters do, when their module is set up).
    """
    global _installed_in_pid
    with _lock:
        if _installed_in_pid == os.getpid():
            return True
        try:
            previous = signal.getsignal(signal.SIGTERM)
            if previous == signal.SIG_IGN:
                return False
            signal.signal(signal.SIGTERM, _handler_chaining(previous))
        except ValueError:  # not the main thread: signal handlers cannot be set from here
            return False
        _installed_in_pid = os.getpid()
        atexit.register(_end_streams_at_exit, _installed_in_pid)
        return True
