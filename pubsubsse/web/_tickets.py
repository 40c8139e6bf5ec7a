"""Short-lived signed stream tickets: an ``/event`` URL that does not carry the client id.

A client id is a credential: whoever knows it can subscribe for the client and
read its stream. ``EventSource`` can only pass it in the URL, where it ends up
in server logs, proxy logs and browser history. A ticket stands for the id in
that URL instead; it is signed with the app's secret (itsdangerous, an HMAC),
names one client and expires after ``max_age`` seconds, so a leaked URL is
useless soon after::

    tickets = StreamTickets(app.secret_key, max_age=60)
    app.register_blueprint(create_blueprint(service, tickets=tickets), url_prefix="/sse")

    @app.get("/stream-url")
    @login_required
    def stream_url():
        return {"url": f"/sse/event?ticket={tickets.issue(client_of_current_user())}"}

A ticket is checked when a stream opens, so a browser that reconnects after it
expired gets 400 ``ticket expired`` and must fetch a new URL.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

if TYPE_CHECKING:
    from pubsubsse.handles import Client

__all__ = ["StreamTickets", "BadTicket"]


class BadTicket(ValueError):
    """A ticket that is forged, damaged, for another purpose, or expired (``expired`` tells which)."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class StreamTickets:
    """Issues and checks stream tickets signed with ``secret_key``.

    ``max_age`` (seconds, default 60) is how long a ticket opens streams.
    ``salt`` separates these signatures from others made with the same
    secret (Flask's session cookie, for one); change it to invalidate every
    ticket at once.
    """

    def __init__(self, secret_key: str | bytes, max_age: float = 60, salt: str = "pubsubsse.stream-ticket") -> None:
        if not secret_key:
            raise ValueError("StreamTickets needs a secret key, for example app.secret_key")
        if not max_age > 0:
            raise ValueError(f"max_age must be > 0 seconds (got {max_age!r})")
        self._serializer = URLSafeTimedSerializer(secret_key, salt=salt)
        self.max_age = max_age

    def issue(self, client: Client | str) -> str:
        """Return a ticket for ``client`` (a :class:`~pubsubsse.Client` or its id), URL-safe."""
        return self._serializer.dumps(client if isinstance(client, str) else client.id)

    def client_id(self, ticket: str) -> str:
        """Return the client id a valid ticket stands for; raise :class:`~pubsubsse.web.BadTicket` otherwise."""
        try:
            # Signing times are whole seconds, so a whole number of seconds loses nothing.
            client_id = self._serializer.loads(ticket, max_age=math.ceil(self.max_age))
        except SignatureExpired:
            raise BadTicket("ticket expired", expired=True) from None
        except (BadSignature, UnicodeError):
            raise BadTicket("invalid ticket") from None
        if not isinstance(client_id, str):
            raise BadTicket("invalid ticket")
        return client_id
