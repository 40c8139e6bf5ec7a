"""Every limit: reached, refused with a clear error, nothing changed, the service goes on."""

from __future__ import annotations

import time

import httpx
import pytest
from flask import Flask

from pubsubsse import LimitReached, SSEPubSubService, create_blueprint
from pubsubsse.web._ratelimit import RateLimiter


@pytest.fixture
def limited():
    svc = SSEPubSubService(
        client_timeout=None, max_clients=3, max_private_topics=2, max_groups=2, max_payload_bytes=100
    )
    yield svc
    svc.close()


def test_max_clients(limited):
    clients = [limited.new_client() for _ in range(3)]
    with pytest.raises(LimitReached, match="max_clients"):
        limited.new_client()
    assert len(limited.get_clients()) == 3
    limited.remove_client(clients[0])
    limited.new_client()


def test_max_private_topics(limited):
    c = limited.new_client()
    topics = [c.new_private_topic() for _ in range(2)]
    with pytest.raises(LimitReached, match="max_private_topics"):
        c.new_private_topic()
    assert list(c.get_private_topics()) == [t.id for t in topics]
    c.remove_private_topic(topics[0])
    c.new_private_topic()


def test_max_groups(limited):
    groups = [limited.new_group() for _ in range(2)]
    with pytest.raises(LimitReached, match="max_groups"):
        limited.new_group()
    limited.remove_group(groups[0])
    limited.new_group()


def test_max_payload_bytes(limited):
    c = limited.new_client()
    t = limited.new_public_topic()
    c.sub(t)
    stream = c.stream()
    stream.read(timeout=0)
    with pytest.raises(LimitReached, match="max_payload_bytes"):
        t.pub("x" * 200)
    assert stream.read(timeout=0) == b""
    t.pub("small")
    assert b"small" in stream.read(timeout=0)


def test_limits_over_http_answer_429_json_and_the_server_goes_on(limited):
    app = Flask(__name__)
    app.register_blueprint(create_blueprint(limited, end_streams_on_sigterm=False))
    http = app.test_client()
    cid = http.post("/add/user").json["client_id"]
    for _ in range(2):
        assert http.post("/add/topic/private/", data={"client_id": cid}).status_code == 200
    r = http.post("/add/topic/private/", data={"client_id": cid})
    assert (r.status_code, r.json) == (429, {"ok": "false", "error": "limit reached: max_private_topics"})
    http.post("/add/user")
    http.post("/add/user")
    r = http.post("/add/user")
    assert (r.status_code, r.json) == (429, {"ok": "false", "error": "limit reached: max_clients"})
    assert http.post("/sub", data={"client_id": cid, "topic": "T-x"}).status_code == 400


@pytest.mark.parametrize("name", ["max_clients", "max_private_topics", "max_groups", "max_payload_bytes"])
def test_bad_limit_options(name):
    with pytest.raises(ValueError, match=name):
        SSEPubSubService(**{name: -1})


@pytest.fixture(scope="module")
def rate_limited():
    from ..servers import Server

    srv = Server("gevent", env={"PUBSUBSSE_NEW_CLIENT_RATE": "2", "PUBSUBSSE_NEW_CLIENT_BURST": "5"})
    yield srv
    srv.stop()


def from_address(server, address: str) -> httpx.Client:
    return httpx.Client(base_url=server.base, timeout=10, transport=httpx.HTTPTransport(local_address=address))


def test_new_clients_per_remote_address_are_rate_limited(rate_limited):
    here, there = from_address(rate_limited, "127.0.0.1"), from_address(rate_limited, "127.0.0.2")
    clients = [here.post("/add/user").json()["client_id"] for _ in range(5)]  # the burst
    refusals = [here.post("/add/user") for _ in range(3)]
    for r in refusals:
        assert (r.status_code, r.json()) == (429, {"ok": "false", "error": "too many new clients"})
        assert int(r.headers["Retry-After"]) >= 1
    assert here.get("/stats").json()["clients"] == 5
    # Another address is not affected, and the limited address still uses what it has.
    assert there.post("/add/user").status_code == 200
    topic = here.post("/add/topic/public/").json()["topic_id"]
    assert here.post("/sub", data={"client_id": clients[0], "topic": topic}).status_code == 200
    # Tokens come back at 2 per second.
    deadline = time.monotonic() + 5
    while here.post("/add/user").status_code == 429:
        assert time.monotonic() < deadline, "the limit never let up"
        time.sleep(0.1)
    assert rate_limited.output().count("are rate limited") == 1  # one log line, not one per refusal


def test_rate_limiter_memory_is_bounded():
    limiter = RateLimiter(rate=1, burst=2, max_keys=100)
    for i in range(1000):
        assert limiter.acquire(f"10.0.{i // 256}.{i % 256}") == 0
        assert len(limiter._buckets) <= 100
    assert limiter.acquire("10.0.3.231") == 0  # still one token left for the last address
    assert limiter.acquire("10.0.3.231") > 0


@pytest.mark.parametrize(("rate", "burst"), [(0, 5), (-1, 5), (1, 0.5)])
def test_bad_rate_limit_options(rate, burst):
    with pytest.raises(ValueError, match="rate must be"):
        create_blueprint(SSEPubSubService(), new_clients_per_second=rate, new_clients_burst=burst)
