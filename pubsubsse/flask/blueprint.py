"""The Flask adapter: the protocol's endpoints as a blueprint.

A thin layer over :class:`pubsubsse.protocol.Endpoints`: each endpoint is a
URL rule whose view builds the protocol's request from Flask's and turns the
answer into a Flask response.
"""

from __future__ import annotations

from typing import Any, Callable, cast

from flask import Blueprint, Response, request, send_file

from ..protocol import ACTIONS, Authorize, Endpoints, FileReply, Reply
from ..service import SSEPubSubService
from ..wsgi import as_requested, prepare, start_stream, werkzeug_errors, werkzeug_request

__all__ = ["create_blueprint", "ACTIONS", "Authorize"]

#: Every method is routed to the protocol, which answers those it does not serve (405).
_METHODS = ["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"]


def create_blueprint(
    service: SSEPubSubService | Callable[[], SSEPubSubService], *, name: str = "pubsubsse", **options: Any
) -> Blueprint:
    """Return a Flask blueprint serving ``service``'s endpoints.

    Register it with any ``url_prefix``::

        app.register_blueprint(create_blueprint(service), url_prefix="/sse")

    ``name`` is the blueprint's name: give each blueprint a different one if
    you register several. ``options`` are those of
    :class:`~pubsubsse.protocol.Endpoints` (``public_topic_creation``,
    ``authorize``, ``cors_origins``, ``tickets``, ...), where each is
    described; an unknown one raises :class:`TypeError`. The ``authorize``
    hook receives Flask's ``request`` and may raise Werkzeug's
    ``Unauthorized`` or ``Forbidden`` to choose the answer. Stream settings
    (heartbeat, retry, replay size, queue size, client timeout) are options of
    the :class:`~pubsubsse.SSEPubSubService`. Most apps use the
    :class:`~pubsubsse.PubSubSSE` extension, which builds this blueprint from
    the app's configuration.
    """
    endpoints = prepare(Endpoints(service, translate_error=werkzeug_errors, **options))
    blueprint = Blueprint(name, __name__)

    def view(path: str) -> Callable[[], Response]:
        def respond() -> Response:
            # The request itself, not Flask's proxy: the authorize hook may keep it.
            native = cast(Any, request)._get_current_object()
            answer = endpoints.handle(werkzeug_request(native, as_requested(path, native.path)))
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
