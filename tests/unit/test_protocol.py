"""The protocol layer on its own: requests in, replies out, no server and no framework."""

from __future__ import annotations

import json

from pubsubsse import SSEPubSubService
from pubsubsse.web._protocol import Endpoints, FileReply, Refused, Reply, Request, StreamReply


def ask(endpoints: Endpoints, path: str, method: str = "GET", query: str = "", **fields) -> Reply:
    answer = endpoints.handle(Request(method, path, query.encode(), **fields))
    assert isinstance(answer, Reply)
    return answer


def test_an_app_of_a_few_lines_needs_nothing_but_the_protocol():
    service = SSEPubSubService(client_timeout=None)
    endpoints = Endpoints(service, public_topic_creation=True)
    client = ask(endpoints, "/add/user").json()["client_id"]
    topic = ask(endpoints, "/add/topic/public/", query="name=news").json()["topic_id"]
    assert topic == "T-news"
    body = json.dumps({"client_id": client, "topic": topic}).encode()
    subscribed = ask(
        endpoints,
        "/sub",
        "POST",
        content_type="application/json",
        content_length=len(body),
        read_body=lambda size: body[:size],
    )
    assert (subscribed.status, subscribed.json()) == (200, {"ok": "true"})
    answer = endpoints.handle(Request("GET", "/event", f"client_id={client}".encode()))
    assert isinstance(answer, StreamReply)
    assert ("Content-Type", "text/event-stream; charset=utf-8") in answer.headers
    first = next(answer.stream)
    assert b'{"type":"subscribed","list":[{"id":"T-news"}]}' in first
    service.public_topic("news").pub("hello")
    assert b'"data":"hello"' in next(answer.stream)
    answer.stream.close()
    service.shutdown()


def test_refusals_are_json_with_the_status_the_protocol_gives():
    endpoints = Endpoints(SSEPubSubService(client_timeout=None))
    assert ask(endpoints, "/nowhere").status == 404
    head = ask(endpoints, "/sub", "HEAD")
    assert head.status == 405 and ("Allow", "GET, POST") in head.headers
    assert ask(endpoints, "/add/topic/public/").json() == {
        "ok": "false",
        "error": "forbidden",
        "hint": "this endpoint is off by default: turn it on with public_topic_creation=True",
    }
    assert ask(endpoints, "/stats").status == 404  # not served unless stats_endpoint=True
    assert ask(endpoints, "/sub", query="client_id=C-nobody&topic=T-x").json()["error"] == "client not found"
    assert ask(endpoints, "/sub", query="x" * 3000).status == 414
    garbage = ask(endpoints, "/sub", "POST", content_type="application/json", read_body=lambda size: b"[[[")
    assert (garbage.status, garbage.json()["error"]) == (400, "invalid JSON body")
    assert isinstance(endpoints.handle(Request("GET", "/pubsubsse.js")), FileReply)


def test_the_hook_gets_the_native_request_and_may_choose_the_answer():
    seen = []

    def authorize(request, action, client, topic):
        seen.append((request, action, client))
        if request == "mallory":
            raise Refused(401, "who are you")
        return request == "alice"

    endpoints = Endpoints(SSEPubSubService(client_timeout=None), authorize=authorize)
    assert ask(endpoints, "/add/user", native="alice").status == 200
    assert ask(endpoints, "/add/user", native="bob").json() == {"ok": "false", "error": "forbidden"}
    refused = ask(endpoints, "/add/user", native="mallory")
    assert (refused.status, refused.json()["error"]) == (401, "who are you")
    assert seen == [("alice", "add_user", None), ("bob", "add_user", None), ("mallory", "add_user", None)]


def test_identify_gives_http_clients_their_user_and_authorize_can_check_it():
    def identify(request):
        return None if request == "anonymous" else request

    def authorize(request, action, client, topic):
        return client is None or client.user == request  # a client id works for its own user only

    service = SSEPubSubService(client_timeout=None)
    endpoints = Endpoints(service, identify=identify, authorize=authorize)
    alice = ask(endpoints, "/add/user", native="alice").json()["client_id"]
    anonymous = ask(endpoints, "/add/user", native="anonymous").json()["client_id"]
    assert service.get_client_by_id(alice).user == "alice"
    assert service.get_client_by_id(anonymous).user is None
    assert ask(endpoints, "/remove/user", query=f"client_id={alice}", native="mallory").status == 403
    assert ask(endpoints, "/remove/user", query=f"client_id={alice}", native="alice").status == 200
    broken = Endpoints(service, identify=lambda request: 42)
    assert ask(broken, "/add/user").status == 500  # a hook's bug, not the caller's
    service.shutdown()


def test_sub_since_start_sends_the_history_and_another_since_is_refused():
    service = SSEPubSubService(client_timeout=None)
    job = service.public_topic("job", history=10)
    job.pub("first")
    endpoints = Endpoints(service)
    client = ask(endpoints, "/add/user").json()["client_id"]
    bad = ask(endpoints, "/sub", query=f"client_id={client}&topic=T-job&since=yesterday")
    assert (bad.status, bad.json()["error"]) == (400, "invalid since")
    assert ask(endpoints, "/unsub", query=f"client_id={client}&topic=T-job&since=start").status == 400
    assert ask(endpoints, "/sub", query=f"client_id={client}&topic=T-job&since=start").json() == {"ok": "true"}
    answer = endpoints.handle(Request("GET", "/event", f"client_id={client}&last_event_id=0".encode()))
    assert isinstance(answer, StreamReply)
    first = next(answer.stream)
    assert b'"type":"history"' in first and b'"data":"first"' in first
    answer.stream.close()
    service.shutdown()


def test_presence_answers_for_topics_with_live_presence_only():
    seen = []
    service = SSEPubSubService(client_timeout=None)
    room = service.public_topic("room", presence=True)
    service.public_topic("news")
    endpoints = Endpoints(service, authorize=lambda request, action, client, topic: seen.append(action) or True)
    alice = service.new_client(user="alice")
    alice.sub(room)
    stream = alice.stream()
    asker = ask(endpoints, "/add/user").json()["client_id"]
    answer = ask(endpoints, "/presence", query=f"client_id={asker}&topic=T-room")
    assert answer.json() == {"ok": "true", "topic": "T-room", "subscribers": 1, "connections": 1, "users": ["alice"]}
    off = ask(endpoints, "/presence", query=f"client_id={asker}&topic=T-news")
    assert (off.status, off.json()["error"]) == (400, "presence is off")
    assert ask(endpoints, "/presence", query=f"client_id={asker}&topic=T-nowhere").json()["error"] == "topic not found"
    assert seen.count("presence") == 3
    stream.close()
    service.shutdown()


def test_cors_preflight_and_answers():
    endpoints = Endpoints(SSEPubSubService(client_timeout=None), cors_origins=["https://app.example"])
    preflight = endpoints.handle(Request("OPTIONS", "/event", headers={"Origin": "https://app.example"}))
    headers = dict(preflight.headers)
    assert preflight.status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Last-Event-ID" in headers["Access-Control-Allow-Headers"]
    foreign = ask(endpoints, "/add/user", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in dict(foreign.headers)
