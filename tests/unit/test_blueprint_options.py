"""Blueprint options exercised in-process through Flask's test client."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from werkzeug.exceptions import Unauthorized

from pubsubsse import SSEPubSubService, create_blueprint
from pubsubsse.errors import BackendUnavailable
from pubsubsse.flask.blueprint import ACTIONS


@pytest.fixture
def make_app(service):
    def make(**options):
        app = Flask(__name__)
        app.register_blueprint(create_blueprint(service, end_streams_on_sigterm=False, **options), url_prefix="/ps")
        return app.test_client()

    return make


def test_authorize_sees_action_client_and_topic_and_can_refuse(service, make_app):
    seen = []
    allowed_user = {}

    def authorize(request, action, client, topic):
        seen.append((action, client.id if client else None, topic.id if topic else None))
        user = request.headers.get("X-User")
        if user is None:
            raise Unauthorized("log in first")
        return client is None or allowed_user.get(client.id) == user

    http = make_app(authorize=authorize, public_topic_creation=True)
    r = http.get("/ps/add/user")
    assert r.status_code == 401
    assert r.json == {"ok": "false", "error": "log in first"}
    assert service.get_clients() == {}
    cid = http.get("/ps/add/user", headers={"X-User": "ann"}).json["client_id"]
    allowed_user[cid] = "ann"
    tid = http.get("/ps/add/topic/public/", headers={"X-User": "ann"}).json["topic_id"]
    for path in ["/ps/sub", "/ps/event", "/ps/add/topic/private/", "/ps/remove/user"]:
        r = http.get(path, query_string={"client_id": cid, "topic": tid}, headers={"X-User": "bob"})
        assert (r.status_code, r.json) == (403, {"ok": "false", "error": "forbidden"}), path
    assert service.get_client_by_id(cid).get_subscribed_topics() == {}
    assert http.get("/ps/sub", query_string={"client_id": cid, "topic": tid}, headers={"X-User": "ann"}).json == {
        "ok": "true"
    }
    assert ("sub", cid, tid) in seen
    assert {action for action, _, _ in seen} <= set(ACTIONS)


def test_authorize_must_return_true_to_allow(service, make_app):
    http = make_app(authorize=lambda request, action, client, topic: None)
    assert http.get("/ps/add/user").status_code == 403


def test_disabled_endpoints_answer_403(service, make_app):
    http = make_app(private_topics=False, client_removal=False)
    cid = http.get("/ps/add/user").json["client_id"]
    for path in ["/ps/add/topic/public/", "/ps/add/topic/private/", "/ps/remove/topic/private/", "/ps/remove/user"]:
        r = http.post(path, data={"client_id": cid})
        assert (r.status_code, r.json["ok"], r.json["error"]) == (403, "false", "forbidden"), path
        assert "off by default" in r.json["hint"], path
    assert list(service.get_clients()) == [cid]


def test_event_response_sets_no_hop_by_hop_headers(service, make_app):
    http = make_app()
    cid = http.get("/ps/add/user").json["client_id"]
    response = http.get("/ps/event", query_string={"client_id": cid}, buffered=False)
    try:
        assert response.status_code == 200
        for header in ("Connection", "Transfer-Encoding", "Content-Length", "Keep-Alive"):
            assert header not in response.headers
        first = next(iter(response.response))
        assert re.match(rb"retry: 3000\nid: \d+\ndata: ", first)  # the init carries the current position
    finally:
        response.close()
    service.sync()  # with a shared backend the detach is applied after the stream closed
    assert service.get_client_by_id(cid).status.value == "waiting"


@pytest.mark.parametrize(
    ("fault", "status", "error", "logged"),
    [
        # A fault of ours: the details go to the log, never to the client.
        (RuntimeError("secret internals"), 500, "internal server error", "secret internals"),
        # The log did not take the change: the log says why (no client id or payload in it).
        (
            BackendUnavailable("the change was not sent within 5.0 s; it was not applied"),
            503,
            "backend unavailable",
            "backend unavailable: the change was not sent within 5.0 s",
        ),
    ],
)
def test_faults_are_json_without_details_which_go_to_the_log(service, make_app, caplog, fault, status, error, logged):
    def broken(request, action, client, topic):
        raise fault

    http = make_app(authorize=broken)
    r = http.get("/ps/add/user")
    assert r.status_code == status
    assert r.json == {"ok": "false", "error": error}
    assert str(fault)[:10] not in r.get_data(as_text=True)
    assert logged in caplog.text


def test_bad_options_are_refused():
    with pytest.raises(TypeError):
        create_blueprint(SSEPubSubService(), authorize="yes")


def test_client_timeout_removes_a_client_that_never_connects():
    import threading

    service = SSEPubSubService(client_timeout=0.1, heartbeat=0.2)
    app = Flask(__name__)
    app.register_blueprint(create_blueprint(service, end_streams_on_sigterm=False))
    http = app.test_client()
    gone = threading.Event()
    service.on_remove_client.listen(lambda c: gone.set())
    keeper = http.get("/add/user").json["client_id"]
    http.get("/add/user")
    response = http.get("/event", query_string={"client_id": keeper}, buffered=False)
    try:
        assert gone.wait(5)
    finally:
        response.close()
        service.close()
