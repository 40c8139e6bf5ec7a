"""What the framework adapters share: their options, and the service each process builds on first use.

An adapter is configured by names (Flask's ``PUBSUBSSE_*`` keys, Django's
``settings.PUBSUBSSE``): every option of the service and of the endpoints,
``redis_url``, ``redis_key``, ``redis_cluster`` and ``redis_partitions`` (a Redis backend built in the process that
uses it: a backend object made in settings would be shared by forked workers),
``postgres_dsn`` and ``postgres_name`` (the same for PostgreSQL),
and the adapter's own (``url_prefix`` for Flask).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from pubsubsse.service import SERVICE_OPTIONS, SSEPubSubService
from pubsubsse.web._protocol import ENDPOINT_OPTIONS

__all__ = ["BACKEND_SHORTHANDS", "LazyService", "known_options", "is_shared", "endpoint_options"]

#: ``redis_url``, ``redis_key``, ``redis_cluster`` and ``redis_partitions``: ``backend=RedisBackend(redis_url,
#: key=redis_key, cluster=redis_cluster, partitions=redis_partitions)``, built in each process;
#: ``postgres_dsn`` and ``postgres_name``: ``backend=PostgresBackend(postgres_dsn, name=postgres_name)``.
BACKEND_SHORTHANDS = frozenset(
    {"redis_url", "redis_key", "redis_cluster", "redis_partitions", "postgres_dsn", "postgres_name"}
)


def known_options(extra: frozenset[str] = frozenset()) -> frozenset[str]:
    """Return every option an adapter reads: the service's, the endpoints', the shorthands and ``extra``."""
    return SERVICE_OPTIONS | ENDPOINT_OPTIONS | BACKEND_SHORTHANDS | extra


def is_shared(options: Mapping[str, Any]) -> bool:
    """Whether these options share the service among processes (a backend, or a Redis URL)."""
    return bool(options.get("backend") or options.get("redis_url") or options.get("postgres_dsn"))


def endpoint_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return the options that configure the endpoints."""
    return {k: v for k, v in options.items() if k in ENDPOINT_OPTIONS}


class LazyService:
    """The service an adapter's options describe, built on first use in the process that uses it."""

    def __init__(self, options: Mapping[str, Any], serving: bool = True) -> None:
        given = [name for name in ("backend", "redis_url", "postgres_dsn") if options.get(name) is not None]
        if len(given) > 1:
            raise ValueError(f"pass one of backend, redis_url and postgres_dsn, not {' and '.join(given)}")
        self.options = dict(options)
        self._serving = serving
        self._service: SSEPubSubService | None = None
        self._lock = threading.Lock()

    def get(self) -> SSEPubSubService:
        """Return the service, building it the first time."""
        if self._service is None:
            with self._lock:
                if self._service is None:
                    service = SSEPubSubService(**self.service_options())
                    service._serving = self._serving  # whether its publishes can reach browsers here
                    self._service = service
        return self._service

    def service_options(self) -> dict[str, Any]:
        """Return the service's options, with ``redis_url`` or ``postgres_dsn`` turned into a backend."""
        options = {k: v for k, v in self.options.items() if k in SERVICE_OPTIONS}
        backend = self.log_backend()
        if backend is not None:
            options["backend"] = backend
        return options

    def log_backend(self) -> Any:
        """Return a new log backend as the shorthands describe it, or ``None``."""
        if self.options.get("redis_url"):
            from pubsubsse.backends.redis import RedisBackend

            cluster = self.options.get("redis_cluster", False)
            if not isinstance(cluster, bool):
                raise ValueError(f"redis_cluster must be True or False, got {cluster!r}")
            key = self.options.get("redis_key", "pubsubsse:log")
            partitions = self.options.get("redis_partitions", 1)
            return RedisBackend(self.options["redis_url"], key=key, cluster=cluster, partitions=partitions)
        if self.options.get("postgres_dsn"):
            from pubsubsse.backends.postgres import PostgresBackend

            return PostgresBackend(self.options["postgres_dsn"], name=self.options.get("postgres_name", "pubsubsse"))
        return None
