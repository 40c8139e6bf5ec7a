"""The traps a new user met in the first hour, each with the test that shows it is gone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from flask import Flask

from pubsubsse import BackendUnavailable, PubSubSSE, SSEPubSubService, TopicNotFound
from pubsubsse.backends import RedisBackend

from ..http_helpers import wait_for
from ..sse import drain
from .test_django import run_django


def updates(stream, topic_id: str) -> list:
    """The data of every update of ``topic_id`` that ``stream`` has ready."""
    return [u["data"] for m in drain(stream).messages for u in m.get("updates") or [] if u["topic"] == topic_id]


# 1. An id where a name goes means that object -------------------------------------------------


def test_names_and_ids_are_both_accepted_where_a_name_goes(service):
    orders = service.public_topic("orders")
    assert service.public_topic("T-orders") is orders
    room = service.group("room")
    assert service.group("G-room") is room
    assert room.topic("T-room/chat") is room.topic("chat")
    assert set(service.get_public_topics()) == {"T-orders"}  # no T-T-orders
    with pytest.raises(ValueError, match="invalid name"):
        service.public_topic("T-")


def test_the_flask_extension_publishes_to_a_topic_given_by_its_id():
    pubsub = PubSubSSE(client_timeout=None)
    app = Flask(__name__)
    pubsub.init_app(app)
    with app.app_context():
        service = pubsub.service
        client = service.new_client()
        client.sub(pubsub.public_topic("orders"))
        stream = client.stream()
        pubsub.publish("T-orders", {"n": 1})  # the id, as on the wire and in the browser
        pubsub.publish("orders", {"n": 2})
        private = client.new_private_topic()
        pubsub.publish(private.id, {"n": 3})  # any topic's id
        with pytest.raises(TopicNotFound):
            pubsub.publish("T-nowhere/chat", 1)
        assert set(service.get_public_topics()) == {"T-orders"}
        assert updates(stream, "T-orders") == [{"n": 1}, {"n": 2}]
        stream.close()


def test_django_publish_takes_an_id_too():
    result = run_django(
        """
        from pubsubsse.django import get_service, publish, public_topic
        client = get_service().new_client()
        client.sub(public_topic("orders"))
        stream = client.stream()
        stream.read(timeout=0)
        publish("T-orders", {"n": 1})
        print(sorted(get_service().get_public_topics()), stream.read(timeout=0))
        """,
        "",
    )
    assert result.returncode == 0, result.stderr
    assert "['T-orders']" in result.stdout
    assert '"data":{"n":1}' in result.stdout


# 6. Declaring a named topic while the shared log is down ---------------------------------------


@pytest.mark.parametrize("known", [False, True], ids=["new-topic", "topic-in-the-snapshot"])
def test_named_topics_are_declared_while_redis_is_down_and_work_once_it_is_back(known):
    """An app declaring its topics at startup boots while Redis is down; the handles it got are the real ones."""
    from ..redis_server import RedisServer

    redis = RedisServer(persistent=True)
    key = f"test:{uuid.uuid4()}"
    services = []
    try:
        if known:  # another process made them and stored a snapshot
            other = SSEPubSubService(backend=RedisBackend(redis.url, key=key, snapshot_every=2), client_timeout=None)
            services.append(other)
            other.group("room").topic("chat")
            other.public_topic("orders")
            for _ in range(3):
                other.sync()
            wait_for(lambda: other.backend.transport.load_snapshot() is not None, what="a snapshot")
        redis.stop()
        svc = SSEPubSubService(backend=RedisBackend(redis.url, key=key, timeout=0.5), client_timeout=None)
        services.append(svc)
        started = time.monotonic()
        orders = svc.public_topic("orders")
        room = svc.group("room")
        chat = room.topic("chat")
        assert time.monotonic() - started < 2  # no waiting on the log
        assert (orders.id, room.id, chat.id) == ("T-orders", "G-room", "T-room/chat")
        with pytest.raises(BackendUnavailable):
            orders.pub(1)
        published = []
        orders.on_pub.listen(published.append)
        redis.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                svc.sync()
                break
            except BackendUnavailable:
                assert time.monotonic() < deadline, "the log never became ready"
                time.sleep(0.1)
        assert svc.public_topic("orders") is orders and svc.group("room") is room and room.topic("chat") is chat
        assert svc.get_public_topic_by_id("T-orders") is orders
        client = svc.new_client()
        client.sub(orders)
        stream = client.stream()
        room.add_client(client)
        client.sub(chat)
        orders.pub({"n": 1})
        chat.pub({"n": 2})
        svc.sync()
        assert published == [{"n": 1}]
        assert orders.get_clients() == {client.id: client}
        assert updates(stream, "T-orders") == [{"n": 1}]
        stream.close()
        assert json.dumps(sorted(svc.get_public_topics())) == '["T-orders"]'
    finally:
        for s in services:
            s.shutdown()
        redis.close()


# 5. No false warning from a web process ---------------------------------------------------------

UNSERVED = "a publish in a process that serves no streams"


def test_a_flask_app_publishing_before_its_first_request_gets_no_warning(caplog):
    """The demo's ticker and the README's app publish at startup: the web process must not be told it is wrong."""
    pubsub = PubSubSSE(client_timeout=None)
    app = Flask(__name__)
    pubsub.init_app(app)
    with app.app_context():
        pubsub.publish("orders", 1)
    assert UNSERVED not in caplog.text


def test_django_warns_in_a_management_command_only(tmp_path):
    """``manage.py`` commands (but runserver) serve no streams: a publish there is the mistake the warning is for."""
    code = "from pubsubsse.django import publish; publish('orders', 1)"
    in_app = run_django(code, "")
    assert in_app.returncode == 0, in_app.stderr
    assert UNSERVED not in in_app.stderr
    command = run_django(f"import sys; sys.argv = ['manage.py', 'shell']; {code}", "")
    assert command.returncode == 0, command.stderr
    assert UNSERVED in command.stderr


def test_a_script_with_its_own_in_process_service_is_warned(caplog):
    service = SSEPubSubService()
    service.new_public_topic().pub(1)
    service.shutdown()
    assert UNSERVED in caplog.text


# 4. Several workers without a shared backend; 6. booting while Redis is down -------------------


def serve_readme_app(tmp_path, extra_args=(), env=None):
    """The README's Flask app under ``gunicorn -k gevent``, from this checkout."""
    from ..servers import ROOT, start_gunicorn_gevent
    from .test_install import readme_app

    (tmp_path / "app.py").write_text(readme_app())
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})}
    return start_gunicorn_gevent(sys.executable, "app:app", tmp_path, env, extra_args)


def stop(proc) -> str:
    """Stop the server; its output. A server that does not stop in time is killed, and that fails the test."""
    proc.terminate()
    try:
        return proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the server did not stop within 60 s:\n{proc.communicate()[0]}") from None


@pytest.mark.timeout(120)
def test_two_workers_with_an_in_process_service_are_told_at_boot_and_in_the_answer(tmp_path):
    proc, base = serve_readme_app(tmp_path, ["-w", "2", "--graceful-timeout", "5"])
    try:
        answer = httpx.get(f"{base}/sse/sub", params={"client_id": f"C-{uuid.uuid4()}", "topic": "T-orders"})
        assert answer.status_code == 400 and answer.json()["error"] == "client not found"
        assert "several worker processes" in answer.json()["hint"] and "Redis" in answer.json()["hint"]
    finally:
        output = stop(proc)
    assert "gunicorn runs 2 worker processes and the service is in-process" in output, output
    assert UNSERVED not in output, output


@pytest.mark.timeout(120)
def test_one_worker_is_not_warned(tmp_path):
    proc, base = serve_readme_app(tmp_path)
    try:
        answer = httpx.get(f"{base}/sse/sub", params={"client_id": f"C-{uuid.uuid4()}", "topic": "T-orders"})
        assert "several worker processes" not in answer.json()["hint"]
    finally:
        output = stop(proc)
    assert "worker processes" not in output and UNSERVED not in output, output


@pytest.mark.timeout(120)
def test_the_readme_app_boots_while_redis_is_down(tmp_path):
    """It declares ``public_topic("orders")`` at startup: the worker must boot, answer 503 meanwhile."""
    from ..servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    proc, base = serve_readme_app(tmp_path, env={"FLASK_PUBSUBSSE_REDIS_URL": url})
    try:
        assert httpx.get(f"{base}/sse/add/user").status_code == 503
    finally:
        output = stop(proc)
    assert "Worker failed to boot" not in output and "Traceback" not in output, output


# 8. Errors that say what to do -----------------------------------------------------------------


def test_errors_say_what_to_do():
    pubsub = PubSubSSE(client_timeout=None)
    app = Flask(__name__)
    pubsub.init_app(app)
    http = app.test_client()
    forbidden = http.get("/sse/add/topic/public/").json
    assert forbidden["error"] == "forbidden" and "public_topic_creation=True" in forbidden["hint"]
    client = http.get("/sse/add/user").json["client_id"]
    with app.app_context():
        pubsub.public_topic("orders")
    missing = http.get("/sse/sub", query_string={"client_id": client, "topic": "orders"}).json
    assert missing["error"] == "topic not found" and "T-orders" in missing["hint"]
    unknown = http.get("/sse/sub", query_string={"client_id": client, "topic": "T-nowhere"}).json
    assert "declare it at startup" in unknown["hint"]
    gone = http.get("/sse/sub", query_string={"client_id": "C-nobody", "topic": "T-orders"}).json
    assert "/add/user" in gone["hint"] and "worker" not in gone["hint"]
    moved = http.get("/sse/add/topic/public")
    assert moved.status_code == 308 and moved.json["error"] == "moved to /sse/add/topic/public/"


# 9. The docs' curl session runs as written ----------------------------------------------------


@pytest.mark.timeout(120)
def test_the_curl_session_of_the_protocol_page_prints_what_the_page_shows(tmp_path):
    from ..servers import ROOT

    page = (ROOT / "docs" / "protocol.md").read_text()
    session = page.split("<!-- curl-session -->\n```sh\n", 1)[1].split("```", 1)[0]
    shown = page.split("prints, the stream's events", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    mistake = page.split("A mistake gets an answer", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    command, answer = mistake.strip().splitlines()
    new_client = next(line for line in session.splitlines() if line.startswith("CLIENT="))

    def bash(script: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "BASE": base}
        return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)

    proc, base = serve_readme_app(tmp_path)
    try:
        ran = bash(session)
        asked = bash(f"{new_client}\n{command.removeprefix('$ ')}")
    finally:
        stop(proc)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == shown, ran.stdout
    assert asked.stdout.strip() == answer


def test_a_publish_by_name_appends_one_entry_once_the_topic_exists(redis_server):
    """publish("orders") made the topic ensured on every call: two entries, two round trips to the log."""
    svc = SSEPubSubService(backend=RedisBackend(redis_server.url, key=f"test:{uuid.uuid4()}"), client_timeout=None)
    try:
        svc.publish("orders", 1)  # creates T-orders: two entries
        svc.sync()
        before = svc.stats()["log_entries_applied"]
        svc.publish("orders", 2)
        svc.publish("T-orders", 3)
        svc.sync()
        assert svc.stats()["log_entries_applied"] - before == 3  # two publishes and the sync's marker
    finally:
        svc.shutdown()
