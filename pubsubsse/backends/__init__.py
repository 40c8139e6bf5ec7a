"""Backends: where a service's changes go (see :mod:`pubsubsse.backends.base`).

``InProcessBackend`` is the default. ``RedisBackend`` (``pip install
pubsubsse[redis]``) and ``PostgresBackend`` (``pip install
pubsubsse[postgres]``) share one service among every process that uses the
same log; they are imported on first use, so that the package needs neither
client library otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pubsubsse.backends.base import Backend, InProcessBackend, Replica

if TYPE_CHECKING:
    from pubsubsse.backends.postgres import PostgresBackend
    from pubsubsse.backends.redis import RedisBackend

__all__ = ["Backend", "InProcessBackend", "Replica", "RedisBackend", "PostgresBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":
        from pubsubsse.backends.redis import RedisBackend

        return RedisBackend
    if name == "PostgresBackend":
        from pubsubsse.backends.postgres import PostgresBackend

        return PostgresBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
