"""The pubsubsse demo: a Flask app with the PubSubSSE extension and named topics.

    .venv/bin/python -m gunicorn -k gevent -b 127.0.0.1:8080 example.app:app

Like the Go example, every new client is subscribed to a public "ticker" topic fed by a periodic
publisher. The page also creates public and private topics, joins a group with its own topic,
subscribes and unsubscribes, and publishes messages, all through the protocol's endpoints plus a
few demo routes under /demo (publishing is the app's business, not the protocol's).

The ticker, the announcements and the lobby's chat are named topics (``T-ticker``,
``T-announcements``, ``T-lobby/chat``): the same ids after a restart, so a page that reconnects to
a restarted server finds them again. ``PUBSUBSSE_REDIS_URL`` in the environment shares the demo
among several workers (``-w 4``); the ticker then runs in every worker, which shows as several
ticks a second.

The chat has live presence: each browser gets a guest name in a cookie, ``identify`` gives it to
the clients its tabs register, and the page shows who is in the chat (people, not tabs).
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import secrets
import threading
import time
from collections import deque

from flask import Flask, jsonify, render_template, request

from pubsubsse import PubSubSSE

log = logging.getLogger(__name__)

TICK_SECONDS = float(os.environ.get("DEMO_TICK_SECONDS", "1"))
MAX_NAME = 40
MAX_TEXT = 500

GUEST_COOKIE = "demo_guest"


def guest_of(request) -> str | None:
    """The guest name in the browser's cookie (set by the page): the user of the clients its tabs register."""
    name = request.cookies.get(GUEST_COOKIE, "")
    return name if re.fullmatch(r"guest-[0-9a-f]{4}", name) else None


pubsub = PubSubSSE(public_topic_creation=True, client_timeout=120, url_prefix="", identify=guest_of)


def display_name(topic_id: str) -> str:
    """``T-lobby/chat`` -> ``Lobby chat``; a random id (a private topic) -> its first characters."""
    name = topic_id[2:]
    if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f-]{27}", name):
        return name[:8]
    return name.replace("/", " ").replace("-", " ").capitalize()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        PUBSUBSSE_HEARTBEAT=float(os.environ.get("PUBSUBSSE_HEARTBEAT", "15")),
        PUBSUBSSE_RETRY=float(os.environ.get("PUBSUBSSE_RETRY", "2")),
    )
    if os.environ.get("PUBSUBSSE_REDIS_URL"):
        app.config["PUBSUBSSE_REDIS_URL"] = os.environ["PUBSUBSSE_REDIS_URL"]
    pubsub.init_app(app)
    with app.app_context():
        service = pubsub.service
    # Declared at startup: every worker has them before a page subscribes (named topics are made on first use).
    ticker = service.public_topic("ticker")
    chat = service.public_topic("chat", presence=True)  # subscribers are told who comes and goes
    service.public_topic("announcements")
    lobby = service.group("lobby")
    lobby.topic("chat")
    subscribed_at_start = (ticker, chat)  # the chat box needs a topic the tab hears

    def subscribe_new_client(client) -> None:
        for topic in subscribed_at_start:
            client.sub(topic)

    service.on_new_client.listen(subscribe_new_client)
    names: dict[str, str] = {}  # what users typed, for the topics they made
    names_lock = threading.Lock()
    recent_ticks: deque[dict] = deque(maxlen=60)  # drawn at once by a new page, before its stream is open

    def publish_ticks() -> None:
        value = 100.0
        n = 0
        while True:
            time.sleep(TICK_SECONDS)
            n += 1
            value = max(1.0, value + random.gauss(0, 1.5) + math.sin(n / 9))
            tick = {"n": n, "value": round(value, 2), "at": time.time()}
            recent_ticks.append(tick)
            ticker.pub(tick)

    threading.Thread(target=publish_ticks, name="demo-ticker", daemon=True).start()

    def error(message: str, status: int = 400):
        return jsonify({"ok": "false", "error": message}), status

    def form() -> dict[str, str]:
        data = request.get_json(silent=True) if request.is_json else request.form
        return {k: v for k, v in (data or {}).items() if isinstance(v, str)}

    def client_or_none(params: dict[str, str]):
        return service.get_client_by_id(params.get("client_id", ""))

    @app.get("/")
    def index():
        # What a new tab will see once its stream is open, drawn before it is: the page is worth
        # a look from its first frame (its script then takes over from the stream).
        subscribed = {t.id for t in subscribed_at_start}
        with names_lock:
            topics = [
                {"id": t, "type": "public", "subscribed": t in subscribed, "name": names.get(t) or display_name(t)}
                for t in service.get_public_topics()
            ]
        initial = {"topics": topics, "ticks": list(recent_ticks), "in_chat": chat.present_users()}
        guest = guest_of(request) or f"guest-{secrets.token_hex(2)}"
        page = app.make_response(
            render_template("index.html", ticker_id=ticker.id, chat_id=chat.id, initial=initial, guest=guest)
        )
        page.set_cookie(GUEST_COOKIE, guest, max_age=30 * 86400, samesite="Lax", httponly=True)
        return page

    @app.get("/demo/names")
    def topic_names():
        client = client_or_none(request.args)
        if client is None:
            return error("client not found")
        visible = client.get_all_topics()
        with names_lock:
            return jsonify({tid: names.get(tid) or display_name(tid) for tid in visible})

    @app.post("/demo/topic/public")
    def create_public_topic():
        typed = form().get("name", "").strip()[:MAX_NAME] or "Untitled"
        slug = re.sub(r"[^A-Za-z0-9._:-]+", "-", typed.lower()).strip("-") or "untitled"
        topic = service.public_topic(slug)  # the same topic for everyone who types the same name
        with names_lock:
            names.setdefault(topic.id, typed)
        return jsonify({"ok": "true", "topic_id": topic.id})

    @app.post("/demo/topic/public/remove")
    def remove_public_topic():
        topic = service.get_public_topic_by_id(form().get("topic", ""))
        if topic is None:
            return error("topic not found")
        if topic is ticker:
            return error("the ticker stays", 403)
        service.remove_public_topic(topic)
        with names_lock:
            names.pop(topic.id, None)
        return jsonify({"ok": "true"})

    @app.post("/demo/topic/private")
    def create_private_topic():
        params = form()
        client = client_or_none(params)
        if client is None:
            return error("client not found")
        name = params.get("name", "").strip()[:MAX_NAME] or "Private notes"
        topic = client.new_private_topic()
        with names_lock:
            names[topic.id] = name
        return jsonify({"ok": "true", "topic_id": topic.id})

    @app.post("/demo/group/<action>")
    def group_membership(action: str):
        client = client_or_none(form())
        if client is None:
            return error("client not found")
        if action == "join":
            lobby.add_client(client)
        elif action == "leave":
            lobby.remove_client(client)
        else:
            return error("unknown action", 404)
        return jsonify({"ok": "true"})

    @app.post("/demo/publish")
    def publish():
        params = form()
        client = client_or_none(params)
        if client is None:
            return error("client not found")
        topic = client.get_topic_by_id(params.get("topic", ""))
        if topic is None:
            return error("topic not found")
        if topic is ticker:
            return error("the ticker is the server's", 403)
        text = params.get("text", "").strip()[:MAX_TEXT]
        if not text:
            return error("empty message")
        topic.pub({"from": client.user or "someone", "text": text, "at": time.time()})
        return jsonify({"ok": "true"})

    return app


app = create_app()
