"""Publishing from a Celery task: browsers of the web app see what a worker in another process does.

    celery -A example.celery_tasks worker --loglevel=info

The web app shares its service through Redis (``PUBSUBSSE_REDIS_URL``, see the README); the task
publishes with a :class:`pubsubsse.Publisher`: one Redis round trip, no replica of the service.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from pubsubsse import Publisher

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

celery = Celery("example", broker=REDIS_URL)
# One per worker process; it connects on first use, so it is safe to make before Celery forks.
publisher = Publisher(REDIS_URL, redis_key=os.environ.get("PUBSUBSSE_REDIS_KEY", "pubsubsse:log"))


@celery.task
def ship_order(order_id: int) -> None:
    """Do the slow work, then tell every browser subscribed to the "orders" topic."""
    time.sleep(0.1)  # the work
    publisher.publish("orders", {"order": order_id, "status": "shipped"})
