"""Backends: where a service's changes go (see :mod:`pubsubsse.backends.base`).

``InProcessBackend`` is the default. ``RedisBackend`` (``pip install
pubsubsse[redis]``) shares one service among every process that uses the same
Redis log; it is imported on first use, so that the package needs no Redis
client otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Backend, InProcessBackend, Replica

if TYPE_CHECKING:
    from .redis import RedisBackend

__all__ = ["Backend", "InProcessBackend", "Replica", "RedisBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
