"""pubsubsse.testing against a live server: a real gunicorn gevent server on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from pubsubsse.testing import read_stream

from ..http_helpers import api, new_client, new_public_topic, publish
from ..servers import Server


@pytest.fixture(scope="module")
def live():
    server = Server("gevent", env={"PUBSUBSSE_HEARTBEAT": "30", "PUBSUBSSE_CLIENT_TIMEOUT": "none"})
    yield server
    server.stop()


def test_a_live_url_is_read_for_the_messages_asked_then_closed(live):
    client, topic = new_client(live), new_public_topic(live)
    assert api(live, "/sub", client_id=client, topic=topic).status_code == 200
    publish(live, topic, "a", "b")
    url = live.url(f"/event?client_id={client}")
    received = read_stream(url, messages=4, last_event_id="0")
    assert received.updates(topic) == ["a", "b"]
    started = time.monotonic()
    idle = read_stream(url, seconds=0.5, last_event_id=received.last_event_id)  # heartbeats 30 s away
    assert idle.messages == [] and time.monotonic() - started < 3
    with pytest.raises(AssertionError, match="answered 400"):
        read_stream(live.url("/event?client_id=nobody"), messages=1)
