"""Streams over TLS (gunicorn ``--certfile``): a closed connection is noticed at once, with no error."""

from __future__ import annotations

import time

import httpx
import pytest

from ..http_helpers import wait_for
from ..servers import Server


@pytest.mark.parametrize("kind", ["gevent", "gthread"])
def test_a_closed_tls_stream_is_noticed_at_once_and_logs_nothing(kind):
    # Heartbeats every 60 s: only the socket watch can notice a closed tab within the bound.
    srv = Server(kind, env={"PUBSUBSSE_HEARTBEAT": "60", "PUBSUBSSE_CLIENT_TIMEOUT": "none"}, tls=True)
    try:
        with httpx.Client(verify=False, timeout=10) as http:
            client = http.get(srv.url("/add/user")).json()["client_id"]
            topic = http.get(srv.url("/add/topic/public/")).json()["topic_id"]
            assert http.get(srv.url("/sub"), params={"client_id": client, "topic": topic}).status_code == 200

            def status() -> str:
                return http.get(srv.url("/test/state")).json()["clients"][client]["status"]

            noticed = []
            for _ in range(3):
                with http.stream("GET", srv.url(f"/event?client_id={client}")) as stream:
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    chunks = stream.iter_raw()  # held: a dropped iterator closes the response
                    assert b"retry:" in next(chunks)
                    assert status() == "receiving"
                    closed = time.monotonic()
                # Leaving the block without reading to the end closes the TLS connection.
                wait_for(lambda: status() == "waiting", timeout=5, what="the closed stream to be noticed")
                noticed.append(time.monotonic() - closed)
        print(f"{kind} over TLS: closed streams noticed after {[round(s, 3) for s in noticed]} s")
        for marker in ("Traceback", "ValueError", "Error handling request"):
            assert marker not in srv.output(), srv.output()
    finally:
        srv.stop()
