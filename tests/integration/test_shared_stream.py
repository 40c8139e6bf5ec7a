"""/event/shared without a server: several clients' streams on one connection, each resumable."""

from __future__ import annotations

import pytest

from pubsubsse import SSEPubSubService, Status
from pubsubsse.streams._multiplex import MAX_MULTIPLEXED_CLIENTS, MultiplexStream
from pubsubsse.web._protocol import Endpoints, Reply, Request, StreamReply

from ..sse import drain_shared


@pytest.fixture
def service():
    service = SSEPubSubService(client_timeout=None, heartbeat=3600)
    yield service
    service.shutdown()


def open_shared(endpoints: Endpoints, clients: str) -> MultiplexStream:
    answer = endpoints.handle(Request("GET", "/event/shared", f"clients={clients}".encode()))
    assert isinstance(answer, StreamReply), answer
    assert isinstance(answer.stream, MultiplexStream)
    return answer.stream


def refused(endpoints: Endpoints, clients: str) -> tuple[int, str]:
    answer = endpoints.handle(Request("GET", "/event/shared", f"clients={clients}".encode()))
    assert isinstance(answer, Reply), answer
    return answer.status, answer.json()["error"]


def updates(events, kind):
    return [m["updates"][0]["data"] for k, _, m in events if k == kind and m["updates"]]


def test_each_clients_events_are_tagged_with_its_position(service):
    clients = [service.new_client() for _ in range(3)]
    news, sport = service.public_topic("news"), service.public_topic("sport")
    for client in clients:
        client.sub(news)
    clients[1].sub(sport)
    shared = open_shared(Endpoints(service), ",".join(c.id for c in clients))
    first = drain_shared(shared)
    assert sorted(k for k, _, _ in first) == ["c0", "c1", "c2"]  # one init message each
    assert all(c.status is Status.RECEIVING for c in clients)
    news.pub("n1")
    sport.pub("s1")
    news.pub("n2")
    events = drain_shared(shared)
    assert updates(events, "c0") == updates(events, "c2") == ["n1", "n2"]
    assert updates(events, "c1") == ["n1", "s1", "n2"]
    shared.close()
    assert drain_shared(shared) == [] and shared.ended
    assert all(c.status is Status.WAITING for c in clients)


def test_every_client_resumes_from_its_own_last_id(service):
    a, b = service.new_client(), service.new_client()
    topic = service.public_topic("news")
    a.sub(topic)
    b.sub(topic)
    endpoints = Endpoints(service)
    shared = open_shared(endpoints, f"{a.id},{b.id}")
    drain_shared(shared)
    topic.pub(1)
    got = drain_shared(shared)
    last = {kind: event_id for kind, event_id, _ in got}
    shared.close()
    topic.pub(2)
    topic.pub(3)
    # a resumes after its last event; b says nothing and starts with an init message.
    shared = open_shared(endpoints, f"{a.id}:{last['c0']},{b.id}")
    events = drain_shared(shared)
    assert updates(events, "c0") == [2, 3]
    assert not [m for k, _, m in events if k == "c0" and m["sys"]]  # resumed: no init
    assert [m["sys"][0]["type"] for k, _, m in events if k == "c1"] == ["topics"]
    assert all(int(i) > int(last["c0"]) for k, i, _ in events if k == "c0")
    shared.close()


def test_a_removed_or_unknown_client_ends_alone_and_says_why(service):
    a, b = service.new_client(), service.new_client()
    topic = service.public_topic("news")
    a.sub(topic)
    b.sub(topic)
    shared = open_shared(Endpoints(service), f"C-nobody,{a.id},{b.id}")
    events = drain_shared(shared)
    assert ("end", None, {"client": 0, "reason": "client not found"}) in events
    assert service.remove_client(a)
    topic.pub("after")
    events = drain_shared(shared)
    assert ("end", None, {"client": 1, "reason": "removed"}) in events
    # a's final message (its topics gone) comes before its end; b goes on.
    kinds = [k for k, _, _ in events]
    assert kinds.index("c1") < kinds.index("end")
    assert updates(events, "c2") == ["after"]
    topic.pub("later")
    assert updates(drain_shared(shared), "c2") == ["later"]
    assert not shared.ended
    b.stream()  # another connection takes b over: the last client gone, the shared stream ends
    assert drain_shared(shared) == [] and shared.ended


def test_the_last_clients_removal_is_announced_before_the_end(service):
    a = service.new_client()
    shared = open_shared(Endpoints(service), a.id)
    drain_shared(shared)
    service.remove_client(a)
    assert [k for k, _, _ in drain_shared(shared)] == ["c0", "end"] and shared.ended


def test_a_taken_over_client_is_announced_as_closed(service):
    a, b = service.new_client(), service.new_client()
    shared = open_shared(Endpoints(service), f"{a.id},{b.id}")
    drain_shared(shared)
    own = a.stream()
    assert ("end", None, {"client": 0, "reason": "closed"}) in drain_shared(shared)
    own.close()
    shared.close()


def test_bad_requests_are_refused_and_attach_nothing(service):
    endpoints = Endpoints(service)
    a = service.new_client()
    assert refused(endpoints, "") == (400, "client not found")
    assert refused(endpoints, "C-nobody,C-none:12") == (400, "client not found")
    assert refused(endpoints, f"{a.id},{a.id}")[0] == 400
    assert refused(endpoints, f"{a.id},,C-x")[0] == 400
    many = ",".join(service.new_client().id for _ in range(MAX_MULTIPLEXED_CLIENTS + 1))
    assert refused(endpoints, many) == (400, f"invalid parameter clients: at most {MAX_MULTIPLEXED_CLIENTS} clients")
    assert a.status is Status.WAITING
    off = Endpoints(service, shared_streams=False)
    assert refused(off, a.id) == (404, "not found")  # not served: browsers fall back to a stream per tab


def test_the_hook_is_asked_for_every_client_before_anything_is_attached(service):
    a, b = service.new_client(), service.new_client()
    asked = []

    def authorize(request, action, client, topic):
        asked.append((action, client.id if client else None))
        return client is not b

    endpoints = Endpoints(service, authorize=authorize)
    assert refused(endpoints, f"{b.id}") == (403, "forbidden")  # every client refused: the hook's answer
    assert asked == [("event", b.id)]
    assert b.status is Status.WAITING  # nothing attached for a refused request
    asked.clear()
    shared = open_shared(endpoints, f"{a.id},C-nobody")
    assert asked == [("event", a.id), ("event", None)]
    shared.close()


def test_a_client_the_hook_refuses_ends_alone_like_an_unknown_one(service):
    """The authorization guide's hook refuses ``client=None``: one stale id among a browser's tabs made the whole
    shared connection 403, and every tab waited. Another user's client is announced the same way: an unknown
    id and a refused one look alike."""
    mine, theirs = service.new_client(), service.new_client()
    topic = service.public_topic("news")
    mine.sub(topic)

    def authorize(request, action, client, topic):
        return client is mine

    endpoints = Endpoints(service, authorize=authorize)
    shared = open_shared(endpoints, f"C-stale,{mine.id},{theirs.id}")
    events = drain_shared(shared)
    assert ("end", None, {"client": 0, "reason": "client not found"}) in events
    assert ("end", None, {"client": 2, "reason": "client not found"}) in events
    topic.pub("hello")
    assert updates(drain_shared(shared), "c1") == ["hello"]
    assert theirs.status is Status.WAITING
    shared.close()
    assert refused(endpoints, f"C-stale,{theirs.id}") == (403, "forbidden")


def test_a_slow_client_resyncs_without_holding_up_the_others(service):
    small = SSEPubSubService(client_timeout=None, heartbeat=3600, queue_size=4, replay_size=4)
    try:
        a, b = small.new_client(), small.new_client()
        topic = small.public_topic("news")
        a.sub(topic)
        shared = open_shared(Endpoints(small), f"{a.id},{b.id}")
        drain_shared(shared)
        for i in range(20):
            topic.pub(i)
        events = drain_shared(shared)
        # the queue overflowed and the replay buffer no longer holds everything: a fresh init
        assert [m["sys"][0]["type"] for k, _, m in events if k == "c0" and m["sys"]] == ["topics"]
        topic.pub("next")
        assert updates(drain_shared(shared), "c0") == ["next"]
        shared.close()
    finally:
        small.shutdown()


def test_one_connection_carries_several_clients_on_every_server(server):
    """Against each server and adapter: tags, an end notice, the others going on, WAITING after."""
    from ..http_helpers import SSEReader, api, new_client, new_public_topic, publish, state, wait_for

    a, b, c = new_client(server), new_client(server), new_client(server)
    topic = new_public_topic(server)
    for client in (a, b, c):
        assert api(server, "/sub", client_id=client, topic=topic).status_code == 200
    reader = SSEReader("httpx-sse", server.url(f"/event/shared?clients={a},{b},{c}"))
    try:
        assert reader.status == 200
        assert reader.response_headers["content-type"] == "text/event-stream; charset=utf-8"
        assert sorted(e.event for e in reader.take(3)) == ["c0", "c1", "c2"]
        publish(server, topic, "one")
        got = reader.take(3)
        assert sorted(e.event for e in got) == ["c0", "c1", "c2"]
        assert {e.json()["updates"][0]["data"] for e in got} == {"one"}
        assert api(server, "/remove/user", client_id=b).status_code == 200
        final = reader.next()
        assert (final.event, final.json()["sys"][0]) == ("c1", {"type": "topics", "list": []})
        notice = reader.next()
        assert (notice.event, notice.json()) == ("end", {"client": 1, "reason": "removed"})
        publish(server, topic, "two")
        got = reader.take(2)
        assert sorted(e.event for e in got) == ["c0", "c2"]
        assert reader.nothing_within(0.3)
        clients = state(server)["clients"]
        assert clients[a]["status"] == clients[c]["status"] == "receiving"
    finally:
        reader.close()
    wait_for(
        lambda: {state(server)["clients"][x]["status"] for x in (a, c)} == {"waiting"}, what="both clients WAITING"
    )
