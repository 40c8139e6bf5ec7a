"""Authorization recipe: pubsubsse behind Flask-Login, one client per logged-in user.

    .venv/bin/python -m gunicorn -k gevent -b 127.0.0.1:8081 example.auth_app:app

What it shows (docs/authorization.md explains each part):

* Clients are created by the server, one per user, never by ``/add/user``:
  :func:`client_of_user` binds a client to the logged-in user.
* The ``authorize`` hook lets a request act only on the current user's own
  client; everything else is 401 (not logged in) or 403.
* Private topics are per client, so per user; groups are made by server
  code (here: teams) and only their members see their topics.
* Public topics are created by server code only (``public_topic_creation``
  stays off).
* The stream URL carries a short-lived signed ticket, not the client id.
* The session cookie is ``SameSite=Lax`` and ``HttpOnly``, and every request that can change
  state must come from the app's own pages (:func:`same_origin`): a page on another site cannot
  make the user's browser act. The SSE endpoints count too, because they change state on GET
  (as the Go server's did).

Users and passwords are a toy table; use your own user store.
"""

from __future__ import annotations

import hmac
import os
import threading

from flask import Flask, abort, jsonify, request
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from werkzeug.exceptions import Forbidden, Unauthorized

from pubsubsse import Client, SSEPubSubService, StreamTickets, Topic, create_blueprint

#: username -> (password, team). A real app checks hashed passwords in its user store.
USERS = {"alice": ("alice-pw", "red"), "bob": ("bob-pw", "blue"), "carol": ("carol-pw", "red")}


def same_origin() -> bool:
    """Return whether the request comes from a page of this app, as the browser reports it.

    Browsers send ``Sec-Fetch-Site`` with every request, and ``Origin`` with every cross-origin
    one and every POST; a request with neither did not come from a browser page, so no cookie of
    the user was sent on its behalf by another site.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")  # "none": the user typed the address
    origin = request.headers.get("Origin")
    return origin is None or origin == request.host_url.rstrip("/")


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name
        self.team = USERS[name][1]


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = os.environ.get("SECRET_KEY") or os.urandom(32)
    app.config.update(
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=os.environ.get("SESSION_COOKIE_SECURE") == "1",  # set it when served over HTTPS
    )
    login = LoginManager(app)
    service = SSEPubSubService(heartbeat=float(os.environ.get("PUBSUBSSE_HEARTBEAT", "15")))
    tickets = StreamTickets(app.secret_key, max_age=float(os.environ.get("TICKET_MAX_AGE", "60")))

    # Which client belongs to which user, and the reverse. With redis_url, keep this in Redis too.
    clients_by_user: dict[str, str] = {}
    owners: dict[str, str] = {}
    teams = {team: service.new_group() for _, team in USERS.values()}
    for group in teams.values():
        group.new_topic()  # each team starts with one topic of its own
    news = service.new_public_topic()
    lock = threading.Lock()

    @app.before_request
    def refuse_cross_site_requests():
        """CSRF defence: state changes only from the app's own pages (every /sse/ call counts)."""
        if (request.method not in ("GET", "HEAD", "OPTIONS") or request.path.startswith("/sse/")) and not same_origin():
            abort(403, "cross-site request refused")

    @login.user_loader
    def load_user(name: str) -> User | None:
        return User(name) if name in USERS else None

    def client_of_user(user: User) -> Client:
        """Return the user's client, creating it (and joining the user's team) on first use."""
        with lock:
            client_id = clients_by_user.get(user.id)
            client = service.get_client_by_id(client_id) if client_id else None
            if client is None:  # first use, or the client expired while the user was away
                client = service.new_client()
                clients_by_user[user.id] = client.id
                owners[client.id] = user.id
                teams[user.team].add_client(client)
                client.sub(news)
            return client

    def authorize(req, action: str, client: Client | None, topic: Topic | None) -> bool:
        if not current_user.is_authenticated:
            raise Unauthorized("log in first")
        if action in ("add_user", "remove_user", "add_public_topic"):
            raise Forbidden("clients and public topics are made by the server")
        if client is None or owners.get(client.id) != current_user.id:
            raise Forbidden("not your client")
        return True

    app.register_blueprint(
        create_blueprint(service, authorize=authorize, tickets=tickets, client_removal=False), url_prefix="/sse"
    )

    @app.post("/login")
    def log_in():
        name = request.form.get("username", "")
        password = request.form.get("password", "")
        expected = USERS.get(name, ("", ""))[0]
        # Compare in constant time even for unknown names, so timing does not reveal which exist.
        if not hmac.compare_digest(password.encode(), expected.encode()) or not expected:
            abort(401)
        login_user(User(name))
        return jsonify(ok=True)

    @app.post("/logout")
    def log_out():
        logout_user()
        return jsonify(ok=True)

    @app.get("/me")
    @login_required
    def me():
        """What the page needs: its client id (for /sub and friends) and a stream URL with a fresh ticket."""
        client = client_of_user(current_user)
        return jsonify(
            client_id=client.id,
            stream_url=f"/sse/event?ticket={tickets.issue(client)}",
            team_topics=[t.id for t in teams[current_user.team].get_topics().values()],
        )

    @app.post("/team/topic")
    @login_required
    def new_team_topic():
        """Server code decides who may create group topics: here, any member, for their own team."""
        return jsonify(topic_id=teams[current_user.team].new_topic().id)

    @app.post("/team/say")
    @login_required
    def say():
        topic = teams[current_user.team].get_topic_by_id(request.form.get("topic", ""))
        if topic is None:
            abort(404)
        topic.pub({"from": current_user.id, "text": request.form.get("text", "")[:500]})
        return jsonify(ok=True)

    return app


app = create_app()
