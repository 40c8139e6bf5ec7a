"""The HTTP layer without I/O: the endpoints as a function from a request to an answer.

:class:`Endpoints` takes a :class:`Request` (method, path, query, body, headers)
and returns a :class:`Reply`, a :class:`StreamReply` (an SSE stream) or a
:class:`FileReply` (the browser client). The Flask blueprint, the plain-WSGI app
and the Django views are thin adapters over it; an adapter for another server
does what they do. The modules of this package are private; these names are
its API.
"""

from __future__ import annotations

from pubsubsse.web._http import FileReply, Headers, Refused, Reply, Request, StreamReply
from pubsubsse.web._protocol import ACTIONS, ENDPOINT_OPTIONS, PATHS, Authorize, Endpoints
from pubsubsse.web._scripts import client_script
from pubsubsse.web._tickets import BadTicket, StreamTickets

__all__ = [
    "ACTIONS",
    "ENDPOINT_OPTIONS",
    "PATHS",
    "Authorize",
    "BadTicket",
    "Endpoints",
    "FileReply",
    "Headers",
    "Refused",
    "Reply",
    "Request",
    "StreamReply",
    "StreamTickets",
    "client_script",
]
