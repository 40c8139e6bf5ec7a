"""The Flask adapter: the protocol's endpoints as a blueprint.

A thin layer over :class:`pubsubsse.protocol.Endpoints`: each endpoint is a
URL rule whose view builds the protocol's request from Flask's and turns the
answer into a Flask response.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable, cast

from flask import Blueprint, Response, request, send_file

from ..protocol import ACTIONS, Authorize, Endpoints, FileReply, Reply
from ..service import SSEPubSubService
from ..tickets import StreamTickets
from ..wsgi import prepare, start_stream, werkzeug_errors, werkzeug_request

__all__ = ["create_blueprint", "ACTIONS", "Authorize"]

#: Every method is routed to the protocol, which answers those it does not serve (405).
_METHODS = ["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"]


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
    """Return a Flask blueprint serving ``service``'s endpoints.

    Register it with any ``url_prefix``::

        app.register_blueprint(create_blueprint(service), url_prefix="/sse")

    ``name`` is the blueprint's name: give each blueprint a different one if
    you register several. The other options are those of
    :class:`~pubsubsse.protocol.Endpoints`, where each is described. The
    ``authorize`` hook receives Flask's ``request`` and may raise Werkzeug's
    ``Unauthorized`` or ``Forbidden`` to choose the answer. Stream settings
    (heartbeat, retry, replay size, queue size, client timeout) are options of
    the :class:`~pubsubsse.SSEPubSubService`. Most apps use the
    :class:`~pubsubsse.PubSubSSE` extension, which builds this blueprint from
    the app's configuration.
    """
    endpoints = prepare(
        Endpoints(
            service,
            public_topic_creation=public_topic_creation,
            private_topics=private_topics,
            client_removal=client_removal,
            authorize=authorize,
            cors_origins=cors_origins,
            max_query_length=max_query_length,
            max_body_size=max_body_size,
            end_streams_on_sigterm=end_streams_on_sigterm,
            serve_client=serve_client,
            direct_writes=direct_writes,
            tickets=tickets,
            new_clients_per_second=new_clients_per_second,
            new_clients_burst=new_clients_burst,
            stats_endpoint=stats_endpoint,
            translate_error=werkzeug_errors,
        )
    )
    blueprint = Blueprint(name, __name__)

    def view(path: str) -> Callable[[], Response]:
        def respond() -> Response:
            # The request itself, not Flask's proxy: the authorize hook may keep it.
            answer = endpoints.handle(werkzeug_request(cast(Any, request)._get_current_object(), path))
            if isinstance(answer, Reply):
                return Response(answer.body, status=answer.status, headers=answer.headers)
            if isinstance(answer, FileReply):
                response = send_file(answer.path, mimetype=answer.content_type, max_age=answer.max_age)
                response.headers.extend(answer.headers)
                return response
            body = start_stream(endpoints, answer, request.environ)
            return Response(body, status=answer.status, headers=answer.headers, direct_passthrough=True)

        return respond

    for path, action in endpoints.paths().items():
        blueprint.add_url_rule(path, action, view(path), methods=_METHODS, strict_slashes=False)
    return blueprint
