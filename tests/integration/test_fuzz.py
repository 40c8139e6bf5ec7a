"""HTTP fuzzing: random and hostile requests at live servers never get a 5xx, leak nothing, and
the server keeps answering.

Hypothesis builds each request from a mix of valid pieces (real client and topic ids, real
endpoints) and hostile ones (huge, empty, non-UTF-8, control characters, wrong types, malformed
bodies and headers), so requests reach deep into the endpoints rather than failing at the first
check. The number of requests is bounded, and so is every read.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..http_helpers import ENDPOINTS, SSEReader, api, new_client, new_public_topic, wait_for

PATHS = [
    *ENDPOINTS,
    "/locked/sub",
    "/locked/add/topic/private/",
    "/pubsubsse.js",
    "/stats",
    "/event/shared",
]

hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=10),
    st.sampled_from(["", " ", "C-", "T-", "../../etc/passwd", "%00", "\u2028", "😀" * 50, "null", "[]", "{}"]),
    st.integers(min_value=60, max_value=5000).map(lambda n: "x" * n),
)


@st.composite
def requests(draw: Any, ids: list[str]) -> dict[str, Any]:
    value = st.one_of(st.sampled_from(ids), hostile_text)
    params = draw(
        st.dictionaries(
            st.sampled_from(["client_id", "topic", "last_event_id", "ticket", "clients", "x"]) | st.text(max_size=8),
            value,
            max_size=4,
        )
    )
    body_kind = draw(
        st.sampled_from(
            ["none", "form", "json", "json-surrogates", "json-surrogate", "json-nested", "json-garbage", "bytes"]
        )
    )
    request: dict[str, Any] = {
        "method": draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"])),
        "path": draw(st.sampled_from(PATHS) | st.text(max_size=20).map(lambda s: "/" + s)),
        "headers": {},
    }
    if draw(st.booleans()):
        request["params"] = params
        body_kind = "none"
    if body_kind != "none" and draw(st.integers(0, 3)):  # a body is read only from a POST
        request["method"] = "POST"
    if body_kind == "form":
        request["data"] = params
    elif body_kind == "json":
        request["content"] = json.dumps(draw(st.one_of(st.just(params), st.lists(st.integers()), st.none())))
        request["headers"]["Content-Type"] = "application/json"
    elif body_kind == "json-surrogates":  # lone surrogates survive JSON escapes, not UTF-8
        request["content"] = json.dumps({k: v + "\ud800" for k, v in params.items()})
        request["headers"]["Content-Type"] = "application/json"
    elif body_kind == "json-surrogate":  # one field broken, the others valid, so checks run past the parse
        field = draw(st.sampled_from(["client_id", "topic", "last_event_id", "ticket"]))
        broken = {key: draw(st.sampled_from(ids)) for key in ("client_id", "topic")}
        broken[field] = draw(st.sampled_from(["\ud800", "\udfff", "C-\udc80"]))
        request["content"] = json.dumps(broken)
        request["headers"]["Content-Type"] = "application/json"
    elif body_kind == "json-nested":
        depth = draw(st.integers(min_value=50, max_value=20000))
        inner = draw(st.sampled_from(["[", '{"a":']))
        request["content"] = draw(st.sampled_from(["", '{"client_id": '])) + inner * depth
        request["headers"]["Content-Type"] = "application/json"
    elif body_kind == "json-garbage":
        request["content"] = draw(st.binary(max_size=200))
        request["headers"]["Content-Type"] = "application/json"
    elif body_kind == "bytes":
        request["content"] = draw(st.binary(max_size=300))
        request["headers"]["Content-Type"] = draw(st.sampled_from(["text/xml", "application/x-www-form-urlencoded"]))
    if draw(st.booleans()):
        request["headers"]["Last-Event-ID"] = draw(st.sampled_from(["0", "1", "-1", "99999999999999999999999", "x"]))
    return request


def test_random_and_hostile_requests_never_get_a_5xx(server):
    topic = new_public_topic(server)
    clients = [new_client(server) for _ in range(3)]
    for c in clients:
        api(server, "/sub", client_id=c, topic=topic)
    ids = [*clients, topic, "1", "0", f"{clients[0]}:1,{clients[1]}", f"{clients[2]},C-x,"]
    # A first stream starts the service's timer, so the baseline includes it.
    SSEReader("httpx-sse", server.url(f"/event?client_id={clients[0]}")).close()
    wait_for(lambda: api(server, "/test/stats").json()["receiving"] == 0, what="the first stream detached")
    baseline = api(server, "/test/stats").json()
    seen: dict[int, int] = {}
    http = httpx.Client(timeout=httpx.Timeout(10, read=2))

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=requests(ids))
    def check(request: dict[str, Any]) -> None:
        path = request.pop("path")
        try:
            with http.stream(url=server.url(path), **request) as answer:
                seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
                assert answer.status_code < 500, (path, request, answer.status_code, answer.read()[:200])
                if answer.headers.get("content-type", "").startswith("text/event-stream"):
                    next(answer.iter_raw(), b"")  # the first chunk of a stream, then hang up
                else:
                    answer.read()
        except httpx.InvalidURL:
            pass  # the client refuses to send it at all: nothing reached the server

    check()
    print(f"statuses seen: {dict(sorted(seen.items()))}")
    assert seen.get(200, 0) > 10 and sum(v for k, v in seen.items() if 400 <= k < 500) > 100
    # Nothing leaked: every stream ended, threads and greenlets are back where they were.
    wait_for(lambda: api(server, "/test/stats").json()["receiving"] == 0, what="every stream detached")
    http.close()  # its idle keep-alive connections hold a server greenlet each
    if server.kind != "cluster":  # a cluster's /test/stats comes from whichever process answers

        def back_to_baseline() -> bool:
            after = api(server, "/test/stats").json()
            return all(after[key] <= baseline[key] for key in ("threads", "greenlets"))

        wait_for(back_to_baseline, what=f"threads and greenlets back to {baseline}")
    # And the server still serves.
    assert api(server, "/sub", client_id=new_client(server), topic=topic).status_code == 200


@st.composite
def chunked_requests(draw: Any, ids: list[str]) -> bytes:
    """A raw POST whose chunked body is framed right, wrongly, or cut short."""
    body = f"client_id={draw(st.sampled_from(ids))}&topic={draw(st.sampled_from(ids))}".encode()
    size = draw(
        st.one_of(
            st.just(b"%x" % len(body)),
            st.sampled_from([b"zz", b"-5", b"", b" ", b"0x10", b"FFFFFFFFFFFFFFFFFFFF", b"1;ext=\xff"]),
            st.integers(min_value=0, max_value=1 << 20).map(lambda n: b"%x" % n),
        )
    )
    framed = size + b"\r\n" + body + draw(st.sampled_from([b"\r\n0\r\n\r\n", b"\r\n", b"", b"0\r\n\r\n"]))
    path = draw(st.sampled_from(PATHS)).encode()
    ctype = draw(st.sampled_from([b"application/x-www-form-urlencoded", b"application/json"]))
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: " + ctype + b"\r\n\r\n" + framed
    )


def test_broken_chunked_bodies_never_get_a_5xx(server):
    """Raw sockets: HTTP clients will not send a broken chunked encoding, attackers will."""
    topic = new_public_topic(server)
    ids = [new_client(server), topic, "x"]
    statuses: dict[int, int] = {}

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(raw=chunked_requests(ids))
    def check(raw: bytes) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)  # a body cut short ends here
            reply = b""
            with contextlib.suppress(TimeoutError, ConnectionError):
                while (chunk := s.recv(65536)) and b"\r\n" not in reply:
                    reply += chunk
        status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (raw, reply[:300])

    check()
    print(f"statuses seen: {dict(sorted(statuses.items()))}")
    assert statuses.get(200, 0) > 0 and sum(v for k, v in statuses.items() if 400 <= k < 500) > 10
    assert api(server, "/sub", client_id=new_client(server), topic=topic).status_code == 200


def test_a_lone_surrogate_in_any_field_of_any_endpoint_gets_a_4xx(server):
    """Every endpoint x every string field x every carrier, the other fields valid: no 5xx.

    Lone surrogates survive JSON's escapes but not UTF-8 (with Redis, the command could not be
    written); in a query or form they are invalid UTF-8 bytes.
    """
    topic = new_public_topic(server)
    http = httpx.Client(timeout=httpx.Timeout(10, read=2))
    tried = 0
    for path in ENDPOINTS:
        for field in ("client_id", "topic", "last_event_id", "ticket"):
            for carrier in ("json", "query", "form"):
                client = new_client(server)  # a fresh one each time: /remove/user removes it
                api(server, "/sub", client_id=client, topic=topic)
                valid = {"client_id": client, "topic": topic}
                if carrier == "json":
                    body = json.dumps({**valid, field: "\ud800"})
                    request = {"content": body, "headers": {"Content-Type": "application/json"}}
                else:
                    encoded = "&".join(f"{k}={v}" for k, v in {**valid, field: "%ED%A0%80"}.items())
                    request = (
                        {"params": None, "url": server.url(path) + "?" + encoded}
                        if carrier == "query"
                        else {"content": encoded, "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
                    )
                url = request.pop("url", server.url(path))
                request.pop("params", None)
                with http.stream("POST", url, **request) as answer:
                    answer.read() if not answer.headers.get("content-type", "").startswith("text/event") else None
                    assert answer.status_code < 500, (path, field, carrier, answer.status_code)
                    tried += 1
    http.close()
    assert tried == len(ENDPOINTS) * 4 * 3
    assert api(server, "/sub", client_id=new_client(server), topic=topic).status_code == 200
