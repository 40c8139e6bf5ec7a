"""Publishing from a Celery task: browsers of the web app see what a worker in another process does.

    celery -A example.celery_tasks worker --loglevel=info

``ship_order`` publishes an order's new status; ``write_answer`` streams an answer token by token
to a job's topic and closes it (``example/jobs_app.py`` shows it).

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


#: An answer as a language model would stream it: a token at a time.
TEXT = (
    "Server-Sent Events send a stream of text events over one long HTTP response. "
    "The browser reconnects by itself and says which event it saw last, "
    "so a server that numbers its events can resume where the stream stopped."
)
ANSWER = TEXT.split(" ")
TOKEN_SECONDS = float(os.environ.get("TOKEN_SECONDS", "0.05"))


@celery.task
def write_answer(job_id: str) -> None:
    """Stream an answer to the job's topic, token by token, then close the topic (the page shows "done")."""
    topic = f"job-{job_id}"  # made by the web app, with the history the page reads from the start
    for n, word in enumerate(ANSWER):
        time.sleep(TOKEN_SECONDS)  # the model thinking
        publisher.publish(topic, {"n": n, "token": word + " "})
    publisher.close_topic(topic)
