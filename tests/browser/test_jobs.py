"""A job's output in Chromium: example/jobs_app.py with a real Celery worker streaming an answer token by token.

The page is refreshed mid-stream and a second tab opens after the job ended: each shows every
token once, in order, then "done".
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from example.celery_tasks import ANSWER

from ..servers import ROOT, Server
from .conftest import CHROMIUM, new_page

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")

TOKENS = "() => [...document.querySelectorAll('[data-testid=answer] span')].map((s) => Number(s.dataset.n))"


@pytest.mark.timeout(180)
def test_a_page_refreshed_mid_job_shows_every_token_once_in_order_then_done(browser, redis_server):
    # A database of its own: Celery's queue is not shared with other tests' workers.
    url, key = redis_server.url.rsplit("/", 1)[0] + "/3", f"test:{uuid.uuid4()}"
    env = {"REDIS_URL": url, "PUBSUBSSE_REDIS_KEY": key, "PUBSUBSSE_RETRY": "0.3"}
    server = Server("gevent", app="example.jobs_app:create_app()", ready="/test/ready", env=env)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "example.celery_tasks", "worker", "--pool=solo", "--loglevel=warning"],
        env={**os.environ, "REDIS_URL": url, "PUBSUBSSE_REDIS_KEY": key, "TOKEN_SECONDS": "0.1"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    context = browser.new_context()
    try:
        page = new_page(context)
        page.goto(server.url("/"))
        page.click('[data-testid="start"]')
        page.wait_for_url("**/jobs/*")
        page.wait_for_function(f"() => ({TOKENS})().length >= 5", timeout=60000)
        seen = page.evaluate(TOKENS)
        assert seen == list(range(len(seen))) and len(seen) < len(ANSWER)  # mid-stream
        page.reload()  # the same tab: its client, a new stream, and the page empty again
        page.wait_for_selector('[data-testid="state"]:text("done")', timeout=60000)
        assert page.evaluate(TOKENS) == list(range(len(ANSWER)))
        assert page.inner_text('[data-testid="answer"]').split() == ANSWER
        later = new_page(context)  # another tab, after the job ended: all of it, then done
        later.goto(page.url)
        later.wait_for_selector('[data-testid="state"]:text("done")')
        assert later.evaluate(TOKENS) == list(range(len(ANSWER)))
    finally:
        context.close()
        server.stop()
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert "Traceback" not in output, output
