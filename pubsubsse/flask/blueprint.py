"""The Flask adapter: the protocol's endpoints as a blueprint.

A thin layer over ``pubsubsse.web._protocol.Endpoints``: each endpoint is a
URL rule whose view builds the protocol's request from Flask's and turns the
answer into a Flask response.
"""

from __future__ import annotations

from typing import Any, Callable, cast

from flask import Blueprint, Response, request

from pubsubsse.service import SSEPubSubService
from pubsubsse.web._protocol import ACTIONS, Authorize, Endpoints
from pubsubsse.web._wsgi import as_requested, prepare, werkzeug_errors, werkzeug_request, werkzeug_response

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
    ``pubsubsse.web._protocol.Endpoints`` (``public_topic_creation``,
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
            return werkzeug_response(endpoints, answer, request.environ, Response)

        return respond

    for path, action in endpoints.paths().items():
        blueprint.add_url_rule(path, action, view(path), methods=_METHODS, strict_slashes=False)
    return blueprint
