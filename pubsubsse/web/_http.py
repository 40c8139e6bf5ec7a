"""The protocol's requests and answers, and the parsing of what a request carries.

No I/O: an adapter builds a :class:`Request` from its framework's and writes the
answer back. Public names are exported by :mod:`pubsubsse.web`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Union
from urllib.parse import parse_qsl, quote

from pubsubsse.errors import ClientNotFound
from pubsubsse.service import SSEPubSubService
from pubsubsse.streams._multiplex import MAX_MULTIPLEXED_CLIENTS, MultiplexStream
from pubsubsse.streams._stream import Stream

__all__ = [
    "Refused",
    "Headers",
    "Request",
    "Reply",
    "StreamReply",
    "FileReply",
    "Answer",
    "json_reply",
    "error_reply",
    "redirect",
    "ok",
    "parse_body",
    "parse_urlencoded",
    "shared_clients",
    "since_option",
    "MAX_ID_LENGTH",
    "ALLOW",
    "JSON_HEADERS",
    "STREAM_HEADERS",
]

log = logging.getLogger("pubsubsse.web")

MAX_ID_LENGTH = 64
ALLOW = "GET, POST"
JSON_HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"))
STREAM_HEADERS = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache, no-transform"),
    # nginx buffers responses unless told not to, which would hold events back.
    ("X-Accel-Buffering", "no"),
)


class Refused(Exception):
    """Ends a request with a JSON error answer: raise it from an ``authorize`` hook to choose the answer.

    ``Refused(401, "login required")`` answers 401 with ``{"ok": "false",
    "error": "login required"}``, in every framework. (Under Flask and plain
    WSGI, Werkzeug's ``Unauthorized`` and ``Forbidden`` work too; under
    Django, ``PermissionDenied``.)
    """

    def __init__(
        self, status: int, message: str, headers: Mapping[str, str] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.hint = hint


class Headers(Protocol):
    """What the protocol asks of a request's headers: a case-insensitive lookup."""

    def get(self, key: str, /) -> str | None:
        """Return the header's value, or ``None``."""
        ...


_NO_HEADERS: Mapping[str, str] = {}


@dataclass(frozen=True)
class Request:
    """What the protocol needs of an HTTP request. Adapters build one per request.

    ``path`` is below the endpoints' mount point (``"/add/user"``); ``headers``
    must look names up case-insensitively (Werkzeug's and Django's header
    mappings do); ``read_body(n)`` returns at most ``n`` bytes of the body
    (already decoded from any chunked transfer encoding) and raises anything
    for a body the server could not read; ``native`` is the framework's
    request, handed to the ``authorize`` hook.
    """

    method: str
    path: str
    query_string: bytes = b""
    headers: Headers = field(default_factory=lambda: _NO_HEADERS)
    remote_addr: str | None = None
    content_type: str = ""
    content_length: int | None = None
    read_body: Callable[[int], bytes] = field(default=lambda size: b"")
    native: Any = None
    #: The whole path as asked, mount point included (``"/sse/add/user"``), for messages.
    url_path: str = ""
    #: The server's ``wsgi.multiprocess``: whether other processes serve the same app.
    multiprocess: bool = False


@dataclass
class Reply:
    """A complete answer: status, headers and body (JSON, or empty for a preflight)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def json(self) -> Any:
        """Return the body, decoded."""
        return json.loads(self.body)


@dataclass
class StreamReply:
    """A ``200`` answer whose body is ``stream``'s chunks; the adapter sends them as they come.

    The adapter must call ``stream.close()`` when the response ends, however it
    ends. ``end_on_sigterm`` says whether the endpoints were asked to end
    streams when the process gets SIGTERM.
    """

    headers: list[tuple[str, str]]
    stream: Stream | MultiplexStream
    service: SSEPubSubService
    end_on_sigterm: bool = True
    status: int = 200


@dataclass
class FileReply:
    """A static file (the browser client), for the adapter to send with its own file response."""

    path: Path
    content_type: str
    max_age: int
    headers: list[tuple[str, str]]
    status: int = 200


Answer = Union[Reply, StreamReply, FileReply]


def json_reply(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Reply:
    data = json.dumps(body, separators=(",", ":")).encode()
    return Reply(status, [*JSON_HEADERS, ("Content-Length", str(len(data))), *(headers or {}).items()], data)


def shared_clients(value: str) -> list[tuple[str, str | None]]:
    """Parse ``clients`` of ``/event/shared``: ``<client id>[:<last event id>]``, comma-separated."""
    entries: list[tuple[str, str | None]] = []
    for entry in value.split(",") if value else ():
        client_id, colon, last_event_id = entry.partition(":")
        if not client_id or len(client_id) > MAX_ID_LENGTH:
            raise Refused(400, "invalid parameter clients: expected client_id[:last_event_id], comma-separated")
        entries.append((client_id, last_event_id if colon else None))
    if not entries:
        raise ClientNotFound("")
    if len(entries) > MAX_MULTIPLEXED_CLIENTS:
        raise Refused(400, f"invalid parameter clients: at most {MAX_MULTIPLEXED_CLIENTS} clients")
    if len({client_id for client_id, _ in entries}) < len(entries):
        raise Refused(400, "invalid parameter clients: a client is named twice")
    return entries


def redirect(request: Request, canonical: str) -> Reply:
    """Send a path without its trailing slash (or with one too many) to the served form, as Go's ServeMux does.

    308, not Go's 301: a client that follows it repeats a POST with its body
    (after a 301 it would send a GET without it). The ``Location`` is relative to
    the request's URL, so it holds under any mount point.
    """
    segment = canonical.rstrip("/").rpartition("/")[2]
    location = segment + "/" if canonical.endswith("/") else "../" + segment
    if request.query_string:
        location += "?" + quote(request.query_string, safe="/?:@!$&'()*+,;=%~")
    asked = request.url_path or request.path
    mount = asked[: -len(request.path)] if asked.endswith(request.path) else ""
    return json_reply(308, {"ok": "false", "error": f"moved to {mount}{canonical}"}, {"Location": location})


def ok(**fields: str) -> Reply:
    return json_reply(200, {"ok": "true", **fields})


def error_reply(status: int, message: str, headers: Mapping[str, str] | None = None, hint: str | None = None) -> Reply:
    """Return the JSON answer for a refused request: ``{"ok": "false", "error": message}``.

    ``hint``, when given, is added as ``"hint"``: what the developer can do about it. The
    ``error`` strings stay those of the Go server; hints are for people reading answers.
    """
    body = {"ok": "false", "error": message}
    if hint is not None:
        body["hint"] = hint
    return json_reply(status, body, headers)


def parse_urlencoded(raw: bytes, where: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise Refused(400, f"invalid {where}: not UTF-8") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        params.setdefault(key, value)
    return params


def _is_unicode(text: str) -> bool:
    """Return whether ``text`` can be encoded as UTF-8 (JSON escapes of lone surrogates make strings that cannot)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_body(request: Request, limit: int) -> dict[str, str]:
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, "request body too large")
    try:
        raw = request.read_body(limit + 1)
    except Exception as error:
        # The server could not decode the body (a broken chunked encoding, a body cut short):
        # each server raises its own exceptions for it, all of them the client's doing.
        log.debug("request body unreadable: %s: %s", type(error).__name__, error)
        raise Refused(400, "invalid request body") from None
    if len(raw) > limit:
        raise Refused(413, "request body too large")
    if not raw.strip():
        return {}
    mimetype = request.content_type
    if mimetype == "application/x-www-form-urlencoded":
        return parse_urlencoded(raw, "form body")
    if mimetype == "application/json" or mimetype.endswith("+json"):
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nesting like [[[[...
            raise Refused(400, "invalid JSON body") from None
        if not isinstance(body, dict):
            raise Refused(400, "invalid JSON body: expected an object")
        for key, value in body.items():
            if not (_is_unicode(key) and (not isinstance(value, str) or _is_unicode(value))):
                raise Refused(400, "invalid JSON body: not UTF-8")
            if not isinstance(value, str):
                raise Refused(400, f"invalid parameter {key}: expected a string")
        return body
    raise Refused(415, "unsupported body: send a query string, a form or a JSON object")


def since_option(action: str, params: Mapping[str, str]) -> dict[str, str]:
    """Return the ``since`` of a ``/sub`` (``start``: with every value the topic keeps), as keyword arguments."""
    since = params.get("since")
    if since is None:
        return {}
    if since == "start" and action == "sub":
        return {"since": since}
    raise Refused(400, "invalid since", hint="/sub takes since=start, or no since")
