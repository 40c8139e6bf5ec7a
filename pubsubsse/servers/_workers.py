"""How many worker processes serve the app, and the warning when they cannot share one service.

A service with the in-process backend lives in one process. Under ``gunicorn -w 2``
each worker has its own: a client made by one worker is unknown to the other, and
half the requests answer ``client not found``. Nothing fails at boot, so this says
so at boot, once per process.
"""

from __future__ import annotations

import logging
import sys
from types import FrameType

__all__ = ["gunicorn_workers", "warn_unless_shared"]

log = logging.getLogger(__name__)

_warned = False

#: What the warning and the ``client not found`` answer say to do.
ADVICE = (
    "share the service through Redis or PostgreSQL (PUBSUBSSE_REDIS_URL, settings.PUBSUBSSE['redis_url'] "
    "or backend=...) or run one worker process"
)


def gunicorn_workers() -> int | None:
    """Return gunicorn's worker count when called from a gunicorn worker (or its arbiter), else ``None``.

    gunicorn has no global for it; its worker and arbiter objects, which hold the
    configuration, are on the stack while the app is loaded and while a request is
    handled.
    """
    if "gunicorn" not in sys.modules:
        return None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if type(owner).__module__.startswith("gunicorn."):
            workers = getattr(getattr(owner, "cfg", None), "workers", None)
            if isinstance(workers, int):
                return workers
        frame = frame.f_back
    return None


def warn_unless_shared(shared: bool) -> None:
    """Log a warning, once per process, if several gunicorn workers each hold an in-process service."""
    global _warned
    if shared or _warned:
        return
    workers = gunicorn_workers()
    if workers is not None and workers > 1:
        _warned = True
        log.warning(
            "pubsubsse: gunicorn runs %d worker processes and the service is in-process: each worker has its "
            "own clients and topics, so requests that reach another worker answer 'client not found'; %s.",
            workers,
            ADVICE,
        )
