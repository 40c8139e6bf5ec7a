"""Backends: where a service's changes go (see :mod:`pubsubsse.backends.base`).

``InProcessBackend`` is the default. ``RedisBackend`` (``pip install
pubsubsse[redis]``) and ``PostgresBackend`` (``pip install
pubsubsse[postgres]``) share one service among every process that uses the
same log; they are imported on first use, so that the package needs neither
client library otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Backend, InProcessBackend, Replica

if TYPE_CHECKING:
    from .postgres import PostgresBackend
    from .redis import RedisBackend

__all__ = ["Backend", "InProcessBackend", "Replica", "RedisBackend", "PostgresBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    if name == "PostgresBackend":
        from .postgres import PostgresBackend

        return PostgresBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
