"""HTTP fuzzing: random and hostile requests at live servers never get a 5xx, leak nothing, and
the server keeps answering.

Hypothesis builds each request from a mix of valid pieces (real client and topic ids, real
endpoints) and hostile ones (huge, empty, non-UTF-8, control characters, wrong types, malformed
bodies and headers), so requests reach deep into the endpoints rather than failing at the first
check. The number of requests is bounded, and so is every read.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .http_helpers import ENDPOINTS, SSEReader, api, new_client, new_public_topic, wait_for

PATHS = [
    *ENDPOINTS,
    "/locked/sub",
    "/locked/add/topic/private/",
    "/pubsubsse.js",
    "/stats",
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
            st.sampled_from(["client_id", "topic", "last_event_id", "ticket", "x"]) | st.text(max_size=8),
            value,
            max_size=4,
        )
    )
    body_kind = draw(st.sampled_from(["none", "form", "json", "json-surrogates", "json-garbage", "bytes"]))
    request: dict[str, Any] = {
        "method": draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"])),
        "path": draw(st.sampled_from(PATHS) | st.text(max_size=20).map(lambda s: "/" + s)),
        "headers": {},
    }
    if draw(st.booleans()):
        request["params"] = params
    elif body_kind == "form":
        request["data"] = params
    elif body_kind == "json":
        request["content"] = json.dumps(draw(st.one_of(st.just(params), st.lists(st.integers()), st.none())))
        request["headers"]["Content-Type"] = "application/json"
    elif body_kind == "json-surrogates":  # lone surrogates survive JSON escapes, not UTF-8
        request["content"] = json.dumps({k: v + "\ud800" for k, v in params.items()})
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
    ids = [*clients, topic, "1", "0"]
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
