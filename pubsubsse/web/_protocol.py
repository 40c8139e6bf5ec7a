"""The HTTP protocol without a web framework: a :class:`Request` in, a reply out.

:class:`Endpoints` owns every rule of pubsubsse's HTTP protocol: which path is
which endpoint, parameters (query string, form or JSON body, the query string
winning), limits on their size, the ``authorize`` hook, stream tickets, the
limit on new clients, CORS, and the mapping of errors to status codes. It does
no I/O: adapters build a :class:`Request` from their framework's request and
turn the answer (:class:`Reply`, :class:`StreamReply` or :class:`FileReply`)
into their framework's response. The adapters shipped are
:func:`pubsubsse.flask.blueprint.create_blueprint` (Flask), :func:`pubsubsse.wsgi.make_wsgi_app`
(any WSGI framework) and :mod:`pubsubsse.django`.

Every endpoint accepts GET and POST. Answers are JSON: success is
``{"ok": "true", ...}``, failure a 4xx (or, for a fault of ours, 500; 503
when a shared backend is unreachable) with ``{"ok": "false", "error":
"<short message>"}``. ``/event`` answers with an SSE stream.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional

from pubsubsse.errors import BackendUnavailable, ClientNotFound, LimitReached, NotSubscribed, PubSubError, TopicNotFound
from pubsubsse.handles import Client, Topic, check_name, short_id
from pubsubsse.servers import _workers as workers
from pubsubsse.service import SSEPubSubService
from pubsubsse.streams._html import FORMATS, html_stream
from pubsubsse.streams._multiplex import MultiplexStream
from pubsubsse.streams._stream import Stream
from pubsubsse.web._http import (
    ALLOW,
    MAX_ID_LENGTH,
    STREAM_HEADERS,
    Answer,
    FileReply,
    Headers,
    Refused,
    Reply,
    Request,
    StreamReply,
    error_reply,
    json_reply,
    ok,
    parse_body,
    parse_urlencoded,
    redirect,
    shared_clients,
    since_option,
)
from pubsubsse.web._presence import presence_view
from pubsubsse.web._ratelimit import NewClientLimit
from pubsubsse.web._scripts import SCRIPTS, client_script_reply
from pubsubsse.web._tickets import BadTicket, StreamTickets

__all__ = [
    "ACTIONS",
    "ENDPOINT_OPTIONS",
    "PATHS",
    "Authorize",
    "Endpoints",
    "FileReply",
    "Headers",
    "Refused",
    "Reply",
    "Request",
    "StreamReply",
]

log = logging.getLogger(__name__)

#: The ``action`` names an :data:`~pubsubsse.web.Authorize` hook is called with, one per endpoint.
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
    "presence",
)

#: Each endpoint's path below the mount point, and its action.
PATHS: Mapping[str, str] = {
    "/add/user": "add_user",
    "/add/topic/public/": "add_public_topic",
    "/add/topic/private/": "add_private_topic",
    "/sub": "sub",
    "/unsub": "unsub",
    "/remove/user": "remove_user",
    "/remove/topic/private/": "remove_private_topic",
    "/event": "event",
    "/event/shared": "shared_event",
    "/stats": "stats",
    "/presence": "presence",
}

#: ``authorize(request, action, client, topic) -> bool``, where ``request`` is the framework's own
#: request object (Flask's ``request``, a Werkzeug ``Request``, a Django ``HttpRequest``).
Authorize = Callable[[Any, str, Optional[Client], Optional[Topic]], bool]

_ERROR_MESSAGES: dict[type[PubSubError], str] = {
    ClientNotFound: "client not found",
    TopicNotFound: "topic not found",
    NotSubscribed: "not subscribed",
}

#: The option that turns each endpoint that can be off back on, for the ``forbidden`` answer's hint.
_SWITCHES = {
    "add_public_topic": ("public_topic_creation", "True"),
    "add_private_topic": ("private_topics", "True"),
    "remove_private_topic": ("private_topics", "True"),
    "remove_user": ("client_removal", "True"),
}


def _same(service: SSEPubSubService) -> SSEPubSubService:
    return service


def _built(make_service: Callable[[], SSEPubSubService]) -> SSEPubSubService:
    made = make_service()
    if not isinstance(made, SSEPubSubService):
        raise TypeError(f"the service function returned {made!r}, not an SSEPubSubService")
    made._serving = True
    workers.warn_unless_shared(made.backend.shared)
    return made


def error_hint(error: PubSubError, request: Request, shared: bool) -> str | None:
    """Say what usually causes ``error`` and what to do, for the answer's ``hint``."""
    if isinstance(error, ClientNotFound):
        if request.multiprocess and not shared:
            return (
                "this server runs several worker processes, each with its own in-process service, and "
                f"the client was made by another one: {workers.ADVICE}"
            )
        return "get a client_id from /add/user; a client is removed once its stream was closed for client_timeout"
    if isinstance(error, TopicNotFound):
        topic_id = str(error)
        if topic_id and " " not in topic_id and not topic_id.startswith("T-"):
            return f"topic ids start with T-: the public topic named {topic_id} is T-{topic_id}"
        return (
            "no topic with this id is visible to this client; a named topic exists once the app has made it "
            "(declare it at startup: service.public_topic(name))"
        )
    return None


def cors_headers(request: Request, any_origin: bool, origins: frozenset[str]) -> list[tuple[str, str]]:
    """Return the CORS headers of the answer to ``request``."""
    origin = request.headers.get("Origin")
    if origin is None or not (any_origin or origin in origins):
        return []
    headers = [("Access-Control-Allow-Origin", "*" if any_origin else origin)]
    if not any_origin:
        headers.append(("Vary", "Origin"))
    if request.method == "OPTIONS":
        headers += [
            ("Access-Control-Allow-Methods", ALLOW),
            ("Access-Control-Allow-Headers", "Content-Type, Last-Event-ID, Cache-Control"),
            ("Access-Control-Max-Age", "600"),
        ]
    return headers


def request_params(request: Request, max_query_length: int, max_body_size: int) -> dict[str, str]:
    """Return the request's parameters; the query string wins over the body."""
    if len(request.query_string) > max_query_length:
        raise Refused(414, "query string too long")
    query = parse_urlencoded(request.query_string, "query string")
    if request.method != "POST":
        return query
    return {**parse_body(request, max_body_size), **query}


class Endpoints:
    """The protocol's endpoints for ``service``, with the options every adapter takes.

    ``service`` is an :class:`~pubsubsse.SSEPubSubService` or a function
    returning one, called on first use (in the process that serves: a gunicorn
    worker builds its own). The options:

    ``public_topic_creation`` (default ``False``)
        Serve ``/add/topic/public/``. Off, it answers 403 ``forbidden``: most
        apps create public topics in server code.
    ``private_topics`` (default ``True``)
        Serve ``/add/topic/private/`` and ``/remove/topic/private/``.
    ``client_removal`` (default ``True``)
        Serve ``/remove/user``.
    ``authorize``
        ``authorize(request, action, client, topic) -> bool``, called before
        every endpoint acts, with the framework's request, once the client and
        topic named by the request are known (``None`` where an endpoint has
        none, for an id that names no client, and for a topic that does not
        exist or the client cannot see; ``action`` is one of :data:`~pubsubsse.web.ACTIONS`).
        Anything but ``True`` refuses the call with 403 ``forbidden``; raise
        :class:`Refused` (or the framework's own 401/403 exception) with a
        message to choose the answer.
    ``identify``
        ``identify(request) -> str | None``, called by ``/add/user`` with the
        framework's request: the user of the new client (:attr:`~pubsubsse.Client.user`),
        so that presence counts people, not tabs, and ``authorize`` can check
        that a client is the caller's (``client.user == …``). ``None`` makes a
        client without a user; anything but ``None`` or a string of 1 to 256
        characters is a bug of the hook (500).
    ``cors_origins``
        Origins allowed to call the endpoints from other sites: ``"*"`` or a
        list such as ``["https://app.example.com"]``. Preflight requests are
        answered, allowing the ``Last-Event-ID`` and ``Content-Type`` headers.
        ``None`` (the default) sends no CORS headers.
    ``max_query_length`` (bytes, default 2048)
        Longer query strings get 414. Servers have their own, earlier limit on
        the request line (gunicorn: ``--limit-request-line``, 4094).
    ``max_body_size`` (bytes, default 16384)
        Larger POST bodies get 413.
    ``end_streams_on_sigterm`` (default ``True``)
        When the process receives SIGTERM (gunicorn stopping or reloading a
        worker), end every open stream at once so clients reconnect to another
        worker instead of holding this one until its graceful timeout. See
        ``pubsubsse.servers._shutdown``.
    ``serve_client`` (default ``True``)
        Serve the browser client at ``pubsubsse.js`` below the mount point.
    ``direct_writes`` (default ``True``)
        Under gunicorn's gevent worker, let publishers write events straight
        to the sockets of idle streams instead of waking one greenlet per
        stream (see ``pubsubsse.servers._gunicorn_gevent``). Later body
        bytes then bypass WSGI middleware: turn this off if a middleware must
        see or transform the body of ``/event`` responses. Other servers are
        not affected.
    ``write_timeout`` (default ``None``: never)
        Seconds a stream may wait for its connection to take more bytes
        before it is ended: a client that stops reading (a frozen tab, a
        stalled proxy) otherwise keeps its stream, the kernel's send buffer
        and up to ``queue_size`` events for as long as the connection stays
        open. Its client is ``WAITING`` afterwards and resumes when it reads
        again and reconnects. Applies where streams are released from the
        server (gunicorn's gevent worker with ``direct_writes``); elsewhere
        the server's own write timeout decides.
    ``tickets``
        A :class:`~pubsubsse.web.StreamTickets`: ``/event`` then also accepts
        ``ticket=<signed, short-lived ticket>`` in place of ``client_id``, so
        the long-lived id stays out of stream URLs (and logs). Bad tickets get
        400 ``invalid ticket`` or ``ticket expired``.
    ``new_clients_per_second`` (default 10) and ``new_clients_burst`` (default 100)
        How many clients ``/add/user`` creates per remote address: on average,
        and in a burst. Beyond that it answers 429 ``too many new clients``
        with ``Retry-After``. ``None`` turns the limit off; ``max_clients`` on
        the service still caps the total. Behind a proxy, make the framework
        see the client's address (Werkzeug's ``ProxyFix``, gunicorn's
        ``--forwarded-allow-ips``).
    ``stats_endpoint`` (default ``False``)
        Serve ``/stats``: :meth:`~pubsubsse.SSEPubSubService.stats` as JSON, for
        monitoring. The ``authorize`` hook sees it as action ``"stats"``.
    ``shared_streams`` (default ``True``)
        Serve ``/event/shared``: one stream carrying several clients' events,
        which the browser client uses so that all tabs of a browser share one
        connection (see ``pubsubsse.streams._multiplex``). The ``authorize`` hook is
        asked ``"event"`` for each client, as for ``/event``. Off, the path is
        not served (404) and each tab opens its own stream.

    Client ids are credentials and are treated as such: they are compared in
    constant time and never logged in full.
    """

    def __init__(
        self,
        service: SSEPubSubService | Callable[[], SSEPubSubService],
        *,
        public_topic_creation: bool = False,
        private_topics: bool = True,
        client_removal: bool = True,
        authorize: Authorize | None = None,
        identify: Callable[[Any], str | None] | None = None,
        cors_origins: str | Iterable[str] | None = None,
        max_query_length: int = 2048,
        max_body_size: int = 16384,
        end_streams_on_sigterm: bool = True,
        serve_client: bool = True,
        direct_writes: bool = True,
        write_timeout: float | None = None,
        tickets: StreamTickets | None = None,
        new_clients_per_second: float | None = 10.0,
        new_clients_burst: int = 100,
        stats_endpoint: bool = False,
        shared_streams: bool = True,
        translate_error: Callable[[Exception], Refused | None] | None = None,
    ) -> None:
        get_service: Callable[[], SSEPubSubService]
        if isinstance(service, SSEPubSubService):
            service._serving = True  # publishes here can reach browsers: no warning about them
            workers.warn_unless_shared(service.backend.shared)
            get_service = functools.partial(_same, service)
            self.service_is_built = True
        elif callable(service):
            get_service = functools.lru_cache(maxsize=1)(functools.partial(_built, service))
            self.service_is_built = False
        else:
            raise TypeError(f"service must be an SSEPubSubService or a function returning one, got {service!r}")
        if authorize is not None and not callable(authorize):
            raise TypeError("authorize must be a callable(request, action, client, topic) -> bool")
        if identify is not None and not callable(identify):
            raise TypeError("identify must be a callable(request) -> str | None")
        self._get_service = get_service
        self.authorize = authorize
        self.identify = identify
        self.enabled = {
            "add_public_topic": public_topic_creation,
            "add_private_topic": private_topics,
            "remove_private_topic": private_topics,
            "remove_user": client_removal,
        }
        if isinstance(cors_origins, str) and cors_origins != "*":
            cors_origins = [cors_origins]
        self.cors = cors_origins is not None
        self._any_origin = cors_origins == "*"
        self._origins = frozenset(() if cors_origins is None or cors_origins == "*" else cors_origins)
        self.max_query_length = max_query_length
        self.max_body_size = max_body_size
        self.end_streams_on_sigterm = end_streams_on_sigterm
        self.direct_writes = direct_writes
        if write_timeout is not None and (isinstance(write_timeout, bool) or not write_timeout > 0):
            raise ValueError(f"write_timeout must be a positive number of seconds or None, got {write_timeout!r}")
        self.write_timeout = write_timeout
        self.tickets = tickets
        self._new_clients = None
        if new_clients_per_second is not None:
            self._new_clients = NewClientLimit(new_clients_per_second, new_clients_burst)
        self._translate_error = translate_error
        # Each served path, with and without its trailing slash, to its action: built once, looked up
        # per request.
        served = {"stats": stats_endpoint, "shared_event": shared_streams}
        self._paths = {path: action for path, action in PATHS.items() if served.get(action, True)}
        if serve_client:
            for action, script in SCRIPTS.items():
                self._paths["/" + script] = action
        # The other form of each path (slash added or removed), redirected to the served one.
        self._other_forms = {(path.rstrip("/") if path.endswith("/") else path + "/"): path for path in self._paths}
        self._views: dict[str, Callable[[Request, dict[str, str]], Answer]] = {
            "add_user": self._add_user,
            "add_public_topic": self._add_public_topic,
            "add_private_topic": self._add_private_topic,
            "sub": functools.partial(self._subscription, "sub", Client.sub),
            "unsub": functools.partial(self._subscription, "unsub", Client.unsub),
            "remove_user": self._remove_user,
            "remove_private_topic": self._remove_private_topic,
            "event": self._event,
            "shared_event": self._shared_event,
            "stats": self._stats,
            "presence": functools.partial(presence_view, self),
        }

    @property
    def service(self) -> SSEPubSubService:
        """The service served (built on first use when a function was given)."""
        return self._get_service()

    def paths(self) -> dict[str, str]:
        """Return the paths served below the mount point, each with its action (or the script's, for a script)."""
        return dict(self._paths)

    def action_for(self, path: str) -> str | None:
        """Return the action served at ``path`` (exactly as in :meth:`paths`), or ``None``."""
        return self._paths.get(path)

    def canonical_path(self, path: str) -> str | None:
        """Return the served path that ``path`` is the other form of (slash added or dropped), or ``None``."""
        return self._other_forms.get(path)

    # -- the entry point ----------------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        """Answer ``request``. Never raises: every failure is a JSON error answer."""
        action = self.action_for(request.path)
        answer: Answer
        if action is None:
            canonical = self.canonical_path(request.path)
            answer = error_reply(404, "not found") if canonical is None else redirect(request, canonical)
        elif action in SCRIPTS:
            answer = client_script_reply(request)
        else:
            answer = self._endpoint(action, request)
        if self.cors:
            answer.headers.extend(cors_headers(request, self._any_origin, self._origins))
        return answer

    def _endpoint(self, action: str, request: Request) -> Answer:
        if request.method == "OPTIONS":
            return Reply(200, [("Allow", "GET, POST, OPTIONS"), ("Content-Length", "0")])
        try:
            if request.method not in ("GET", "POST"):
                # HEAD too: GET changes state here (Go compatibility), and /event takes the client's
                # stream over, so a HEAD must not run it.
                raise Refused(405, "method not allowed", {"Allow": ALLOW})
            if not self.enabled.get(action, True):
                option, value = _SWITCHES[action]
                hint = f"this endpoint is off by default: turn it on with {option}={value}"
                raise Refused(403, "forbidden", hint=hint)
            return self._views[action](request, request_params(request, self.max_query_length, self.max_body_size))
        except Refused as refused:
            if refused.status in (413, 414):
                log.info("pubsubsse endpoint %s: request refused: %s", action, refused.message)
            return error_reply(refused.status, refused.message, refused.headers, refused.hint)
        except LimitReached as limit:
            return error_reply(429, f"limit reached: {str(limit).partition(':')[0]}")
        except BackendUnavailable as unavailable:
            log.warning("pubsubsse endpoint %s: backend unavailable: %s", action, unavailable)
            return error_reply(503, "backend unavailable")
        except PubSubError as error:
            return error_reply(
                400,
                _ERROR_MESSAGES.get(type(error), "bad request"),
                hint=error_hint(error, request, self.service.backend.shared),
            )
        except Exception as error:
            translated = self._translate_error(error) if self._translate_error is not None else None
            if translated is not None:
                return error_reply(translated.status, translated.message, translated.headers)
            log.exception("pubsubsse endpoint %s failed", action)
            return error_reply(500, "internal server error")

    def _is_refusal(self, error: Exception) -> bool:
        """Whether the hook refused (``Refused``, or an exception ``translate_error`` answers), not failed."""
        return isinstance(error, Refused) or (
            self._translate_error is not None and self._translate_error(error) is not None
        )

    # -- the rules shared by endpoints ------------------------------------------------------

    def _check(self, request: Request, action: str, client: Client | None, topic: Topic | None = None) -> None:
        if self.authorize is not None and self.authorize(request.native, action, client, topic) is not True:
            raise Refused(403, "forbidden")

    def _find_client(self, params: Mapping[str, str]) -> Client | None:
        client_id = params.get("client_id", "")
        client = self.service.get_client_by_id(client_id) if len(client_id) <= MAX_ID_LENGTH else None
        # The dict lookup hashes the whole id with a per-process random key, so its timing says
        # nothing about how much of a guess was right; the final comparison is constant-time too.
        if client is None or not hmac.compare_digest(client.id.encode(), client_id.encode()):
            return None
        return client

    def _checked_client(self, request: Request, action: str, params: Mapping[str, str]) -> Client:
        """Return the client the request names, once the hook allowed the call.

        The hook is asked first, with ``None`` for an id that names no client, so that a caller
        who may not act learns nothing, not even whether the id exists.
        """
        client = self._find_client(params)
        self._check(request, action, client)
        if client is None:
            raise ClientNotFound(params.get("client_id", ""))
        return client

    def client_and_topic(
        self, request: Request, action: str, params: Mapping[str, str], private_only: bool = False
    ) -> tuple[Client, Topic]:
        """Return the client and the topic (as the client sees it) the request names, once the hook allowed it."""
        client = self._find_client(params)
        topic_id = params.get("topic", "")
        topic = None
        if client is not None and len(topic_id) <= MAX_ID_LENGTH:
            topic = client.get_private_topic_by_id(topic_id) if private_only else client.get_topic_by_id(topic_id)
        self._check(request, action, client, topic)
        if client is None:
            raise ClientNotFound(params.get("client_id", ""))
        if topic is None:
            raise TopicNotFound(topic_id)
        return client, topic

    # -- the endpoints ----------------------------------------------------------------------

    def _add_user(self, request: Request, params: dict[str, str]) -> Answer:
        self._check(request, "add_user", None)
        if self._new_clients is not None:
            self._new_clients.check(request.remote_addr or "unknown")
        user = None if self.identify is None else self.identify(request.native)
        return ok(client_id=self.service.new_client(user=user).id)

    def _add_public_topic(self, request: Request, params: dict[str, str]) -> Answer:
        self._check(request, "add_public_topic", None)
        name = params.get("name")
        if name is not None:  # a named topic, created if absent (any process gives the same one)
            try:
                check_name(name)
            except ValueError as bad:
                raise Refused(400, str(bad)) from None
            return ok(topic_id=self.service.public_topic(name).id)
        return ok(topic_id=self.service.new_public_topic().id)

    def _add_private_topic(self, request: Request, params: dict[str, str]) -> Answer:
        client = self._checked_client(request, "add_private_topic", params)
        return ok(topic_id=client.new_private_topic().id)

    def _subscription(
        self, action: str, change: Callable[..., None], request: Request, params: dict[str, str]
    ) -> Answer:
        client, topic = self.client_and_topic(request, action, params)
        change(client, topic, **since_option(action, params))
        return ok()

    def _remove_user(self, request: Request, params: dict[str, str]) -> Answer:
        client = self._checked_client(request, "remove_user", params)
        # Found here, yet removed already: by another process, whose change this one saw late.
        if not self.service.remove_client(client):
            raise ClientNotFound(client.id)
        return ok()

    def _remove_private_topic(self, request: Request, params: dict[str, str]) -> Answer:
        client, topic = self.client_and_topic(request, "remove_private_topic", params, private_only=True)
        if not client.remove_private_topic(topic):  # removed already, as for /remove/user
            raise TopicNotFound(topic.id)
        return ok()

    def _event(self, request: Request, params: dict[str, str]) -> Answer:
        form = params.get("format", "json")
        if form not in FORMATS:
            raise Refused(400, f"invalid parameter format: expected one of {', '.join(sorted(FORMATS))}")
        ticket = params.get("ticket")
        if ticket is None:
            client = self._checked_client(request, "event", params)
        elif self.tickets is None:
            raise Refused(400, "tickets are not enabled")
        else:
            try:
                client_id = self.tickets.client_id(ticket)
            except BadTicket as bad:
                raise Refused(400, str(bad)) from None
            client = self._checked_client(request, "event", {"client_id": client_id})
        header = request.headers.get("Last-Event-ID")  # wins over the parameter, even empty
        stream = client.stream(params.get("last_event_id") if header is None else header)
        log.debug("stream opened for client %s", short_id(client.id))
        framed = stream if form == "json" else html_stream(stream, turbo=form == "turbo")
        return StreamReply(list(STREAM_HEADERS), framed, self.service, self.end_streams_on_sigterm)

    def _shared_event(self, request: Request, params: dict[str, str]) -> Answer:
        entries = shared_clients(params.get("clients", ""))
        clients: list[Client | None] = []
        refusal: Exception | None = None
        for client_id, _ in entries:
            client = self._find_client({"client_id": client_id})
            try:
                self._check(request, "event", client)
            except Exception as error:
                if not self._is_refusal(error):
                    raise  # a fault of the hook
                # Refused for this client only (a stale id, another user's): announced in the stream
                # like an unknown id, so the other tabs of the browser keep their stream and nobody
                # learns whether the id exists. Refused for every client: the hook's answer.
                refusal = refusal or error
                client = None
            clients.append(client)
        if refusal is not None and all(client is None for client in clients):
            raise refusal
        streams: list[Stream | None] = []
        try:
            for client, (_, last_event_id) in zip(clients, entries):
                stream = None
                # A client removed a moment ago is announced in the stream like an unknown id.
                with contextlib.suppress(ClientNotFound):
                    stream = None if client is None else client.stream(last_event_id)
                streams.append(stream)
        except BaseException:
            for stream in streams:
                if stream is not None:
                    stream.close()
            raise
        if all(stream is None for stream in streams):
            raise ClientNotFound(entries[0][0])
        log.debug("multiplexed stream opened for %d clients", len(streams))
        shared = MultiplexStream(streams)
        return StreamReply(list(STREAM_HEADERS), shared, self.service, self.end_streams_on_sigterm)

    def _stats(self, request: Request, params: dict[str, str]) -> Answer:
        self._check(request, "stats", None)
        return json_reply(200, {"ok": "true", **self.service.stats()})


#: The options :class:`Endpoints` takes, which every adapter takes too.
ENDPOINT_OPTIONS = frozenset(
    name
    for name, parameter in inspect.signature(Endpoints.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "translate_error"
)
