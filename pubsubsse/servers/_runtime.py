"""Which runtime this process runs under: gevent's monkey patching, plain threads, or neither.

Everything in pubsubsse that must behave differently under gevent asks here,
so there is one answer for the whole library. gevent counts as the runtime
only once it has patched ``threading`` (``gunicorn -k gevent`` does that before
it imports the app): importing gevent alone changes nothing for the library.
"Neither" is a server that handles one request at a time per process
(gunicorn's sync worker, ``wsgiref``): there a stream blocks every other
request, which :func:`concurrency` tells from the WSGI environ.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["under_gevent", "original", "concurrency", "is_gevent_socket"]


def under_gevent(module: str = "threading") -> bool:
    """Return whether gevent has monkey-patched ``module`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched(module))


def original(module: str, name: str) -> Any:
    """Return ``module.name`` as it was before gevent patched it (the attribute itself if unpatched).

    For the few places that need the operating system's own behaviour, such as
    a ``poll`` that must not yield to the event loop.
    """
    if under_gevent(module):
        from gevent import monkey

        return monkey.get_original(module, name)
    return getattr(importlib.import_module(module), name)


def concurrency(environ: dict[str, Any]) -> str:
    """Return how the server runs requests: ``"gevent"``, ``"threads"`` or ``"none"`` (one at a time)."""
    if under_gevent():
        return "gevent"
    if environ.get("wsgi.multithread", True):
        return "threads"
    return "none"


def is_gevent_socket(sock: Any) -> bool:
    """Return whether the server handed over one of gevent's sockets (its I/O waits in gevent's loop)."""
    return type(sock).__module__.startswith("gevent.")
