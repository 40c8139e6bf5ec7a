"""Turning the protocol's answers into WSGI responses: what the Flask, Django and plain-WSGI adapters share.

A stream answer becomes a body that the server in use can carry best (released
from the server under gunicorn's gevent worker, see :mod:`pubsubsse.servers`),
with SIGTERM set to end it; a Werkzeug (or Flask) request becomes the
protocol's :class:`~pubsubsse.web.Request`.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar, cast

from werkzeug.exceptions import HTTPException
from werkzeug.utils import send_file
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wrappers import Response as WerkzeugResponse

from pubsubsse.servers import _shutdown as shutdown
from pubsubsse.servers._body import StreamBody
from pubsubsse.servers._gunicorn_gevent import DirectStreamBody, MultiplexBody, direct_framing
from pubsubsse.servers._runtime import concurrency
from pubsubsse.streams._multiplex import MultiplexStream
from pubsubsse.streams._stream import Stream
from pubsubsse.web._http import Answer, FileReply, Refused, Reply, Request, StreamReply
from pubsubsse.web._protocol import Endpoints

__all__ = [
    "stream_body",
    "start_stream",
    "werkzeug_response",
    "prepare",
    "as_requested",
    "werkzeug_errors",
    "werkzeug_request",
]

log = logging.getLogger(__name__)

_warned_blocking = False

R = TypeVar("R", bound=WerkzeugResponse)


def stream_body(
    stream: Stream | MultiplexStream,
    environ: dict[str, Any],
    direct_writes: bool = True,
    write_timeout: float | None = None,
) -> StreamBody:
    """Return the WSGI body for ``stream``: released from the server under gunicorn's gevent worker where allowed.

    A client's stream is then written by its publishers directly; a multiplexed stream (several
    clients on one connection) by the process's writer greenlet. Either way an idle
    stream holds no greenlet.
    """
    framing = direct_framing(environ) if direct_writes else None
    if framing is None:
        return StreamBody(stream, environ)
    if isinstance(stream, Stream):
        return DirectStreamBody(stream, environ, framing, write_timeout)
    return MultiplexBody(stream, environ, framing, write_timeout)


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


def werkzeug_response(endpoints: Endpoints, answer: Answer, environ: dict[str, Any], response_class: type[R]) -> R:
    """Return the protocol's answer as a Werkzeug response of ``response_class`` (Flask's ``Response`` is one)."""
    if isinstance(answer, Reply):
        return response_class(answer.body, status=answer.status, headers=answer.headers)
    if isinstance(answer, FileReply):
        response = send_file(
            answer.path, environ, mimetype=answer.content_type, max_age=answer.max_age, response_class=response_class
        )
        response.headers.extend(answer.headers)
        return cast(R, response)
    body = start_stream(endpoints, answer, environ)
    return response_class(body, status=answer.status, headers=answer.headers, direct_passthrough=True)


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
