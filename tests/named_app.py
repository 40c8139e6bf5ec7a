"""An app as a deployment writes it: the extension on Redis, and the public topic "orders" made at startup.

Every worker of every server runs ``create_app()`` and so asks for ``public_topic("orders")`` at
the same moment; there must be one topic. The page subscribes to it by its id, ``T-orders``.
"""

from __future__ import annotations

import os

from flask import Flask, Response

from pubsubsse import PubSubSSE

pubsub = PubSubSSE()

PAGE = """<!doctype html><meta charset="utf-8"><title>orders</title>
<script src="/sse/pubsubsse.js"></script>
<script>
window.got = [];
const ps = new PubSubSSE({ baseUrl: "/sse" });
ps.on("update", (topic, data) => window.got.push([topic, data]));
ps.start().then(() => ps.subscribe("T-orders")).then(() => { window.subscribed = true; });
</script>"""


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        PUBSUBSSE_REDIS_URL=os.environ["PUBSUBSSE_REDIS_URL"],
        PUBSUBSSE_REDIS_KEY=os.environ["PUBSUBSSE_REDIS_KEY"],
        PUBSUBSSE_HEARTBEAT=2,
    )
    pubsub.init_app(app)
    with app.app_context():
        pubsub.public_topic("orders")

    @app.get("/")
    def page() -> Response:
        return Response(PAGE, mimetype="text/html")

    @app.get("/test/ready")
    def ready() -> dict:
        return {"pid": os.getpid()}

    @app.get("/test/topics")
    def topics() -> dict:
        pubsub.service.sync()
        return {"public_topics": list(pubsub.service.get_public_topics())}

    return app
