"""The app the HTTP tests run under real servers, with test-only control routes under /test.

Configured by environment variables so that one module serves every server
kind: ``PUBSUBSSE_HEARTBEAT``, ``PUBSUBSSE_REPLAY``, ``PUBSUBSSE_QUEUE``,
``PUBSUBSSE_CLIENT_TIMEOUT`` (``none`` disables), ``PUBSUBSSE_CORS``, ``PUBSUBSSE_NEW_CLIENT_RATE``
(``none``, the default here, disables the limit on new clients) and ``PUBSUBSSE_NEW_CLIENT_BURST``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
from collections import Counter

from flask import Flask, Response, request

from pubsubsse import SSEPubSubService, Stream, create_blueprint


def _env_number(name, default, kind=float):
    value = os.environ.get(name)
    if value is None:
        return default
    return None if value == "none" else kind(value)


def _backend_options() -> dict:
    """The backend the environment asks for: PostgreSQL, Redis, or none (in-process)."""
    if "PUBSUBSSE_POSTGRES_DSN" in os.environ:
        from pubsubsse.backends.postgres import PostgresBackend

        name = os.environ.get("PUBSUBSSE_POSTGRES_NAME", "pubsubsse")
        return {"backend": PostgresBackend(os.environ["PUBSUBSSE_POSTGRES_DSN"], name=name)}
    # A Redis Cluster's node, when given: PUBSUBSSE_REDIS_URL is then only where the tests count events.
    cluster_url = os.environ.get("PUBSUBSSE_REDIS_CLUSTER_URL")
    url = cluster_url or os.environ.get("PUBSUBSSE_REDIS_URL")
    key = os.environ.get("PUBSUBSSE_REDIS_KEY", "pubsubsse:log")
    snapshot_every = int(os.environ.get("PUBSUBSSE_REDIS_SNAPSHOT_EVERY", "10000"))
    if url:
        from pubsubsse.backends import RedisBackend

        backend = RedisBackend(
            url,
            key=key,
            cluster=bool(cluster_url),
            partitions=int(os.environ.get("PUBSUBSSE_REDIS_PARTITIONS", "1")),
            snapshot_every=snapshot_every,
            timeout=float(os.environ.get("PUBSUBSSE_REDIS_TIMEOUT", "5")),
            alive=float(os.environ.get("PUBSUBSSE_REDIS_ALIVE", "30")),
        )
        return {"backend": backend}
    return {}


def service_options() -> dict:
    return dict(
        heartbeat=_env_number("PUBSUBSSE_HEARTBEAT", 15.0),
        retry=0.5,
        replay_size=_env_number("PUBSUBSSE_REPLAY", 1000, int),
        queue_size=_env_number("PUBSUBSSE_QUEUE", 1000, int),
        client_timeout=_env_number("PUBSUBSSE_CLIENT_TIMEOUT", None),
        **_backend_options(),
    )


def main_options() -> dict:
    cors = os.environ.get("PUBSUBSSE_CORS")
    return dict(
        public_topic_creation=True,
        cors_origins=cors.split(",") if cors else None,
        new_clients_per_second=_env_number("PUBSUBSSE_NEW_CLIENT_RATE", None),
        new_clients_burst=_env_number("PUBSUBSSE_NEW_CLIENT_BURST", 100, int),
        stats_endpoint=True,
        write_timeout=_env_number("PUBSUBSSE_WRITE_TIMEOUT", None),
    )


#: The second mount: every option spelt out, since Django's overrides its settings' options.
LOCKED_OPTIONS = dict(
    public_topic_creation=False,
    private_topics=False,
    client_removal=False,
    end_streams_on_sigterm=False,
    cors_origins=None,
    new_clients_per_second=10.0,
    new_clients_burst=100,
    stats_endpoint=False,
)


def create_app():
    adapter = os.environ.get("PUBSUBSSE_ADAPTER", "flask")
    if adapter == "django":
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_settings")
        django.setup()
        from pubsubsse.django import get_service

        service = get_service()
    else:
        service = SSEPubSubService(**service_options())
    status_events: Counter = Counter()
    shared = None
    if os.environ.get("PUBSUBSSE_REDIS_URL"):  # count across the cluster, to show each fires once
        import redis

        shared = redis.Redis.from_url(os.environ["PUBSUBSSE_REDIS_URL"])
    events_key = os.environ.get("PUBSUBSSE_REDIS_KEY", "pubsubsse:log") + ":status-events"

    def record_status(client_id, status):
        if shared is not None:
            shared.hincrby(events_key, f"{client_id} {status.value}", 1)
        else:
            status_events.update([(client_id, status.value)])

    counted: set[str] = set()

    def count_status(client):
        if client.id not in counted:
            counted.add(client.id)
            client.on_status_change.listen(lambda status: record_status(client.id, status))

    service.on_new_client.listen(count_status)
    app = Flask(__name__)
    if adapter == "flask":
        app.register_blueprint(
            create_blueprint(service, **main_options()), url_prefix=os.environ.get("PUBSUBSSE_PREFIX", "")
        )
        app.register_blueprint(create_blueprint(service, name="locked", **LOCKED_OPTIONS), url_prefix="/locked")

    @app.before_request
    def count_status_here():
        # Listeners belong to a process; with Redis a stream may be held by a process other than
        # the one that created its client, so each process instruments the clients it streams.
        if request.path.endswith("/event"):
            client = service.get_client_by_id(request.args.get("client_id", ""))
            if client is not None:
                count_status(client)

    def reply(body, status=200):
        return Response(json.dumps(body), status=status, mimetype="application/json")

    @app.route("/test/ready")
    def ready():
        return reply({"pid": os.getpid(), "process": service.process_token})

    @app.route("/test/tokens")
    def tokens():
        """Each client's stream token: which process holds its stream (``<process token>:<n>``)."""
        service.sync()
        return reply({cid: c._record.stream_token for cid, c in service.get_clients().items()})

    @app.route("/test/pub", methods=["POST"])
    def pub():
        from pubsubsse import BackendUnavailable

        try:
            service.sync()
            body = request.get_json()
            topic = next(
                (
                    t
                    for c in service.get_clients().values()
                    for t in c.get_all_topics().values()
                    if t.id == body["topic"]
                ),
                None,
            ) or service.get_public_topic_by_id(body["topic"])
            for data in body["data"]:
                topic.pub(data)
        except BackendUnavailable as error:  # the fault tests tell "not applied" from "not known"
            return reply({"ok": False, "unknown": bool(getattr(error, "outcome_unknown", False))}, 503)
        return reply({"ok": True})

    @app.route("/test/digest")
    def digest():
        """This worker's whole state, hashed, once it has caught up with the log."""
        import hashlib

        from pubsubsse import BackendUnavailable

        try:
            service.sync()
        except BackendUnavailable:  # the log was just replaced, say: asked again
            return reply({"pid": os.getpid(), "digest": None}, 503)
        parts = [json.dumps(part, sort_keys=True, default=repr).encode() for part in service.export_state()]
        return reply({"pid": os.getpid(), "digest": hashlib.sha256(b"".join(parts)).hexdigest()})

    @app.route("/test/pub-from-native-thread", methods=["POST"])
    def pub_from_native_thread():
        """Publish from a thread of gevent's threadpool (a real OS thread), the way not to do it."""
        import gevent

        body = request.get_json()
        topic = service.get_public_topic_by_id(body["topic"])
        gevent.get_hub().threadpool.spawn(topic.pub, body["data"]).get()
        return reply({"ok": True})

    @app.route("/test/remove_public_topic", methods=["POST"])
    def remove_public_topic():
        service.sync()
        service.remove_public_topic(service.get_public_topic_by_id(request.get_json()["topic"]))
        return reply({"ok": True})

    @app.route("/test/group", methods=["POST"])
    def group():
        service.sync()
        body = request.get_json()
        g = service.new_group()
        for cid in body["members"]:
            g.add_client(service.get_client_by_id(cid))
        topic = g.new_topic()
        return reply({"group": g.id, "topic": topic.id})

    @app.route("/test/remove_client", methods=["POST"])
    def remove_client():
        service.sync()
        service.remove_client(service.get_client_by_id(request.get_json()["client_id"]))
        return reply({"ok": True})

    @app.route("/test/state")
    def state():
        service.sync()
        clients = service.get_clients()
        if shared is not None:
            counted = {k.decode(): int(v) for k, v in shared.hgetall(events_key).items()}
            status_events.clear()
            status_events.update({tuple(k.split(" ")): v for k, v in counted.items()})
        return reply(
            {
                "clients": {
                    cid: {
                        "status": c.status.value,
                        "subscribed": list(c.get_subscribed_topics()),
                        "topics": list(c.get_all_topics()),
                    }
                    for cid, c in clients.items()
                },
                "public_topics": list(service.get_public_topics()),
                "groups": list(service.get_groups()),
                "status_events": [[cid, status, n] for (cid, status), n in status_events.items()],
            }
        )

    @app.route("/test/stats")
    def stats():
        gc.collect()
        greenlets = 0
        if "gevent" in sys.modules:
            from greenlet import greenlet

            greenlets = sum(1 for o in gc.get_objects() if isinstance(o, greenlet))
        return reply(
            {
                "threads": threading.active_count(),
                "greenlets": greenlets,
                "streams": sum(1 for o in gc.get_objects() if isinstance(o, Stream)),
                "direct": sum(1 for o in gc.get_objects() if isinstance(o, Stream) and o._writer is not None),
                "clients": len(service.get_clients()),
                "receiving": sum(1 for c in service.get_clients().values() if c.status.value == "receiving"),
            }
        )

    if adapter == "flask":
        return app
    if adapter == "wsgi":
        from pubsubsse.wsgi import make_wsgi_app

        endpoints, locked = make_wsgi_app(service, **main_options()), make_wsgi_app(service, **LOCKED_OPTIONS)
    else:
        from django.core.wsgi import get_wsgi_application

        endpoints = locked = get_wsgi_application()  # its URLs mount both
    return _dispatch(app, endpoints, locked, service, count_status)


def _dispatch(controls, endpoints, locked, service, count_status):
    """The WSGI app of the other adapters: /test/ to the test controls, /locked/ and the rest to the endpoints."""

    def dispatch(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/test/"):
            return controls(environ, start_response)
        if path.endswith("/event"):  # as count_status_here does under Flask
            from urllib.parse import parse_qs

            client_id = parse_qs(environ.get("QUERY_STRING", "")).get("client_id", [""])[0]
            client = service.get_client_by_id(client_id)
            if client is not None:
                count_status(client)
        if locked is not endpoints and path.startswith("/locked/"):
            script_name = environ.get("SCRIPT_NAME", "") + "/locked"
            environ = {**environ, "SCRIPT_NAME": script_name, "PATH_INFO": path[len("/locked") :]}
            return locked(environ, start_response)
        return endpoints(environ, start_response)

    return dispatch


def main() -> None:
    """Run under Werkzeug's threaded server: ``python -m tests.server_app --port N``."""
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_simple("127.0.0.1", args.port, create_app(), threaded=True)


if __name__ == "__main__":
    main()
