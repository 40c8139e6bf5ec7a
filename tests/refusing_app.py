"""Servers that answer the browser client in ways it must survive, chosen by ``PUBSUBSSE_REFUSE``.

``query-only``: like the Go PubSub-SSE server, parameters are read from the query string only
(a POST body is ignored) and ``/event/shared`` is not found. ``streams``: every stream is
refused with 400 ``client not found``, as a server does that refuses for a reason the client
cannot know.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter

from pubsubsse import SSEPubSubService
from pubsubsse.wsgi import make_wsgi_app

PAGE = b"""<!doctype html><meta charset="utf-8"><title>refusing</title>
<script src="/pubsubsse.js"></script>
<script>
window.got = []; window.statuses = []; window.errors = [];
const ps = new PubSubSSE({ storage: null });
window.ps = ps;
ps.on("update", (topic, data) => window.got.push(data));
ps.on("status", (status) => window.statuses.push(status));
ps.on("error", (error) => window.errors.push(String(error)));
ps.start().then(() => ps.subscribe("T-news")).then(
  () => { window.subscribed = true; },
  (e) => { window.failed = String(e); },
);
</script>"""

service = SSEPubSubService(heartbeat=2, retry=0.2)
news = service.public_topic("news")
endpoints = make_wsgi_app(service, new_clients_per_second=None)
calls: Counter[str] = Counter()
mode = os.environ.get("PUBSUBSSE_REFUSE", "")


def reply(start_response, body: bytes, status: str = "200 OK", kind: str = "application/json"):
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    calls[path] += 1
    if path == "/":
        return reply(start_response, PAGE, kind="text/html")
    if path == "/test/ready":
        return reply(start_response, b"{}")
    if path == "/test/calls":
        return reply(start_response, json.dumps(calls).encode())
    if path == "/test/pub":
        news.pub(environ.get("QUERY_STRING", ""))
        return reply(start_response, b"{}")
    if mode == "streams" and path in ("/event", "/event/shared"):
        return reply(start_response, b'{"ok":"false","error":"client not found"}', "400 Bad Request")
    if mode == "query-only" and path == "/event/shared":  # the Go server has no shared streams
        return reply(start_response, b"404 page not found\n", "404 Not Found", "text/plain")
    if mode == "query-only" and environ.get("REQUEST_METHOD") == "POST":
        environ = {**environ, "wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": "0", "CONTENT_TYPE": ""}
    return endpoints(environ, start_response)
