"""Testing an app that streams: read what a stream sends, for N messages or T seconds, never hanging.

An SSE response never ends by itself, so iterating it in a test blocks the test
for good. :func:`read_stream` reads until it has the messages asked for or the
time is up, then closes the stream::

    from pubsubsse.testing import read_stream

    def test_an_order_reaches_its_page(app):
        service = pubsub.service
        client = service.new_client()
        client.sub(service.public_topic("orders"))
        service.publish("orders", {"id": 7})
        received = read_stream(client, updates=1)  # until one published value arrived
        assert received.updates("T-orders") == [{"id": 7}]

It reads from a :class:`~pubsubsse.Client` of a service in this process, from
a Flask (Werkzeug) test client and a path, or from a live URL. With
``messages``, fewer messages within ``seconds`` fail the test with an
:class:`AssertionError` that shows what did arrive. For pytest,
``pytest_plugins = ["pubsubsse.testing.pytest_plugin"]`` in a ``conftest.py`` adds the
fixtures ``pubsub_service`` and ``pubsub_client``.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Message", "Received", "read_stream"]


@dataclass(frozen=True)
class Message:
    """One event of a stream: its id and its decoded JSON data (``{"sys": …, "updates": …}``)."""

    id: str
    data: Any
    #: The ``event:`` field, for the events of an ``/event/shared`` stream; ``""`` otherwise.
    event: str = ""

    @property
    def updates(self) -> list[dict[str, Any]]:
        """The message's ``updates`` elements (``[]`` for a system message)."""
        return list(self.data.get("updates") or []) if isinstance(self.data, dict) else []

    @property
    def sys(self) -> list[dict[str, Any]]:
        """The message's ``sys`` elements (``[]`` for a published message)."""
        return list(self.data.get("sys") or []) if isinstance(self.data, dict) else []


@dataclass
class Received:
    """What a stream sent while it was read."""

    messages: list[Message] = field(default_factory=list)
    #: Heartbeat comments (``:`` lines).
    comments: int = 0
    #: The ``retry:`` field, if the stream sent one.
    retry: int | None = None

    @property
    def ids(self) -> list[str]:
        """The messages' ids, in order."""
        return [m.id for m in self.messages]

    @property
    def last_event_id(self) -> str | None:
        """The id to resume after (``None`` before any message)."""
        return self.messages[-1].id if self.messages else None

    def updates(self, topic: str | None = None) -> list[Any]:
        """Return the published values, in order; only those of ``topic`` (an id, ``"T-orders"``) if given."""
        return [u["data"] for m in self.messages for u in m.updates if topic is None or u.get("topic") == topic]

    def sys(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Return the ``sys`` elements, in order; only those of type ``kind`` (``"reset"``, …) if given."""
        return [item for m in self.messages for item in m.sys if kind is None or item.get("type") == kind]

    def present_users(self, topic: str) -> list[str] | None:
        """Return who a page that applies the stream's presence messages believes is in ``topic`` (an id).

        Sorted, as ``pubsubsse.js`` keeps it; ``None`` if no presence message of
        the topic arrived (its live presence is off, or the client is not subscribed).
        """
        users: set[str] | None = None
        for item in self.sys("presence"):
            if item.get("topic") != topic:
                continue
            if "users" in item:
                users = set(item["users"])
            else:  # a report applies to what was known: nothing yet, when presence was turned on later
                users = ((users or set()) | set(item.get("joined", ()))) - set(item.get("left", ()))
        return None if users is None else sorted(users)

    @property
    def reset(self) -> bool:
        """Whether the stream said that messages were missed (an init message with a ``reset`` element)."""
        return bool(self.sys("reset"))


class _Parser:
    """An SSE parser fed with chunks (any split); collects complete events into ``received``."""

    def __init__(self, received: Received) -> None:
        self.received = received
        self._buffer = b""
        self._fields: dict[str, list[str]] = {}

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8").rstrip("\r")
            if line == "":
                self._dispatch()
            elif line.startswith(":"):
                self.received.comments += 1
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "retry" and value.isdigit():
                    self.received.retry = int(value)
                else:
                    self._fields.setdefault(name, []).append(value)

    def _dispatch(self) -> None:
        fields, self._fields = self._fields, {}
        if "data" not in fields:
            return
        text = "\n".join(fields["data"])
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = text
        event = fields.get("event", [""])[-1]
        self.received.messages.append(Message(fields.get("id", [""])[-1], data, event))


def read_stream(
    source: Any,
    path: str | None = None,
    *,
    messages: int | None = None,
    updates: int | None = None,
    seconds: float = 5.0,
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
    until: Callable[[Received], bool] | None = None,
) -> Received:
    """Read a stream until ``messages`` messages (or ``updates`` published values) arrived, or ``seconds`` passed.

    Then close it and return what came.

    ``source`` is a :class:`~pubsubsse.Client` (a stream is attached to it
    here, in this process; by default it starts with everything the client
    was sent that is still kept, as a resume from ``"0"``), a stream already
    attached (``client.stream()``),
    a Werkzeug or Flask test client with the stream's ``path``
    (``"/sse/event?client_id=…"``), or a URL (``"http://127.0.0.1:8000/sse/event?client_id=…"``).
    ``last_event_id`` resumes after that id. ``headers`` go with an HTTP
    request. With ``messages`` or ``updates``, an :class:`AssertionError`
    says so if fewer arrived within ``seconds``; without, it reads for ``seconds``.
    ``until`` reads until it returns true for what arrived (checked after each
    chunk), and fails the same way if it never does::

        read_stream(client, until=lambda r: r.present_users("T-room") == ["alice", "bob"])
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    received = Received()
    parser = _Parser(received)
    deadline = time.monotonic() + seconds

    def enough() -> bool:
        if until is not None and not until(received):
            return False
        if updates is not None:
            return len(received.updates()) >= updates
        return (messages is not None and len(received.messages) >= messages) or (until is not None and messages is None)

    if isinstance(source, str):
        _read_url(source, parser, deadline, enough, last_event_id, headers)
    elif path is not None:
        _read_test_client(source, path, parser, deadline, enough, last_event_id, headers)
    else:
        if hasattr(source, "sub"):  # a Client
            stream = source.stream(last_event_id="0" if last_event_id is None else last_event_id)
        else:
            stream = source
        try:
            while not enough():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                chunk = stream.read(timeout=min(remaining, 0.5))
                if chunk is None:
                    break  # the stream ended
                parser.feed(chunk)
        finally:
            stream.close()
    wanted, got, what = (
        (updates, len(received.updates()), "published value(s)")
        if updates is not None
        else (messages, len(received.messages), "message(s)")
    )
    if until is not None and not until(received):
        shown = [m.data for m in received.messages]
        raise AssertionError(f"until(...) still false after {seconds} s; got: {shown!r:.2000}")
    if wanted is not None and got < wanted:
        shown = [m.data for m in received.messages]
        raise AssertionError(f"expected {wanted} {what} within {seconds} s, got {got}: {shown!r:.2000}")
    return received


def _read_url(
    url: str,
    parser: _Parser,
    deadline: float,
    enough: Any,
    last_event_id: str | None,
    headers: dict[str, str] | None,
) -> None:
    import http.client

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=max(0.01, deadline - time.monotonic()))
    sent = {"Accept": "text/event-stream", **(headers or {})}
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=sent)
        response = connection.getresponse()
        if response.status != 200:
            raise AssertionError(f"GET {url} answered {response.status}: {response.read(2000)!r}")
        while not enough():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or connection.sock is None:
                break
            connection.sock.settimeout(remaining)
            try:
                chunk = response.read1(65536)
            except (socket.timeout, TimeoutError):
                break
            if not chunk:
                break
            parser.feed(chunk)
    finally:
        connection.close()


def _read_test_client(
    client: Any,
    path: str,
    parser: _Parser,
    deadline: float,
    enough: Any,
    last_event_id: str | None,
    headers: dict[str, str] | None,
) -> None:
    sent = dict(headers or {})
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    response = client.get(path, headers=sent, buffered=False)
    if response.status_code != 200:
        raise AssertionError(f"GET {path} answered {response.status_code}: {response.get_data()[:2000]!r}")
    # The body blocks between chunks (up to a heartbeat): read it in a thread; closing the response
    # ends the stream from here, which ends the thread's iteration.
    chunks: queue.Queue[bytes | None] = queue.Queue()

    def pump(body: Iterable[bytes]) -> None:
        try:
            for chunk in body:
                chunks.put(chunk)
        except Exception:  # the response closed under it
            pass
        finally:
            chunks.put(None)

    thread = threading.Thread(target=pump, args=(response.response,), daemon=True)
    thread.start()
    try:
        while not enough():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                chunk = chunks.get(timeout=remaining)
            except queue.Empty:
                break
            if chunk is None:
                break
            parser.feed(chunk)
    finally:
        response.close()
        thread.join(5)
