"""PROTOCOL.md section 1 against real servers: every endpoint, every error row, bad input."""

from __future__ import annotations

import json
import re
import socket
import uuid

import httpx
import pytest

from ..http_helpers import TIMEOUT, api, http, new_client, new_public_topic, state

CID = re.compile(r"C-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TID = re.compile(r"T-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

OK = {"ok": "true"}


def error(message):
    return {"ok": "false", "error": message}


def call(server, path, style, **params):
    """One request in one of the accepted parameter styles."""
    if style == "query-get":
        return http.get(server.url(path), params=params)
    if style == "query-post":
        return http.post(server.url(path), params=params)
    if style == "form":
        return http.post(server.url(path), data=params)
    if style == "json":
        return http.post(server.url(path), json=params)
    raise ValueError(style)


STYLES = ["query-get", "query-post", "form", "json"]


def check(response, status, body):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    # "hint" (what to do about an error) is this library's addition; tests/integration/test_first_hour.py checks them.
    assert {k: v for k, v in response.json().items() if k != "hint"} == body


@pytest.mark.parametrize("style", STYLES)
def test_endpoints_and_their_errors(server, style):
    r = call(server, "/add/user", style)
    check(r, 200, {"ok": "true", "client_id": r.json()["client_id"]})
    assert CID.fullmatch(r.json()["client_id"])
    a = r.json()["client_id"]
    b = new_client(server)

    r = call(server, "/add/topic/public/", style)
    assert r.status_code == 200 and TID.fullmatch(r.json()["topic_id"])
    public = r.json()["topic_id"]
    # The other form of a path is redirected, as by Go's ServeMux; 308 keeps the method and the body.
    moved = call(server, "/add/topic/public", style, name="moved")
    assert moved.status_code == 308 and moved.json() == error("moved to /add/topic/public/"), moved.text
    assert moved.headers["location"] == ("public/" if style == "form" or style == "json" else "public/?name=moved")
    followed = http.send(moved.next_request)
    check(followed, 200, {"ok": "true", "topic_id": "T-moved"})
    assert "T-moved" in state(server)["public_topics"]
    moved = call(server, "/sub/", style, client_id=a, topic="T-moved")
    assert moved.status_code == 308 and moved.headers["location"].startswith("../sub")
    check(http.send(moved.next_request), 200, OK)
    check(call(server, "/unsub", style, client_id=a, topic="T-moved"), 200, OK)
    check(call(server, "/locked/add/topic/public/", style), 403, error("forbidden"))

    r = call(server, "/add/topic/private/", style, client_id=a)
    assert r.status_code == 200 and TID.fullmatch(r.json()["topic_id"])
    private_a = r.json()["topic_id"]
    check(call(server, "/add/topic/private/", style), 400, error("client not found"))
    check(call(server, "/locked/add/topic/private/", style, client_id=a), 403, error("forbidden"))

    check(call(server, "/sub", style, client_id=a, topic=public), 200, OK)
    check(call(server, "/sub", style, client_id=a, topic=public), 200, OK)  # already subscribed
    check(call(server, "/sub", style, client_id=a, topic=private_a), 200, OK)
    check(call(server, "/sub", style, client_id="C-" + str(uuid.uuid4()), topic=public), 400, error("client not found"))
    check(call(server, "/sub", style, client_id=b, topic="T-" + str(uuid.uuid4())), 400, error("topic not found"))
    check(call(server, "/sub", style, client_id=b, topic=private_a), 400, error("topic not found"))
    group = http.post(server.url("/test/group"), json={"members": [a]}).json()
    check(call(server, "/sub", style, client_id=b, topic=group["topic"]), 400, error("topic not found"))
    check(call(server, "/sub", style, client_id=a, topic=group["topic"]), 200, OK)

    check(call(server, "/unsub", style, client_id=a, topic=public), 200, OK)
    check(call(server, "/unsub", style, client_id=a, topic=public), 400, error("not subscribed"))
    check(call(server, "/unsub", style, client_id=b, topic=private_a), 400, error("topic not found"))
    check(call(server, "/unsub", style, topic=public), 400, error("client not found"))

    check(call(server, "/remove/topic/private/", style, client_id=b, topic=private_a), 400, error("topic not found"))
    check(call(server, "/remove/topic/private/", style, client_id=a, topic=public), 400, error("topic not found"))
    check(call(server, "/remove/topic/private/", style, topic=private_a), 400, error("client not found"))
    check(call(server, "/locked/remove/topic/private/", style, client_id=a, topic=private_a), 403, error("forbidden"))
    check(call(server, "/remove/topic/private/", style, client_id=a, topic=private_a), 200, OK)
    assert private_a not in state(server)["clients"][a]["topics"]

    check(call(server, "/locked/remove/user", style, client_id=b), 403, error("forbidden"))
    check(call(server, "/remove/user", style, client_id=b), 200, OK)
    check(call(server, "/remove/user", style, client_id=b), 400, error("client not found"))
    assert b not in state(server)["clients"]

    r = call(server, "/event", style, client_id=b)
    check(r, 400, error("client not found"))
    assert "text/event-stream" not in r.headers["content-type"]


def test_query_wins_over_body(server):
    a, b = new_client(server), new_client(server)
    topic = new_public_topic(server)
    r = http.post(server.url("/sub"), params={"client_id": a}, data={"client_id": b, "topic": topic})
    check(r, 200, OK)
    clients = state(server)["clients"]
    assert clients[a]["subscribed"] == [topic] and clients[b]["subscribed"] == []


def test_cors_preflight_allows_last_event_id():
    from ..servers import Server

    srv = Server("gevent", env={"PUBSUBSSE_CORS": "https://app.example"})
    try:
        r = httpx.options(
            srv.url("/event"),
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "last-event-id",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "Last-Event-ID" in r.headers["access-control-allow-headers"]
        assert "GET" in r.headers["access-control-allow-methods"]
        r = httpx.get(srv.url("/add/user"), headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "Origin" in r.headers["vary"]
        r = httpx.get(srv.url("/add/user"), headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    finally:
        srv.stop()


# The bad-input table: every endpoint that takes parameters, every kind of bad input.
ENDPOINTS = ["/add/topic/private/", "/sub", "/unsub", "/remove/user", "/remove/topic/private/", "/event"]


def bad_inputs(good_client, good_topic):
    long_id = "C-" + "a" * 1000
    return [
        ("missing", {"method": "GET", "params": {}}, 400, None),
        ("empty", {"method": "GET", "params": {"client_id": "", "topic": ""}}, 400, None),
        (
            "unknown",
            {"method": "GET", "params": {"client_id": "C-" + str(uuid.uuid4()), "topic": good_topic}},
            400,
            "client not found",
        ),
        (
            "malformed id",
            {"method": "GET", "params": {"client_id": "../../etc", "topic": "'; DROP"}},
            400,
            "client not found",
        ),
        ("long id", {"method": "GET", "params": {"client_id": long_id, "topic": good_topic}}, 400, "client not found"),
        (
            "oversized query",
            {"method": "GET", "params": {"client_id": good_client, "x": "y" * 3000}},
            414,
            "query string too long",
        ),
        (
            "non-UTF-8 query",
            {"method": "GET", "raw_query": "client_id=%ff%fe&topic=%c3%28"},
            400,
            "invalid query string: not UTF-8",
        ),
        (
            "non-UTF-8 form",
            {"method": "POST", "content": b"client_id=%ff", "ctype": "application/x-www-form-urlencoded"},
            400,
            "invalid form body: not UTF-8",
        ),
        (
            "malformed JSON",
            {"method": "POST", "content": b"{nope", "ctype": "application/json"},
            400,
            "invalid JSON body",
        ),
        (
            "JSON array",
            {"method": "POST", "content": b"[1]", "ctype": "application/json"},
            400,
            "invalid JSON body: expected an object",
        ),
        (
            "JSON non-string",
            {"method": "POST", "content": b'{"client_id": 5}', "ctype": "application/json"},
            400,
            "invalid parameter client_id: expected a string",
        ),
        (
            "non-UTF-8 JSON",
            {"method": "POST", "content": b'{"client_id": "\xff"}', "ctype": "application/json"},
            400,
            "invalid JSON body",
        ),
        (
            "deeply nested JSON",
            {"method": "POST", "content": b"[" * 10000, "ctype": "application/json"},
            400,
            "invalid JSON body",
        ),
        (
            "deeply nested JSON value",
            {
                "method": "POST",
                "content": b'{"client_id": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                "ctype": "application/json",
            },
            400,
            "invalid JSON body",
        ),
        *(
            (
                f"lone surrogate in {field}",
                {
                    "method": "POST",
                    "content": json.dumps({"client_id": good_client, "topic": good_topic, field: "\ud800"}).encode(),
                    "ctype": "application/json",
                },
                400,
                "invalid JSON body: not UTF-8",
            )
            for field in ("client_id", "topic", "last_event_id", "ticket")
        ),
        (
            "lone surrogate in a key",
            {"method": "POST", "content": b'{"\\ud800": "x"}', "ctype": "application/json"},
            400,
            "invalid JSON body: not UTF-8",
        ),
        (
            "oversized body",
            {"method": "POST", "content": b"client_id=" + b"x" * 100000, "ctype": "application/x-www-form-urlencoded"},
            413,
            "request body too large",
        ),
        (
            "unsupported body",
            {"method": "POST", "content": b"<xml/>", "ctype": "application/xml"},
            415,
            "unsupported body: send a query string, a form or a JSON object",
        ),
    ]


def send(server, path, spec):
    if "raw_query" in spec:
        return http.get(server.url(path) + "?" + spec["raw_query"])
    if spec["method"] == "GET":
        return http.get(server.url(path), params=spec["params"])
    return httpx.post(
        server.url(path), content=spec["content"], headers={"Content-Type": spec["ctype"]}, timeout=TIMEOUT
    )


@pytest.mark.parametrize("path", ENDPOINTS)
def test_bad_input_gets_4xx_json_and_changes_nothing(server, path):
    a = new_client(server)
    topic = new_public_topic(server)
    api(server, "/sub", client_id=a, topic=topic)
    before = state(server)
    for name, spec, status, message in bad_inputs(a, topic):
        r = send(server, path, spec)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert r.headers["content-type"] == "application/json", name
        body = r.json()
        assert body["ok"] == "false" and isinstance(body["error"], str), name
        if message is not None:
            assert body["error"] == message, (name, body)
        else:
            assert body["error"] == "client not found", (name, body)
    assert state(server) == before
    assert api(server, "/add/user").status_code == 200  # the server keeps serving


def test_raw_non_utf8_bytes_and_garbage_requests(server):
    before = state(server)
    for raw in [
        b"GET /sub?client_id=\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /event?client_id=C-%00%0a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x00garbage\r\n\r\n",
        *(
            b"POST /sub HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + body
            for body in (
                b"zz\r\nclient_id=x\r\n0\r\n\r\n",  # not a chunk size
                b"-5\r\nclient_id=x\r\n0\r\n\r\n",
                b"FFFFFFFFFFFFFFFFFFFF\r\nclient_id=x\r\n0\r\n\r\n",
                b"3\r\nclient_id=x\r\n0\r\n\r\n",  # a chunk longer than its size
                b"b\r\nclient_id=x",  # the body ends early
            )
        ),
    ]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 400
        assert 400 <= status < 500, reply[:200]
    assert state(server) == before
    assert api(server, "/add/user").status_code == 200


def test_head_changes_nothing_and_leaves_the_open_stream_alone(server):
    """HEAD is safe by definition: it must not create, subscribe, remove, or take a stream over."""
    from ..http_helpers import SSEReader, publish

    client = new_client(server)
    topic = new_public_topic(server)
    other = new_public_topic(server)
    api(server, "/sub", client_id=client, topic=topic)
    private = api(server, "/add/topic/private/", client_id=client).json()["topic_id"]
    reader = SSEReader("httpx-sse", server.url(f"/event?client_id={client}"))
    try:
        reader.next()
        before = state(server)
        params = {"client_id": client, "topic": other}
        for path in ["/add/user", "/add/topic/public/", "/add/topic/private/", "/sub", "/unsub", "/event"]:
            answer = http.head(server.url(path), params=params)
            assert answer.status_code == 405, (path, answer.status_code)
            assert answer.headers["allow"] == "GET, POST", path
        for path, topic_id in [("/remove/topic/private/", private), ("/remove/user", None)]:
            answer = http.head(server.url(path), params={"client_id": client, "topic": topic_id or ""})
            assert answer.status_code == 405, (path, answer.status_code)
        assert state(server) == before
        publish(server, topic, "still here")
        assert reader.next().json()["updates"][0]["data"] == "still here"
    finally:
        reader.close()
