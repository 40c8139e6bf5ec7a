"""Helpers for the HTTP tests: API calls, and SSE readers built on third-party clients."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import httpx
import requests
import sseclient
from httpx_sse import connect_sse

TIMEOUT = 10

#: Every endpoint of PROTOCOL.md, as the blueprint serves them.
ENDPOINTS = [
    "/add/user",
    "/add/topic/public/",
    "/add/topic/private/",
    "/sub",
    "/unsub",
    "/remove/user",
    "/remove/topic/private/",
    "/event",
]

#: One pooled client for all control requests: creating a client per call costs about 20 ms.
http = httpx.Client(timeout=TIMEOUT)


def api(server, path: str, method: str = "GET", **params: str) -> httpx.Response:
    if method == "GET":
        return http.get(server.url(path), params=params)
    return http.post(server.url(path), data=params)


def new_client(server) -> str:
    return api(server, "/add/user").json()["client_id"]


def new_public_topic(server) -> str:
    return api(server, "/add/topic/public/").json()["topic_id"]


def publish(server, topic: str, *data: Any) -> None:
    # One change after another inside one request: a thousand of them may take seconds.
    timeout = max(TIMEOUT, len(data) / 50)
    assert http.post(server.url("/test/pub"), json={"topic": topic, "data": list(data)}, timeout=timeout).is_success


def state(server) -> dict:
    return http.get(server.url("/test/state")).json()


def wait_for(predicate, timeout: float = 10, what: str = "condition"):
    """Poll ``predicate`` (a cheap request) until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Event:
    def __init__(self, id: str, data: str, event: str = "message") -> None:
        self.id = id
        self.data = data
        self.event = event or "message"

    def json(self) -> Any:
        import json

        return json.loads(self.data)


class SSEReader:
    """Reads an /event stream in a background thread with a third-party SSE client."""

    def __init__(self, library: str, url: str, headers: dict[str, str] | None = None) -> None:
        self.library = library
        self.url = url
        self.headers = headers or {}
        self.events: queue.Queue = queue.Queue()
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.opened = threading.Event()
        self.ended = threading.Event()
        self._closer: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.opened.wait(TIMEOUT), "stream did not open"

    def _run(self) -> None:
        try:
            if self.library == "httpx-sse":
                self._run_httpx()
            else:
                self._run_sseclient()
        except Exception as error:  # a closed connection ends the reader
            self.events.put(error)
        finally:
            self.opened.set()
            self.ended.set()

    def _run_httpx(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(TIMEOUT, read=60)) as client:
            self._closer = client
            with connect_sse(client, "GET", self.url, headers=self.headers) as source:
                self.status = source.response.status_code
                self.response_headers = dict(source.response.headers)
                self.opened.set()
                for sse in source.iter_sse():
                    self.events.put(Event(sse.id, sse.data, sse.event))

    def _run_sseclient(self) -> None:
        response = requests.get(
            self.url, stream=True, headers={"Accept": "text/event-stream", **self.headers}, timeout=(TIMEOUT, 60)
        )
        self._closer = response
        self.status = response.status_code
        self.response_headers = dict(response.headers)
        self.opened.set()
        for sse in sseclient.SSEClient(response.iter_content(chunk_size=None)).events():
            self.events.put(Event(sse.id, sse.data, sse.event))

    def next(self, timeout: float = TIMEOUT) -> Event:
        item = self.events.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item

    def take(self, n: int, timeout: float = TIMEOUT) -> list[Event]:
        return [self.next(timeout) for _ in range(n)]

    def nothing_within(self, seconds: float) -> bool:
        try:
            item = self.events.get(timeout=seconds)
        except queue.Empty:
            return True
        self.events.put(item)
        return False

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()
        self.ended.wait(TIMEOUT)
