"""The HTTP layer: a Flask blueprint serving the endpoints of PROTOCOL.md.

Every endpoint accepts GET and POST. Parameters come from the query string;
for POST, a form (``application/x-www-form-urlencoded``) or JSON object body
is accepted too, and the query string wins. Answers are JSON: success is
``{"ok": "true", …}``, failure a 4xx (or, for a fault of ours, 500) with
``{"ok": "false", "error": "<short message>"}``. ``/event`` answers with an
SSE stream (see :mod:`pubsubsse.stream`).
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import math
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable, Union
from urllib.parse import parse_qsl

from flask import Blueprint, Request, Response, request, send_from_directory
from werkzeug.exceptions import HTTPException

from . import shutdown
from .disconnect import Watch, watch
from .errors import BackendUnavailable, ClientNotFound, LimitReached, NotSubscribed, PubSubError, TopicNotFound
from .model import Client, Topic, check_name, short_id
from .ratelimit import RateLimiter
from .service import SSEPubSubService
from .stream import Stream
from .tickets import BadTicket, StreamTickets

__all__ = ["create_blueprint", "ACTIONS", "Authorize"]

log = logging.getLogger(__name__)

#: The ``action`` names an :data:`Authorize` hook is called with, one per endpoint.
ACTIONS = (
    "add_user",
    "add_public_topic",
    "add_private_topic",
    "sub",
    "unsub",
    "remove_user",
    "remove_private_topic",
    "event",
    "stats",
)

#: ``authorize(request, action, client, topic) -> bool``: see :func:`create_blueprint`.
Authorize = Callable[[Request, str, Union[Client, None], Union[Topic, None]], bool]

_MAX_ID_LENGTH = 64


def _client_script() -> Path:
    """Where the browser client is: in the installed package, or (a source checkout) in ``static/``."""
    package = Path(__file__).resolve().parent
    built = package / "static" / "pubsubsse.js"
    return built if built.exists() else package.parent / "static" / "pubsubsse.js"


_ERROR_MESSAGES: dict[type[PubSubError], str] = {
    ClientNotFound: "client not found",
    TopicNotFound: "topic not found",
    NotSubscribed: "not subscribed",
}


class _Refused(Exception):
    """Ends a request with a JSON error answer."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _ok(**fields: str) -> Response:
    return _json(200, {"ok": "true", **fields})


def _error(status: int, message: str) -> Response:
    return _json(status, {"ok": "false", "error": message})


def _parse_urlencoded(raw: bytes, where: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise _Refused(400, f"invalid {where}: not UTF-8") from None
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


def _parse_body(limit: int) -> dict[str, str]:
    if request.content_length is not None and request.content_length > limit:
        raise _Refused(413, "request body too large")
    try:
        raw = request.stream.read(limit + 1)
    except Exception as error:
        # The server could not decode the body (a broken chunked encoding, a body cut short):
        # gunicorn and Werkzeug each raise their own exceptions for it, all of them the client's doing.
        log.debug("request body unreadable: %s: %s", type(error).__name__, error)
        raise _Refused(400, "invalid request body") from None
    if len(raw) > limit:
        raise _Refused(413, "request body too large")
    if not raw.strip():
        return {}
    if request.mimetype == "application/x-www-form-urlencoded":
        return _parse_urlencoded(raw, "form body")
    if request.mimetype == "application/json" or request.mimetype.endswith("+json"):
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nesting like [[[[…
            raise _Refused(400, "invalid JSON body") from None
        if not isinstance(body, dict):
            raise _Refused(400, "invalid JSON body: expected an object")
        for key, value in body.items():
            if not (_is_unicode(key) and (not isinstance(value, str) or _is_unicode(value))):
                raise _Refused(400, "invalid JSON body: not UTF-8")
            if not isinstance(value, str):
                raise _Refused(400, f"invalid parameter {key}: expected a string")
        return body
    raise _Refused(415, "unsupported body: send a query string, a form or a JSON object")


def _params(max_query_length: int, max_body_size: int) -> dict[str, str]:
    """Return the request's parameters; the query string wins over the body."""
    if len(request.query_string) > max_query_length:
        raise _Refused(414, "query string too long")
    query = _parse_urlencoded(request.query_string, "query string")
    if request.method != "POST":
        return query
    return {**_parse_body(max_body_size), **query}


def _direct_framing(environ: dict[str, Any]) -> bool | None:
    """Return whether direct writes to the request's connection must be chunked, or ``None`` if not allowed.

    Publishers may write to the connection themselves only under gunicorn's
    gevent worker with ``threading`` patched (publishers, the timer and the
    stream then share one OS thread and sockets never block the process), for
    plain HTTP/1.x over TCP (no TLS to go through, no HTTP/2 framing). gunicorn
    frames a body of unknown length as chunks exactly when the request is
    HTTP/1.1, so ours must too.
    """
    sock = environ.get("gunicorn.socket")
    if sock is None or not type(sock).__module__.startswith("gevent"):
        return None
    protocol = environ.get("SERVER_PROTOCOL")
    if protocol not in ("HTTP/1.0", "HTTP/1.1") or environ.get("wsgi.url_scheme") != "http":
        return None
    if hasattr(sock, "do_handshake") or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    import gevent.monkey

    if not gevent.monkey.is_module_patched("threading"):
        return None
    return protocol == "HTTP/1.1"


_warned_foreign_thread = False


@functools.lru_cache(maxsize=1)
def _native_get_ident() -> Callable[[], int]:
    import gevent.monkey

    return gevent.monkey.get_original("_thread", "get_ident")


def _native_thread_id() -> int:
    return _native_get_ident()()


@functools.lru_cache(maxsize=1)
def _stream_loop_of(pid: int) -> tuple[Any, int]:
    from gevent import get_hub

    return get_hub().loop, _native_thread_id()


def _stream_loop() -> tuple[Any, int]:
    """Return the event loop that runs this process's streams (the first stream's), and its OS thread."""
    return _stream_loop_of(os.getpid())


class _EventStreamBody:
    """The WSGI body of an ``/event`` response: the stream's chunks, closed on disconnect.

    With direct writes it is also the stream's :class:`~pubsubsse.stream.DirectWriter`:
    the server sends the response head with the first chunk; after that
    publishers write to the parked stream themselves and this iterator writes
    the rest to the socket, returning only when the stream ends so the server
    can finish the response. One object per stream, because idle streams are
    what a process holds most of.
    """

    __slots__ = ("_stream", "_sock", "_watch", "_chunked", "_direct", "_fd")

    def __init__(self, stream: Stream, sock: Any, chunked: bool | None) -> None:
        self._stream = stream
        self._sock = sock
        self._watch: Watch | None = None
        #: ``None``: the server writes everything; else whether direct writes are HTTP chunks.
        self._chunked = chunked
        #: Direct writes have started (the server has sent the head and the first chunk).
        self._direct = False
        self._fd = -1
        if chunked is not None:
            self._fd = sock.fileno()
            _stream_loop()  # learnt here, in a stream's greenlet, not from whichever thread publishes first

    def __iter__(self) -> Iterator[bytes]:
        if self._sock is not None and self._watch is None:
            self._watch = watch(self._sock, self._stream.close)
        return self._stream if self._chunked is None else self

    def __next__(self) -> bytes:
        stream = self._stream
        if not self._direct:
            self._direct = True
            return next(stream)
        stream.write_directly(self)
        sendall = self._sock.sendall
        while True:
            chunk = stream.read()
            unsent = stream.take_unsent()
            if unsent:
                sendall(unsent)
            if chunk is None:
                raise StopIteration
            if chunk:
                sendall(self.frame(chunk))

    def frame(self, chunk: bytes) -> bytes:
        return b"%X\r\n%s\r\n" % (len(chunk), chunk) if self._chunked else chunk

    def send_nowait(self, data: bytes) -> int:
        # gevent keeps every socket non-blocking at the OS level, so this never stalls the process.
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            return -1

    def call_soon(self, callback: Callable[[], None]) -> None:
        loop, thread = _stream_loop()
        if _native_thread_id() == thread:
            loop.run_callback(callback)
            return
        # A publish from another OS thread (gevent's threadpool, a C library's callback): its own
        # hub would never run the callback and every direct write of the process would wait for
        # heartbeats. Hand it to the streams' loop, and say that this is not supported.
        global _warned_foreign_thread
        if not _warned_foreign_thread:
            _warned_foreign_thread = True
            log.error(
                "pubsubsse: a change was made from a native thread under gevent; gevent objects are not "
                "thread-safe: hand such calls to the worker's hub with hub.loop.run_callback_threadsafe()"
            )
        loop.run_callback_threadsafe(callback)

    def close(self) -> None:
        # Before the server closes the socket: its descriptor may be reused by another connection.
        self._stream.stop_writing_directly()
        if self._watch is not None:
            self._watch.cancel()
        self._stream.close()


def create_blueprint(
    service: SSEPubSubService | Callable[[], SSEPubSubService],
    *,
    name: str = "pubsubsse",
    public_topic_creation: bool = False,
    private_topics: bool = True,
    client_removal: bool = True,
    authorize: Authorize | None = None,
    cors_origins: str | Iterable[str] | None = None,
    max_query_length: int = 2048,
    max_body_size: int = 16384,
    end_streams_on_sigterm: bool = True,
    serve_client: bool = True,
    direct_writes: bool = True,
    tickets: StreamTickets | None = None,
    new_clients_per_second: float | None = 10.0,
    new_clients_burst: int = 100,
    stats_endpoint: bool = False,
) -> Blueprint:
    """Return a Flask blueprint serving ``service`` over HTTP (PROTOCOL.md).

    Register it with any ``url_prefix``::

        app.register_blueprint(create_blueprint(service), url_prefix="/sse")

    Stream settings (heartbeat, retry, replay size, queue size, client
    timeout) are options of the :class:`~pubsubsse.SSEPubSubService`, so every
    way of reaching the service behaves alike. The blueprint's own options:

    ``name``
        The blueprint's name; give each blueprint a different one if you
        register several.
    ``public_topic_creation`` (default ``False``)
        Serve ``/add/topic/public/``. Off, it answers 403 ``forbidden``: most
        apps create public topics in server code.
    ``private_topics`` (default ``True``)
        Serve ``/add/topic/private/`` and ``/remove/topic/private/``.
    ``client_removal`` (default ``True``)
        Serve ``/remove/user``.
    ``authorize``
        ``authorize(request, action, client, topic) -> bool``, called before
        every endpoint acts, once the client and topic named by the request
        are known (``None`` where an endpoint has none, and for a topic that
        does not exist or the client cannot see; ``action`` is one of
        :data:`ACTIONS`). Anything but ``True`` refuses the call with 403
        ``forbidden``; raise :class:`werkzeug.exceptions.Unauthorized` (401)
        or :class:`~werkzeug.exceptions.Forbidden` (403) with a description
        to choose the answer.
    ``cors_origins``
        Origins allowed to call the endpoints from other sites: ``"*"`` or a
        list such as ``["https://app.example.com"]``. Preflight requests
        are answered, allowing the ``Last-Event-ID`` and ``Content-Type``
        headers. ``None`` (the default) sends no CORS headers.
    ``max_query_length`` (bytes, default 2048)
        Longer query strings get 414. Servers have their own, earlier limit
        on the request line (gunicorn: ``--limit-request-line``, 4094) and
        answer it themselves.
    ``max_body_size`` (bytes, default 16384)
        Larger POST bodies get 413.
    ``end_streams_on_sigterm`` (default ``True``)
        When the process receives SIGTERM (gunicorn stopping or reloading a
        worker), end every open stream at once so clients reconnect to
        another worker instead of holding this one until its graceful
        timeout. See :mod:`pubsubsse.shutdown`.
    ``serve_client`` (default ``True``)
        Serve the browser client at ``pubsubsse.js`` (below the blueprint's
        prefix), so ``<script src="/sse/pubsubsse.js">`` works without copying
        the file.
    ``direct_writes`` (default ``True``)
        Under gunicorn's gevent worker, let publishers write events straight
        to the sockets of idle streams instead of waking one greenlet per
        stream: a publish to 1,000 subscribers costs a fraction of the CPU
        and reaches the last one sooner. The response head and first chunk
        still go through the server; later body bytes bypass WSGI
        middleware, so turn this off if a middleware must see or transform
        the body of ``/event`` responses, or under gunicorn's ``uwsgi``
        protocol. Other servers are not affected.
    ``tickets``
        A :class:`~pubsubsse.tickets.StreamTickets`: ``/event`` then also
        accepts ``ticket=<signed, short-lived ticket>`` in place of
        ``client_id``, so the long-lived id stays out of stream URLs (and
        logs). Bad tickets get 400 ``invalid ticket`` or ``ticket expired``.
    ``new_clients_per_second`` (default 10) and ``new_clients_burst`` (default 100)
        How many clients ``/add/user`` creates per remote address
        (``request.remote_addr``; behind a proxy, apply Werkzeug's
        ``ProxyFix``): on average, and in a burst. Beyond that it answers 429
        ``too many new clients`` with ``Retry-After``. ``None`` turns the
        limit off; ``max_clients`` on the service still caps the total.
    ``stats_endpoint`` (default ``False``)
        Serve ``/stats``: :meth:`SSEPubSubService.stats` as JSON, for
        monitoring. The ``authorize`` hook sees it as action ``"stats"``.
        For Prometheus, see :mod:`pubsubsse.metrics`.

    Client ids are credentials and are treated as such: they are compared in
    constant time and never logged in full.
    """
    if isinstance(service, SSEPubSubService):
        the_service = service
        service._serving = True  # publishes here can reach browsers: no warning about them

        def get_service() -> SSEPubSubService:
            return the_service

    elif callable(service):
        make_service = service

        @functools.lru_cache(maxsize=1)
        def get_service() -> SSEPubSubService:
            made = make_service()
            made._serving = True
            if end_streams_on_sigterm:
                shutdown.close_streams_on_sigterm(made)
            return made

    else:
        raise TypeError(f"service must be an SSEPubSubService or a function returning one, got {service!r}")
    if authorize is not None and not callable(authorize):
        raise TypeError("authorize must be a callable(request, action, client, topic) -> bool")
    if isinstance(cors_origins, str) and cors_origins != "*":
        cors_origins = [cors_origins]
    allowed_origins = None if cors_origins is None or cors_origins == "*" else frozenset(cors_origins)
    any_origin = cors_origins == "*"

    new_client_limit = None
    if new_clients_per_second is not None:
        new_client_limit = RateLimiter(new_clients_per_second, new_clients_burst)
    limited_addresses: set[str] = set()

    bp = Blueprint(name, __name__)

    def endpoint(rule: str, action: str, enabled: bool = True) -> Callable[[Callable[..., Response]], None]:
        def register(view: Callable[[dict[str, str]], Response]) -> None:
            def handle() -> Response:
                try:
                    if request.method == "HEAD":
                        # Flask answers HEAD wherever GET is allowed; here GET changes state
                        # (Go compatibility) and /event takes the client's stream over.
                        raise _Refused(405, "method not allowed", {"Allow": "GET, POST"})
                    if not enabled:
                        raise _Refused(403, "forbidden")
                    return view(_params(max_query_length, max_body_size))
                except _Refused as refused:
                    if refused.status in (413, 414):
                        log.info("pubsubsse endpoint %s: request refused: %s", rule, refused.message)
                    answer = _error(refused.status, refused.message)
                    answer.headers.update(refused.headers)
                    return answer
                except LimitReached as limit:
                    return _error(429, f"limit reached: {str(limit).partition(':')[0]}")
                except BackendUnavailable:
                    log.warning("pubsubsse endpoint %s: backend unavailable", rule)
                    return _error(503, "backend unavailable")
                except PubSubError as error:
                    return _error(400, _ERROR_MESSAGES.get(type(error), "bad request"))
                except HTTPException as http_error:
                    status = http_error.code or 400
                    return _error(status, http_error.description or http_error.name)
                except Exception:
                    log.exception("pubsubsse endpoint %s failed", rule)
                    return _error(500, "internal server error")

            bp.add_url_rule(rule, action, handle, methods=["GET", "POST"], strict_slashes=False)

        return register

    def check(action: str, client: Client | None, topic: Topic | None = None) -> None:
        if authorize is not None and authorize(request._get_current_object(), action, client, topic) is not True:
            raise _Refused(403, "forbidden")

    def find_client(params: dict[str, str]) -> Client | None:
        client_id = params.get("client_id", "")
        client = get_service().get_client_by_id(client_id) if len(client_id) <= _MAX_ID_LENGTH else None
        # The dict lookup hashes the whole id with a per-process random key, so its timing says
        # nothing about how much of a guess was right; the final comparison is constant-time too.
        if client is None or not hmac.compare_digest(client.id.encode(), client_id.encode()):
            return None
        return client

    def checked_client(action: str, params: dict[str, str]) -> Client:
        """Return the client the request names, once the hook allowed the call.

        The hook is asked first, with ``None`` for an id that names no client, so that a caller
        who may not act learns nothing, not even whether the id exists.
        """
        client = find_client(params)
        check(action, client)
        if client is None:
            raise ClientNotFound(params.get("client_id", ""))
        return client

    def stream_client(params: dict[str, str]) -> Client:
        ticket = params.get("ticket")
        if ticket is None:
            return checked_client("event", params)
        if tickets is None:
            raise _Refused(400, "tickets are not enabled")
        try:
            return checked_client("event", {"client_id": tickets.client_id(ticket)})
        except BadTicket as bad:
            raise _Refused(400, str(bad)) from None

    def limit_new_clients() -> None:
        if new_client_limit is None:
            return
        address = request.remote_addr or "unknown"
        wait = new_client_limit.acquire(address)
        if not wait:
            limited_addresses.discard(address)
            return
        if address not in limited_addresses and len(limited_addresses) < 1000:
            limited_addresses.add(address)  # one log line per address and episode, not per request
            log.warning("pubsubsse: new clients from %s are rate limited (new_clients_per_second)", address)
        raise _Refused(429, "too many new clients", {"Retry-After": str(math.ceil(wait))})

    def client_and_topic(action: str, params: dict[str, str], private_only: bool = False) -> tuple[Client, Topic]:
        """Return the client and the topic (as the client sees it) the request names, once the hook allowed the call.

        The hook runs first even when there is no such client or topic (it gets ``None``), so that
        nobody learns anything about a client or its topics before being allowed to act on it.
        """
        client = find_client(params)
        topic_id = params.get("topic", "")
        topic = None
        if client is not None and len(topic_id) <= _MAX_ID_LENGTH:
            topic = client.get_private_topic_by_id(topic_id) if private_only else client.get_topic_by_id(topic_id)
        check(action, client, topic)
        if client is None:
            raise ClientNotFound(params.get("client_id", ""))
        if topic is None:
            raise TopicNotFound(topic_id)
        return client, topic

    @endpoint("/add/user", "add_user")
    def add_user(params: dict[str, str]) -> Response:
        check("add_user", None)
        limit_new_clients()
        return _ok(client_id=get_service().new_client().id)

    @endpoint("/add/topic/public/", "add_public_topic", public_topic_creation)
    def add_public_topic(params: dict[str, str]) -> Response:
        check("add_public_topic", None)
        name = params.get("name")
        if name is not None:  # a named topic, created if absent (any process gives the same one)
            try:
                check_name(name)
            except ValueError as bad:
                raise _Refused(400, str(bad)) from None
            return _ok(topic_id=get_service().public_topic(name).id)
        return _ok(topic_id=get_service().new_public_topic().id)

    @endpoint("/add/topic/private/", "add_private_topic", private_topics)
    def add_private_topic(params: dict[str, str]) -> Response:
        client = checked_client("add_private_topic", params)
        return _ok(topic_id=client.new_private_topic().id)

    def subscription(action: str, change: Callable[[Client, Topic], None]) -> None:
        @endpoint("/" + action, action)
        def view(params: dict[str, str]) -> Response:
            change(*client_and_topic(action, params))
            return _ok()

    subscription("sub", Client.sub)
    subscription("unsub", Client.unsub)

    @endpoint("/remove/user", "remove_user", client_removal)
    def remove_user(params: dict[str, str]) -> Response:
        get_service().remove_client(checked_client("remove_user", params))
        return _ok()

    @endpoint("/remove/topic/private/", "remove_private_topic", private_topics)
    def remove_private_topic(params: dict[str, str]) -> Response:
        client, topic = client_and_topic("remove_private_topic", params, private_only=True)
        client.remove_private_topic(topic)
        return _ok()

    @endpoint("/event", "event")
    def event(params: dict[str, str]) -> Response:
        client = stream_client(params)
        if end_streams_on_sigterm:
            shutdown.close_streams_on_sigterm(get_service())
        last_event_id = request.headers.get("Last-Event-ID", params.get("last_event_id"))
        stream = client.stream(last_event_id)
        log.debug("stream opened for client %s", short_id(client.id))
        environ = request.environ
        sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
        response = Response(
            _EventStreamBody(stream, sock, _direct_framing(environ) if direct_writes else None),
            status=200,
            content_type="text/event-stream; charset=utf-8",
            direct_passthrough=True,
        )
        response.headers["Cache-Control"] = "no-cache, no-transform"
        response.headers["X-Accel-Buffering"] = "no"
        return response

    if stats_endpoint:

        @endpoint("/stats", "stats")
        def stats(params: dict[str, str]) -> Response:
            check("stats", None)
            return _json(200, {"ok": "true", **get_service().stats()})

    if serve_client:

        @bp.route("/pubsubsse.js", methods=["GET"])
        def client_script() -> Response:
            script = _client_script()
            return send_from_directory(script.parent, script.name, mimetype="text/javascript", max_age=300)

    if cors_origins is not None:

        @bp.after_request
        def add_cors_headers(response: Response) -> Response:
            origin = request.headers.get("Origin")
            if origin is None or not (any_origin or (allowed_origins is not None and origin in allowed_origins)):
                return response
            response.headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
            if not any_origin:
                response.vary.add("Origin")
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST"
                response.headers["Access-Control-Allow-Headers"] = "Content-Type, Last-Event-ID, Cache-Control"
                response.headers["Access-Control-Max-Age"] = "600"
            return response

    if end_streams_on_sigterm and isinstance(service, SSEPubSubService):
        shutdown.close_streams_on_sigterm(service)
    return bp
