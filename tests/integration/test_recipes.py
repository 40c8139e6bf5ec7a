"""The README's recipes for publishing from other processes, run: a Celery worker and a cron script."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from pubsubsse import SSEPubSubService
from pubsubsse.backends import RedisBackend

from ..http_helpers import wait_for
from ..servers import ROOT
from ..sse import drain


@pytest.fixture
def web(redis_server):
    """The web app's service (one replica), with a client subscribed to "orders"."""
    key = f"test:{uuid.uuid4()}"
    service = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key), client_timeout=None)
    client = service.new_client()
    client.sub(service.public_topic("orders"))
    yield service, client, key
    service.shutdown()


def received(service, client, since: str) -> list:
    service.sync()
    stream = client.stream(last_event_id=since)
    got = [u["data"] for m in drain(stream).messages for u in m["updates"] or []]
    stream.close()
    return got


def test_a_cron_script_publishes(web, redis_server):
    service, client, key = web
    since = str(client._service._core.position)
    env = {**os.environ, "PUBSUBSSE_REDIS_URL": redis_server.url, "PUBSUBSSE_REDIS_KEY": key}
    subprocess.run(
        [sys.executable, "-m", "example.publish_cli", "orders", '{"report": "ready"}'], env=env, cwd=ROOT, check=True
    )
    assert received(service, client, since) == [{"report": "ready"}]


@pytest.mark.timeout(120)
def test_a_celery_task_publishes(web, redis_server):
    service, client, key = web
    since = str(client._service._core.position)
    env = {**os.environ, "REDIS_URL": redis_server.url, "PUBSUBSSE_REDIS_KEY": key}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "example.celery_tasks", "worker", "--pool=solo", "--loglevel=warning"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sender = "from example.celery_tasks import ship_order; ship_order.delay(7); ship_order.delay(8)"
        subprocess.run([sys.executable, "-c", sender], env=env, cwd=ROOT, check=True, timeout=60)
        wait_for(lambda: len(received(service, client, since)) == 2, timeout=60, what="the task's publishes")
        assert received(service, client, since) == [
            {"order": 7, "status": "shipped"},
            {"order": 8, "status": "shipped"},
        ]
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert "Traceback" not in output, output
