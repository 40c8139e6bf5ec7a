"""Observability: ``/stats`` (off unless asked for), ``SSEPubSubService.stats()`` and Prometheus metrics.

Also the slow-consumer policy under load: a reader that stops reading while thousands of large
messages are published overflows its queue, and when it reads again it gets every message it
missed or, where the replay buffer no longer holds them, a fresh init message: never a silent gap.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pubsubsse import SSEPubSubService
from pubsubsse.metrics import register_metrics

from ..http_helpers import SSEReader, api, new_client, new_public_topic, publish, wait_for
from ..servers import Server
from .test_direct_writes import RawStream


@pytest.fixture(scope="module", params=["gevent", "threaded"])
def small_queues(request):
    env = {"PUBSUBSSE_HEARTBEAT": "1", "PUBSUBSSE_QUEUE": "20", "PUBSUBSSE_REPLAY": "50"}
    srv = Server(request.param, env=env)
    yield srv
    srv.stop()


def stats(server) -> dict:
    answer = api(server, "/stats")
    assert answer.status_code == 200
    return answer.json()


def grew(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in after if k != "ok" and after[k] != before[k]}


def test_stats_endpoint_counts_what_happened(small_queues):
    server = small_queues
    topic = new_public_topic(server)
    a, b = new_client(server), new_client(server)
    for c in (a, b):
        assert api(server, "/sub", client_id=c, topic=topic).status_code == 200
    before = stats(server)
    reader = SSEReader("httpx-sse", server.url(f"/event?client_id={a}"))
    try:
        init = reader.next()
        publish(server, topic, 1, 2, 3)
        last = reader.take(3)[-1]
    finally:
        reader.close()
    resumed = SSEReader("httpx-sse", server.url(f"/event?client_id={a}"), headers={"Last-Event-ID": init.id})
    try:
        assert [e.json()["updates"][0]["data"] for e in resumed.take(3)] == [1, 2, 3]
        assert stats(server)["clients_receiving"] == 1
    finally:
        resumed.close()
    unknown = SSEReader("httpx-sse", server.url(f"/event?client_id={a}"), headers={"Last-Event-ID": "999999"})
    try:
        assert unknown.next().json()["updates"] is None  # an init message: the id was unknown
    finally:
        unknown.close()
    # The server notices the closed connection on its own time: wait for it, then count.
    wait_for(lambda: stats(server)["clients_receiving"] == 0, what="the last stream to end")
    after = stats(server)
    assert int(last.id) == int(init.id) + 3
    grown = grew(before, after)
    assert grown.pop("history_bytes") > 3 * len('{"sys":null,"updates":[]}')  # the three kept messages
    assert grown == {
        "history_messages": 3,
        "messages_published": 3,
        "messages_delivered": 3,  # to a's stream; b has none, and its messages wait in the topic's history
        "streams_opened": 3,
        "resumes": 1,
        "resyncs": 1,
    }
    assert after["clients"] == after["clients_receiving"] + after["clients_waiting"]


def test_stats_is_off_unless_enabled(small_queues):
    assert api(small_queues, "/locked/stats").status_code == 404


def test_a_stalled_reader_overflows_then_gets_everything_or_a_resync(small_queues):
    server = small_queues
    topic = new_public_topic(server)
    client = new_client(server)
    assert api(server, "/sub", client_id=client, topic=topic).status_code == 200
    stream = RawStream(server.port, f"/event?client_id={client}", rcvbuf=4096)
    try:
        ((init_id, _),) = stream.events(1)
        before = stats(server)
        for batch in range(10):  # 10 MB: far beyond the socket buffers and the 20-event queue
            publish(server, topic, *[f"{batch * 100 + i} " + "y" * 10_000 for i in range(100)])
        assert grew(before, stats(server))["queue_overflows"] >= 1
        events = stream.until(init_id + 1000)
    finally:
        stream.close()
    # Every message arrived in order, except where an init message stood for the ones it covers.
    expected_id = init_id + 1
    numbers = []
    for event_id, data in events:
        message = json.loads(data)
        if message["updates"] is None:
            expected_id = event_id + 1
            continue
        assert event_id == expected_id, "a gap without a resync"
        numbers.append(int(message["updates"][0]["data"].split(" ")[0]))
        expected_id += 1
    assert numbers == sorted(set(numbers))
    assert (numbers and numbers[-1] == 999) or json.loads(events[-1][1])["updates"] is None
    assert len(numbers) < 1000  # some were covered by a resync: the overflow did happen


def test_prometheus_metrics_follow_the_service():
    service = SSEPubSubService(client_timeout=None)
    registry = CollectorRegistry()
    register_metrics(service, registry=registry)
    topic = service.new_public_topic()
    clients = [service.new_client() for _ in range(3)]
    for client in clients:
        client.sub(topic)
    streams = [client.stream() for client in clients[:2]]  # one client has no stream: nothing offered to it
    topic.pub("x")
    topic.pub("y")
    text = generate_latest(registry).decode()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(lines["pubsubsse_messages_published_total"]) == 2
    assert float(lines["pubsubsse_messages_delivered_total"]) == 4
    assert float(lines["pubsubsse_clients_waiting"]) == 1
    for stream in streams:
        stream.close()
    assert float(lines["pubsubsse_public_topics"]) == 1
    service.shutdown()


def test_stats_of_a_fresh_service_are_zero():
    service = SSEPubSubService()
    assert set(service.stats().values()) == {0}
    assert sorted(service.stats()) == sorted(
        [
            "clients",
            "clients_receiving",
            "clients_waiting",
            "streams",
            "public_topics",
            "topics",
            "groups",
            "messages_published",
            "messages_delivered",
            "streams_opened",
            "resumes",
            "resyncs",
            "queue_overflows",
            "history_messages",
            "history_bytes",
        ]
    )


def test_metrics_without_prometheus_client_say_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'pubsubsse\[metrics\]'"):
        register_metrics(SSEPubSubService())
