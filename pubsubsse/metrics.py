"""Prometheus metrics for a service, read from :meth:`~pubsubsse.SSEPubSubService.stats` at scrape time.

Optional: needs ``prometheus-client`` (``pip install pubsubsse[metrics]``).
Nothing is counted twice and nothing runs between scrapes::

    from prometheus_client import make_wsgi_app
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from pubsubsse.metrics import register_metrics

    register_metrics(service)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app()})

With several worker processes each process reports its own counters; use
prometheus-client's multiprocess mode or scrape each worker, as for any
other metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pubsubsse.service import SSEPubSubService

__all__ = ["register_metrics", "ServiceCollector"]

#: ``stats()`` key (the metric's name after the prefix) -> help. Gauges describe the service as this process sees it.
_GAUGES = {
    "clients_receiving": "Clients with an attached stream.",
    "clients_waiting": "Clients without an attached stream.",
    "streams": "Streams attached in this process.",
    "public_topics": "Public topics.",
    "topics": "Topics of every type.",
    "groups": "Groups.",
    "history_messages": "Messages the topics keep in this process (their histories).",
    "history_bytes": "Bytes of the messages the topics keep in this process.",
}
#: Counters since this process started.
_COUNTERS = {
    "messages_published": "Publishes applied by this process.",
    "messages_delivered": "Messages offered by publishes to the streams this process holds.",
    "streams_opened": "Streams opened in this process.",
    "resumes": "Streams that resumed from where their client was (Last-Event-ID).",
    "resyncs": "Streams that got a fresh init message instead of the events they missed.",
    "queue_overflows": "Deliveries that found a stream's queue full.",
}


class ServiceCollector:
    """A Prometheus collector for one service; ``prefix`` starts every metric name."""

    def __init__(self, service: SSEPubSubService, prefix: str = "pubsubsse") -> None:
        self._service = service
        self._prefix = prefix

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (called by prometheus-client on every scrape)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self._service.stats()
        for key, help_text in _GAUGES.items():
            yield GaugeMetricFamily(f"{self._prefix}_{key}", help_text, value=stats[key])
        for key, help_text in _COUNTERS.items():
            yield CounterMetricFamily(f"{self._prefix}_{key}", help_text, value=stats[key])


def register_metrics(service: SSEPubSubService, registry: Any = None, prefix: str = "pubsubsse") -> ServiceCollector:
    """Register a :class:`ServiceCollector` for ``service`` (in prometheus-client's default registry unless given).

    Raises :class:`ImportError` with the install command if prometheus-client is missing.
    """
    try:
        from prometheus_client import REGISTRY
    except ImportError as error:
        raise ImportError("pubsubsse.metrics needs prometheus-client: pip install 'pubsubsse[metrics]'") from error
    collector = ServiceCollector(service, prefix)
    (REGISTRY if registry is None else registry).register(collector)
    return collector
