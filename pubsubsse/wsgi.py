"""The protocol as a plain WSGI application, and what every WSGI adapter shares.

::

    from pubsubsse import SSEPubSubService
    from pubsubsse.wsgi import make_wsgi_app

    service = SSEPubSubService()
    sse = make_wsgi_app(service, public_topic_creation=True)

Mount ``sse`` anywhere a WSGI application can be mounted: under ``/sse`` with
Werkzeug's ``DispatcherMiddleware(app, {"/sse": sse})``, as a Pyramid or
Bottle mount, or as the whole app. The endpoints are found from ``PATH_INFO``
(``SCRIPT_NAME`` holds the mount point). The ``authorize`` hook receives a
:class:`werkzeug.wrappers.Request`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Callable

from werkzeug.exceptions import HTTPException
from werkzeug.utils import send_file
from werkzeug.wrappers import Request as WerkzeugRequest

from .protocol import Endpoints, FileReply, Refused, Reply, Request, StreamReply
from .runtime import concurrency
from .servers import shutdown
from .servers.body import StreamBody
from .servers.gunicorn_gevent import DirectStreamBody, SharedStreamBody, direct_framing
from .service import SSEPubSubService
from .shared import SharedStream
from .stream import Stream

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["make_wsgi_app", "WSGIApp", "stream_body", "werkzeug_request", "werkzeug_errors"]

log = logging.getLogger(__name__)


_warned_blocking = False


def stream_body(
    stream: Stream | SharedStream,
    environ: dict[str, Any],
    direct_writes: bool = True,
    write_timeout: float | None = None,
) -> StreamBody:
    """Return the WSGI body for ``stream``: released from the server under gunicorn's gevent worker where allowed.

    A client's stream is then written by its publishers directly; a shared stream (several
    clients on one connection) by the process's writer greenlet. Either way an idle
    stream holds no greenlet.
    """
    framing = direct_framing(environ) if direct_writes else None
    if framing is None:
        return StreamBody(stream, environ)
    if isinstance(stream, Stream):
        return DirectStreamBody(stream, environ, framing, write_timeout)
    return SharedStreamBody(stream, environ, framing, write_timeout)


def start_stream(endpoints: Endpoints, reply: StreamReply, environ: dict[str, Any]) -> StreamBody:
    """Return the body of a stream answer, once SIGTERM is set to end it (if the endpoints say so)."""
    global _warned_blocking
    if not _warned_blocking and concurrency(environ) == "none":
        _warned_blocking = True
        log.warning(
            "pubsubsse: this server runs one request at a time per process (wsgi.multithread is false), so "
            "each open stream blocks it: use gunicorn -k gevent or a threaded server"
        )
    if reply.end_on_sigterm:
        shutdown.close_streams_on_sigterm(reply.service)
    return stream_body(reply.stream, environ, endpoints.direct_writes, endpoints.write_timeout)


def prepare(endpoints: Endpoints) -> Endpoints:
    """Set SIGTERM to end the endpoints' streams, if they say so (a service built later joins at its first stream)."""
    if endpoints.end_streams_on_sigterm:
        if endpoints.service_is_built:
            shutdown.close_streams_on_sigterm(endpoints.service)
        else:
            shutdown.install_handler()
    return endpoints


def as_requested(path: str, requested: str) -> str:
    """Return the served ``path`` with a trailing slash exactly when the ``requested`` one has it.

    Framework routes match both forms of a path; the protocol redirects the
    form it does not serve, so it must see the form that was asked for.
    """
    bare = path.rstrip("/")
    return bare + "/" if requested.endswith("/") else bare


def werkzeug_errors(error: Exception) -> Refused | None:
    """Map Werkzeug's HTTP exceptions (``Unauthorized``, ``Forbidden``, ...) raised by a hook to their answer."""
    if isinstance(error, HTTPException):
        return Refused(error.code or 400, error.description or error.name)
    return None


def werkzeug_request(request: WerkzeugRequest, path: str) -> Request:
    """Build the protocol's request from a Werkzeug (or Flask) request; ``path`` is below the mount point."""
    return Request(
        method=request.method,
        path=path,
        query_string=request.query_string,
        headers=request.headers,
        remote_addr=request.remote_addr,
        content_type=request.mimetype,
        content_length=request.content_length,
        read_body=request.stream.read,
        native=request,
        url_path=request.root_path + request.path,
        multiprocess=bool(request.environ.get("wsgi.multiprocess")),
    )


class WSGIApp:
    """The endpoints as a WSGI application (see :func:`make_wsgi_app`)."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = prepare(endpoints)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        request = WerkzeugRequest(environ)
        answer = self.endpoints.handle(werkzeug_request(request, request.path))
        if isinstance(answer, Reply):
            start_response(_status_line(answer.status), answer.headers)
            return [answer.body]
        if isinstance(answer, FileReply):
            response = send_file(answer.path, environ, mimetype=answer.content_type, max_age=answer.max_age)
            response.headers.extend(answer.headers)
            return response(environ, start_response)
        body = start_stream(self.endpoints, answer, environ)
        start_response(_status_line(answer.status), answer.headers)
        return body


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def make_wsgi_app(service: SSEPubSubService | Callable[[], SSEPubSubService], **options: Any) -> WSGIApp:
    """Return a WSGI application serving ``service``'s endpoints.

    ``options`` are those of :class:`~pubsubsse.protocol.Endpoints` (the
    same as :func:`~pubsubsse.flask.blueprint.create_blueprint`'s). A hook may raise
    Werkzeug's ``Unauthorized`` or ``Forbidden`` to choose the answer.
    """
    options.setdefault("translate_error", werkzeug_errors)
    return WSGIApp(Endpoints(service, **options))
