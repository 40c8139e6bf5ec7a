"""pytest fixtures for testing an app that uses pubsubsse.

Opt in from a ``conftest.py``::

    pytest_plugins = ["pubsubsse.testing.pytest_plugin"]

``pubsub_service`` is a service in this process (no client expiry), shut down
after the test; ``pubsub_client`` a client of it. Read what a client receives
with :func:`pubsubsse.testing.read_stream`, which never hangs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pubsubsse.handles import Client
from pubsubsse.service import SSEPubSubService

__all__ = ["pubsub_service", "pubsub_client"]


@pytest.fixture
def pubsub_service() -> Iterator[SSEPubSubService]:
    """Yield a service in this process; shut it down after the test."""
    service = SSEPubSubService(client_timeout=None)
    service._serving = True  # its streams are read here (read_stream): no warning about unserved publishes
    yield service
    service.shutdown()


@pytest.fixture
def pubsub_client(pubsub_service: SSEPubSubService) -> Client:
    """Return a new client of ``pubsub_service``."""
    return pubsub_service.new_client()
