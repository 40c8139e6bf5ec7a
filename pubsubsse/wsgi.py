"""The protocol as a plain WSGI application.

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

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable

from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wrappers import Response as WerkzeugResponse

from pubsubsse.service import SSEPubSubService
from pubsubsse.web._protocol import Endpoints
from pubsubsse.web._wsgi import prepare, werkzeug_errors, werkzeug_request, werkzeug_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["make_wsgi_app", "WSGIApp"]


class WSGIApp:
    """The endpoints as a WSGI application (see :func:`make_wsgi_app`)."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = prepare(endpoints)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        request = WerkzeugRequest(environ)
        answer = self.endpoints.handle(werkzeug_request(request, request.path))
        return werkzeug_response(self.endpoints, answer, environ, WerkzeugResponse)(environ, start_response)


def make_wsgi_app(service: SSEPubSubService | Callable[[], SSEPubSubService], **options: Any) -> WSGIApp:
    """Return a WSGI application serving ``service``'s endpoints.

    ``options`` are those of :class:`~pubsubsse.web.Endpoints` (the
    same as :func:`~pubsubsse.flask.blueprint.create_blueprint`'s). A hook may raise
    Werkzeug's ``Unauthorized`` or ``Forbidden`` to choose the answer.
    """
    options.setdefault("translate_error", werkzeug_errors)
    return WSGIApp(Endpoints(service, **options))
