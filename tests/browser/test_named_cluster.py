"""Named topics across processes: two gunicorn servers on one Redis, a browser, a Publisher, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from ..http_helpers import http
from ..redis_server import RedisServer
from ..servers import ROOT, Server, print_outputs, stop_all
from .conftest import CHROMIUM

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")


@pytest.mark.timeout(180)
def test_workers_make_one_topic_and_a_browser_gets_what_other_processes_publish(browser):
    redis = RedisServer()
    env = {"PUBSUBSSE_REDIS_URL": redis.url, "PUBSUBSSE_REDIS_KEY": f"t:{uuid.uuid4()}"}
    app = "tests.named_app:create_app()"
    servers = []
    try:
        servers = [Server("gevent", env=env, app=app, workers=2), Server("gevent", env=env, app=app, workers=2)]
        # Four workers asked for public_topic("orders") at startup, at once: one topic.
        for server in servers:
            assert http.get(server.url("/test/topics")).json()["public_topics"] == ["T-orders"]

        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(15000)
        page.goto(servers[0].url("/"))
        page.wait_for_function("window.subscribed === true")

        publisher = (
            "import sys; from pubsubsse import Publisher; "
            "p = Publisher(sys.argv[1], redis_key=sys.argv[2]); p.publish('orders', {'from': 'a publisher process'})"
        )
        full_env = {**os.environ, **env}
        subprocess.run([sys.executable, "-c", publisher, redis.url, env["PUBSUBSSE_REDIS_KEY"]], check=True, cwd=ROOT)
        cli = subprocess.run(
            [sys.executable, "-m", "flask", "--app", app, "pubsubsse", "publish", "orders", '{"from": "the CLI"}'],
            env=full_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert "published to T-orders" in cli.stdout
        page.wait_for_function("window.got.length >= 2")
        got = page.evaluate("window.got")
        assert got == [["T-orders", {"from": "a publisher process"}], ["T-orders", {"from": "the CLI"}]], json.dumps(
            got
        )
        context.close()
        assert http.get(servers[1].url("/test/topics")).json()["public_topics"] == ["T-orders"]
    except Exception:
        print_outputs(servers)
        raise
    finally:
        stop_all(servers, redis)
