"""PROTOCOL.md section 2 against real servers, read with third-party SSE clients."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest

from ..http_helpers import SSEReader, api, new_client, new_public_topic, publish, state, wait_for
from ..sse import is_init

LIBRARIES = ["httpx-sse", "sseclient-py"]


@pytest.fixture(params=LIBRARIES)
def library(request):
    return request.param


def subscribed_client(server):
    client = new_client(server)
    topic = new_public_topic(server)
    assert api(server, "/sub", client_id=client, topic=topic).status_code == 200
    return client, topic


def updates(events):
    return [e.json()["updates"][0]["data"] for e in events]


def test_head_and_init_message_first(server, library):
    client, topic = subscribed_client(server)
    reader = SSEReader(library, server.url(f"/event?client_id={client}"))
    try:
        assert reader.status == 200
        headers = {k.lower(): v for k, v in reader.response_headers.items()}
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        assert headers["cache-control"] == "no-cache, no-transform"
        assert headers["x-accel-buffering"] == "no"
        assert "content-length" not in headers
        first = reader.next().json()
        assert first == {
            "sys": [
                {"type": "topics", "list": [{"id": t, "type": "public"} for t in state(server)["public_topics"]]},
                {"type": "subscribed", "list": [{"id": topic}]},
            ],
            "updates": None,
        }
    finally:
        reader.close()


PAYLOADS = [
    "<script>alert('&amp;')</script>",
    "unicode: é ü ✓ 😀 \u2028 \u2029",
    "multi\nline\r\nvalue\rwith CR",
    {"nested": {"list": [1, 2.5, None, True, "x"]}, "key with spaces": "", "😀": "🙂"},
    "",
    None,
    0,
    ["data: fake", "id: 99", ":", "\n\n"],
]


def test_payloads_arrive_intact_with_increasing_ids(server, library):
    client, topic = subscribed_client(server)
    reader = SSEReader(library, server.url(f"/event?client_id={client}"))
    try:
        init = reader.next()
        big = "é<&" * (1024 * 1024 // 4)  # over 1 MiB of UTF-8
        publish(server, topic, *PAYLOADS)
        publish(server, topic, big)
        events = reader.take(len(PAYLOADS) + 1, timeout=30)
        assert updates(events) == [*PAYLOADS, big]
        ids = [int(init.id)] + [int(e.id) for e in events]
        assert ids == sorted(set(ids))
        assert all(e.data != "" for e in events)
    finally:
        reader.close()


def test_heartbeats_produce_no_phantom_events(server, library):
    client, topic = subscribed_client(server)
    reader = SSEReader(library, server.url(f"/event?client_id={client}"))
    try:
        reader.next()
        assert reader.nothing_within(2.5)  # heartbeat is 1 s: at least two heartbeats passed
        publish(server, topic, "after heartbeats")
        assert updates([reader.next()]) == ["after heartbeats"]
    finally:
        reader.close()


def raw_stream(server, path, headers=b""):
    """Open /event on a raw socket; return the socket and the response head."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head, rest


def test_heartbeat_is_a_lone_comment_line_on_the_wire(server):
    client, _ = subscribed_client(server)
    sock, head, rest = raw_stream(server, f"/event?client_id={client}")
    try:
        assert b"200" in head.split(b"\r\n")[0]
        deadline = time.monotonic() + 5
        while b"\n:\n" not in rest and time.monotonic() < deadline:
            rest += sock.recv(65536)
        body = rest.decode()
        assert "\n:\n" in body
        assert ":\n\n" not in body.replace("\r\n", "")  # never a comment followed by a blank line
        assert "\r" not in "".join(line for line in body.split("\r\n") if not line.strip().isalnum())
    finally:
        sock.close()


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_after_drop_delivers_exactly_the_missed_messages(server, library, how):
    client, topic = subscribed_client(server)
    reader = SSEReader(library, server.url(f"/event?client_id={client}"))
    reader.next()
    publish(server, topic, "seen")
    last = reader.next()
    reader.close()
    wait_for(lambda: state(server)["clients"][client]["status"] == "waiting", what="WAITING")
    publish(server, topic, *range(25))
    if how == "header":
        again = SSEReader(library, server.url(f"/event?client_id={client}"), headers={"Last-Event-ID": last.id})
    else:
        again = SSEReader(library, server.url(f"/event?client_id={client}&last_event_id={last.id}"))
    try:
        events = again.take(25)
        assert updates(events) == list(range(25))
        assert [int(e.id) for e in events] == list(range(int(last.id) + 1, int(last.id) + 26))
        assert again.nothing_within(0.3)  # no duplicates, no init
        publish(server, topic, "live")
        assert updates([again.next()]) == ["live"]
    finally:
        again.close()


def test_header_wins_over_query_parameter(server):
    client, topic = subscribed_client(server)
    reader = SSEReader("httpx-sse", server.url(f"/event?client_id={client}"))
    reader.next()
    publish(server, topic, 1, 2)
    first, _ = reader.take(2)
    reader.close()
    again = SSEReader(
        "httpx-sse", server.url(f"/event?client_id={client}&last_event_id=garbage"), headers={"Last-Event-ID": first.id}
    )
    try:
        assert updates([again.next()]) == [2]
    finally:
        again.close()


@pytest.mark.parametrize("last_id", ["unknown", "99999999", "1"])
def test_unknown_or_too_old_id_gets_full_init(server, library, last_id):
    client, topic = subscribed_client(server)
    publish(server, topic, *range(1100))  # more than the replay buffer holds
    reader = SSEReader(library, server.url(f"/event?client_id={client}"), headers={"Last-Event-ID": last_id})
    try:
        message = reader.next().json()
        assert is_init(message)
        assert message["sys"][1]["list"] == [{"id": topic}]
        publish(server, topic, "next")
        assert updates([reader.next()]) == ["next"]
    finally:
        reader.close()


def test_waiting_client_gets_what_was_published_while_away(server, library):
    client, topic = subscribed_client(server)
    reader = SSEReader(library, server.url(f"/event?client_id={client}"))
    last = reader.next()
    reader.close()
    wait_for(lambda: state(server)["clients"][client]["status"] == "waiting", what="WAITING")
    publish(server, topic, "while away")
    again = SSEReader(library, server.url(f"/event?client_id={client}"), headers={"Last-Event-ID": last.id})
    try:
        assert updates([again.next()]) == ["while away"]
    finally:
        again.close()


def test_second_stream_takes_over_and_first_ends(server, library):
    client, topic = subscribed_client(server)
    first = SSEReader(library, server.url(f"/event?client_id={client}"))
    first.next()
    second = SSEReader(library, server.url(f"/event?client_id={client}"))
    try:
        assert is_init(second.next().json())
        assert first.ended.wait(10)
        publish(server, topic, "to the new stream")
        assert updates([second.next()]) == ["to the new stream"]
        assert state(server)["clients"][client]["status"] == "receiving"
    finally:
        first.close()
        second.close()


def test_removed_client_gets_final_message_then_400(server, library):
    client, topic = subscribed_client(server)
    reader = SSEReader(library, server.url(f"/event?client_id={client}"))
    try:
        reader.next()
        assert api(server, "/remove/user", client_id=client).json() == {"ok": "true"}
        final = reader.next().json()
        assert final == {
            "sys": [{"type": "topics", "list": []}, {"type": "unsubscribed", "list": [{"id": topic}]}],
            "updates": None,
        }
        assert reader.ended.wait(10)
    finally:
        reader.close()
    r = api(server, "/event", client_id=client)
    assert r.status_code == 400 and r.json()["error"] == "client not found"


def test_closed_socket_is_waiting_within_heartbeat_plus_one_second(server):
    client, _ = subscribed_client(server)
    sock, _, _ = raw_stream(server, f"/event?client_id={client}")
    wait_for(lambda: state(server)["clients"][client]["status"] == "receiving", what="RECEIVING")
    started = time.monotonic()
    sock.close()
    wait_for(lambda: state(server)["clients"][client]["status"] == "waiting", timeout=10, what="WAITING")
    elapsed = time.monotonic() - started
    assert elapsed < 1 + 1, f"took {elapsed:.2f} s"
    expected = {(client, "receiving"): 1, (client, "waiting"): 1}

    def events():
        return {(cid, status): n for cid, status, n in state(server)["status_events"] if cid == client}

    # A cluster answers from any of its processes, and one may apply the detach after another.
    wait_for(lambda: events() == expected, timeout=10, what=f"the status events {expected}")


def stats(server):
    return api(server, "/test/stats").json()


@pytest.mark.timeout(300)
def test_500_connect_disconnect_cycles_leak_nothing(server):
    def cycle(read_body):
        client = new_client(server)
        sock, _, rest = raw_stream(server, f"/event?client_id={client}")
        while read_body and b"\n\n" not in rest:
            rest += sock.recv(65536)
        sock.close()
        api(server, "/remove/user", client_id=client)

    cycle(True)  # the per-process timer and disconnect watcher start with the first stream
    baseline = wait_for(lambda: (lambda s: s if s["receiving"] == 0 else None)(stats(server)), what="idle server")
    for i in range(500):
        cycle(read_body=i % 2 == 1)

    def settled():
        now = stats(server)
        keys = ("threads", "greenlets", "streams", "clients", "receiving")
        return now if all(now[k] <= baseline[k] for k in keys) else None

    after = wait_for(settled, timeout=20, what=f"resources back to baseline {baseline}")
    print(f"\n[{server.kind}] before: {baseline}\n[{server.kind}] after 500 cycles: {after}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["gevent", "gthread"])
def test_sigterm_with_50_open_streams_ends_within_5_seconds(kind):
    from ..servers import Server

    srv = Server(kind, env={"PUBSUBSSE_HEARTBEAT": "15"})
    sockets = []
    try:
        for _ in range(50):
            client = new_client(srv)
            sock, head, _ = raw_stream(srv, f"/event?client_id={client}")
            assert b" 200 " in head.split(b"\r\n")[0]
            sockets.append(sock)
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        srv.proc.wait(10)
        elapsed = time.monotonic() - started
        print(f"\n[{kind}] exited {elapsed:.2f} s after SIGTERM with 50 open streams")
        assert elapsed < 5
        for sock in sockets:
            sock.settimeout(5)
            while sock.recv(65536):
                pass  # every stream reaches its end
        assert "Traceback" not in srv.output()
    finally:
        for sock in sockets:
            sock.close()
        srv.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["gevent", "gthread"])
def test_a_closed_tab_is_noticed_at_once_even_after_its_peer_sent_a_byte(kind):
    """A byte after the request (a pipelined request, a stray TLS record) made the watch give up for good under
    gevent: the close was noticed at the next heartbeat write. The heartbeat here is 30 s."""
    from ..servers import Server

    srv = Server(kind, env={"PUBSUBSSE_HEARTBEAT": "30", "PUBSUBSSE_CLIENT_TIMEOUT": "none"})
    try:
        client, _ = subscribed_client(srv)
        sock, _, _ = raw_stream(srv, f"/event?client_id={client}")
        wait_for(lambda: state(srv)["clients"][client]["status"] == "receiving", what="RECEIVING")
        sock.sendall(b"G")
        time.sleep(2)  # the watch looks at a readable socket for 1.3 s; the close comes after that
        started = time.monotonic()
        sock.close()

        def status() -> str:  # a new connection each time: gthread closes keep-alive connections idle for 2 s
            answer = httpx.get(srv.url("/test/state"), headers={"Connection": "close"})
            return answer.json()["clients"][client]["status"]

        wait_for(lambda: status() == "waiting", timeout=10, what="WAITING")
        assert time.monotonic() - started < 3
    finally:
        srv.stop()


def fired(reader, n):
    """The next ``n`` events an EventSource would fire: a bare ``id:`` (some libraries yield it) fires none."""
    events = []
    while len(events) < n:
        event = reader.next()
        if event.data or event.event != "message":
            events.append(event)
    return events


def test_an_html_stream_sends_fragments_as_named_events_and_resumes_after_them(server, library):
    """``format=html``: what htmx's SSE extension reads, under every server (released under gevent)."""
    client, topic = subscribed_client(server)
    reader = SSEReader(library, server.url(f"/event?client_id={client}&format=html"))
    try:
        publish(server, topic, {"event": "todo-1", "html": "<li>one</li>\n<li>two</li>"}, {"not": "html"})
        publish(server, topic, {"event": "todo-2", "html": "<li>three</li>"})
        first, second = fired(reader, 2)
        assert (first.event, first.data) == ("todo-1", "<li>one</li>\n<li>two</li>")
        assert (second.event, second.data) == ("todo-2", "<li>three</li>")
        assert int(second.id) > int(first.id) + 1  # the JSON-only message between: not sent, its id passed
    finally:
        reader.close()
    publish(server, topic, {"event": "todo-3", "html": "<li>four</li>"})
    again = SSEReader(library, server.url(f"/event?client_id={client}&format=html&last_event_id={second.id}"))
    try:
        assert [(e.event, e.data) for e in fired(again, 1)] == [("todo-3", "<li>four</li>")]
    finally:
        again.close()
    bad = api(server, "/event", client_id=client, format="xml")
    assert bad.status_code == 400 and "format" in bad.json()["error"]
