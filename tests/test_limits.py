"""Every limit: reached, refused with a clear error, nothing changed, the service goes on."""

from __future__ import annotations

import pytest
from flask import Flask

from pubsubsse import LimitReached, SSEPubSubService, create_blueprint


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
