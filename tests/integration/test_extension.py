"""The Flask extension: app factories, PUBSUBSSE_* configuration, the service from views, the CLI."""

from __future__ import annotations

import json
import uuid

import pytest
from flask import Flask

from pubsubsse import PubSubSSE, SSEPubSubService
from pubsubsse.backends import RedisBackend
from pubsubsse.flask import OPTIONS, current_service

from ..sse import drain

pubsub = PubSubSSE(client_timeout=None, heartbeat=30)


def create_app(**config) -> Flask:
    """An app factory, as Flask's tutorial writes them."""
    app = Flask(__name__)
    app.config.update(config)
    pubsub.init_app(app)

    @app.post("/orders")
    def create_order():
        pubsub.publish("orders", {"id": 42})
        return "", 204

    @app.get("/count")
    def count():
        return {"clients": len(current_service.get_clients())}

    return app


def test_each_app_of_a_factory_has_its_own_service_and_endpoints():
    one, two = create_app(), create_app(PUBSUBSSE_URL_PREFIX="/events", PUBSUBSSE_HEARTBEAT=2)
    assert one.test_client().get("/sse/add/user").status_code == 200
    assert two.test_client().get("/sse/add/user").status_code == 404
    assert two.test_client().get("/events/add/user").status_code == 200
    assert one.test_client().get("/count").json == {"clients": 1}
    assert two.test_client().get("/count").json == {"clients": 1}
    with one.app_context():
        first = pubsub.service
        assert first._heartbeat == 30  # the extension's default
    with two.app_context():
        assert pubsub.service is not first and pubsub.service._heartbeat == 2  # config wins
        assert isinstance(current_service._get_current_object(), SSEPubSubService)
    assert one.extensions["pubsubsse"].service is first


def test_views_publish_through_the_extension_to_named_topics():
    app = create_app()
    http = app.test_client()
    client_id = http.get("/sse/add/user").json["client_id"]
    with app.app_context():
        orders = pubsub.public_topic("orders")
        client = pubsub.service.get_client_by_id(client_id)
        client.sub(orders)
        last = str(client._service._core.position)
    assert http.post("/orders").status_code == 204
    with app.app_context():
        stream = client.stream(last_event_id=last)
        assert [u["data"] for m in drain(stream).messages for u in m["updates"] or []] == [{"id": 42}]
        stream.close()


def test_every_option_is_a_config_key_and_typos_are_refused():
    assert {"heartbeat", "redis_url", "backend", "authorize", "tickets", "url_prefix", "json_dumps"} <= OPTIONS
    app = create_app(PUBSUBSSE_PUBLIC_TOPIC_CREATION=True, PUBSUBSSE_STATS_ENDPOINT=True)
    assert app.test_client().get("/sse/add/topic/public/", query_string={"name": "x"}).json["topic_id"] == "T-x"
    assert app.test_client().get("/sse/stats").json["public_topics"] == 1
    with pytest.raises(ValueError, match="PUBSUBSSE_HEARTBEET"):
        create_app(PUBSUBSSE_HEARTBEET=5)
    with pytest.raises(TypeError, match="unknown options"):
        PubSubSSE(heart_beat=5)


def test_the_service_is_reached_only_inside_an_app():
    create_app()
    with pytest.raises(RuntimeError, match="application context"):
        pubsub.service  # noqa: B018 - the property is the point
    with pytest.raises(RuntimeError, match="not initialised"), Flask(__name__).app_context():
        pubsub.service  # noqa: B018


def test_the_cli_refuses_to_publish_to_a_service_in_another_process():
    result = create_app().test_cli_runner().invoke(args=["pubsubsse", "publish", "orders", '{"n": 1}'])
    assert result.exit_code != 0 and "lives in its web process" in result.output


@pytest.mark.parametrize("where", ["redis", "redis-cluster"])
def test_the_cli_publishes_through_redis_and_prints_stats(request, where):
    key = f"test:{uuid.uuid4()}"
    cluster = where == "redis-cluster"  # PUBSUBSSE_REDIS_CLUSTER: the URL names a node of a Redis Cluster
    url = request.getfixturevalue("redis_cluster" if cluster else "redis_server").url
    web = SSEPubSubService(backend=RedisBackend(url, key=key, cluster=cluster), client_timeout=None)
    try:
        client = web.new_client()
        client.sub(web.public_topic("orders"))
        last = str(client._service._core.position)
        app = create_app(PUBSUBSSE_REDIS_URL=url, PUBSUBSSE_REDIS_KEY=key, PUBSUBSSE_REDIS_CLUSTER=cluster)
        runner = app.test_cli_runner()
        result = runner.invoke(args=["pubsubsse", "publish", "orders", '{"n": 1}'])
        assert result.exit_code == 0, result.output
        assert "published to T-orders" in result.output
        assert app.extensions["pubsubsse"]._service is None, "publishing built no replica"
        bad = runner.invoke(args=["pubsubsse", "publish", "orders", "{not json"])
        assert bad.exit_code != 0 and "not JSON" in bad.output
        web.sync()
        stream = client.stream(last_event_id=last)
        assert [u["data"] for m in drain(stream).messages for u in m["updates"] or []] == [{"n": 1}]
        stream.close()
        stats = runner.invoke(args=["pubsubsse", "stats"])
        assert stats.exit_code == 0, stats.output
        assert json.loads(stats.output)["clients"] == 1
    finally:
        web.shutdown()
