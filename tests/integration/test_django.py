"""The Django adapter's own behaviour: settings, the hook's exceptions, no Flask, and the example project.

The HTTP suites run against the Django adapter too (the ``django`` server kind); these tests
cover what only Django has. Each runs Django in a process of its own (settings are global).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from ..servers import ROOT, start_gunicorn_gevent


def run_django(code: str, settings: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh process after configuring Django with ``settings`` (Python keyword arguments)."""
    script = textwrap.dedent(
        f"""
        import django
        from django.conf import settings
        settings.configure(
            DEBUG=False, SECRET_KEY="x", ALLOWED_HOSTS=["testserver"], ROOT_URLCONF="tests.django_hook_urls",
            INSTALLED_APPS=["pubsubsse.django"], MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
            {settings}
        )
        django.setup()
        """
    ) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_an_unknown_settings_key_fails_at_startup():
    result = run_django("", 'PUBSUBSSE={"heartbeat": 5, "hearbeat": 5}')
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "hearbeat" in result.stderr


def test_the_hook_by_dotted_path_gets_the_django_request_and_may_raise_permission_denied():
    code = """
        from django.test import Client
        http = Client()
        assert http.get("/sse/add/user").status_code == 200
        refused = http.get("/sse/add/user", HTTP_X_USER="mallory")
        assert refused.status_code == 403 and refused.json() == {"ok": "false", "error": "mallory may not"}, refused
        anonymous = http.get("/sse/add/user", HTTP_X_USER="")
        assert anonymous.status_code == 403 and anonymous.json()["error"] == "forbidden"
        # CSRF does not apply: the endpoints take no cookie of their own.
        form = "application/x-www-form-urlencoded"
        assert http.post("/sse/add/user", content_type=form, HTTP_X_USER="alice").status_code == 200
        print("ok")
    """
    result = run_django(code, 'PUBSUBSSE={"authorize": "tests.django_hook_urls.authorize"}')
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_a_django_process_never_imports_flask():
    code = """
        import sys
        from django.test import Client
        import pubsubsse
        assert Client().get("/sse/add/user").status_code == 200
        assert "flask" not in sys.modules, "flask imported"
        print("ok")
    """
    result = run_django(code, "PUBSUBSSE={}")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def check_django_demo(base: str) -> None:
    """example/django_demo's page, endpoints and publishing view, as a browser uses them."""
    with httpx.Client(base_url=base, timeout=10) as http:
        # Before anything was published or any page shown: the app declares "news" at startup.
        client = http.post("/sse/add/user").json()["client_id"]
        assert http.post("/sse/sub", data={"client_id": client, "topic": "T-news"}).json() == {"ok": "true"}
        page = http.get("/")
        assert page.status_code == 200 and "T-news" in page.text and "/sse/pubsubsse.js" in page.text
        assert "PubSubSSE" in http.get("/sse/pubsubsse.js").text
        token = page.text.split('"X-CSRFToken": "', 1)[1].split('"', 1)[0]
        with http.stream("GET", "/sse/event", params={"client_id": client}) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            said = http.post("/say", data={"text": "hello from Django"}, headers={"X-CSRFToken": token})
            assert said.status_code == 200, said.text
            for line in lines:
                if '"updates":[' in line:
                    assert '"hello from Django"' in line
                    break
        # Without the CSRF token the app's own view is protected as usual.
        assert http.post("/say", data={"text": "forged"}, headers={"X-CSRFToken": "bad"}).status_code == 403


def serve_django_demo(python: str, directory: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start example/django_demo (found in ``directory``) under gunicorn's gevent worker; wait until it answers."""
    return start_gunicorn_gevent(python, "demo.wsgi", directory, env)


@pytest.mark.timeout(120)
def test_the_django_example_publishes_to_the_page_under_gunicorn_gevent():
    proc, base = serve_django_demo(sys.executable, ROOT / "example" / "django_demo")
    try:
        check_django_demo(base)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert "Traceback" not in output, output


def _databases() -> str:
    from urllib.parse import urlsplit

    from ..conftest import POSTGRES_DSN

    url = urlsplit(POSTGRES_DSN)
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": url.path.lstrip("/"),
        "USER": url.username or "",
        "PASSWORD": url.password or "",
        "HOST": url.hostname or "",
        "PORT": str(url.port or 5432),
    }
    return f"DATABASES={{'default': {database!r}}}"


_RECEIVED = """
    import json, time
    from django.db import transaction
    from pubsubsse.django import get_service, publish

    service = get_service()
    client = service.new_client()
    client.sub(service.public_topic("orders"))

    def received():
        service.sync()
        events = service._core.since(service._core.clients[client.id], 0)
        return [json.loads(b)["updates"][0]["data"] for _, b in events if b'"updates":[{' in b]

    def wait(expected):
        deadline = time.monotonic() + 10
        while received() != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received() == expected, received()
"""


@pytest.mark.timeout(60)
def test_publish_in_atomic_joins_the_transaction_on_the_postgresql_backend():
    import uuid

    from ..conftest import POSTGRES_DSN, drop_postgres_tables

    name = f"t_{uuid.uuid4().hex[:16]}"
    code = (
        _RECEIVED
        + """
    from django.db import connection
    with transaction.atomic():
        publish("orders", "committed")
        with connection.cursor() as cursor:  # written in this transaction: in its outbox, not in the log
            cursor.execute("SELECT count(*) FROM %s_outbox" % service.backend.transport.name)
            assert cursor.fetchone()[0] == 1
    try:
        with transaction.atomic():
            publish("orders", "rolled back")
            raise RuntimeError
    except RuntimeError:
        pass
    publish("orders", "outside a transaction")
    wait(["committed", "outside a transaction"])
    service.shutdown()
    print("ok")
    """
    )
    settings = (
        _databases() + ", PUBSUBSSE={'client_timeout': None, 'backend': __import__('pubsubsse.backends.postgres', "
        f"fromlist=['x']).PostgresBackend({POSTGRES_DSN!r}, name={name!r})}}"
    )
    try:
        result = run_django(code, settings)
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    finally:
        drop_postgres_tables(name)


@pytest.mark.timeout(60)
def test_publish_in_atomic_waits_for_the_commit_with_another_backend():
    code = (
        _RECEIVED
        + """
    with transaction.atomic():
        publish("orders", "committed")
        assert received() == []  # not before the commit: a browser would fetch what is not visible yet
    try:
        with transaction.atomic():
            publish("orders", "rolled back")
            raise RuntimeError
    except RuntimeError:
        pass
    wait(["committed"])
    try:
        with transaction.atomic():
            publish("orders", object())  # refused at once, in the caller, not after the commit
    except TypeError:
        print("ok")
    """
    )
    result = run_django(code, _databases() + ", PUBSUBSSE={'client_timeout': None}")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_redis_cluster_is_a_setting_and_the_service_runs_on_the_cluster(redis_cluster):
    code = """
        from pubsubsse.django import get_service, publish
        service = get_service()
        client = service.new_client()
        client.sub(service.public_topic("orders"))
        publish("orders", {"n": 1})
        service.sync()
        print(service.backend.transport.key, client._service._core.position)
    """
    settings = f'PUBSUBSSE={{"redis_url": "{redis_cluster.url}", "redis_cluster": True, "redis_key": "dj"}}'
    result = run_django(code, settings)
    assert result.returncode == 0 and result.stdout.split()[0] == "{dj}", result.stderr
    refused = run_django(
        "from pubsubsse.django import get_service; get_service()",
        'PUBSUBSSE={"redis_url": "redis://127.0.0.1:1/0", "redis_cluster": "yes"}',
    )
    assert refused.returncode != 0 and "redis_cluster must be True or False" in refused.stderr
    settings = settings.replace('"dj"}', '"dj3", "redis_partitions": 3}')
    code = code.replace("service.backend.transport.key", "*(stream.key for stream in service.backend.streams)")
    result = run_django(code, settings)
    assert result.returncode == 0 and result.stdout.split()[:3] == ["{dj3}", "{dj3:1}", "{dj3:2}"], result.stderr
    refused = run_django(
        "from pubsubsse.django import get_service; get_service()",
        'PUBSUBSSE={"redis_url": "redis://127.0.0.1:1/0", "redis_partitions": "3"}',
    )
    assert refused.returncode != 0 and "partitions must be an int" in refused.stderr


@pytest.mark.parametrize("shorthand", ["redis_url", "postgres_dsn"])
def test_the_backend_shorthands_are_settings_of_the_service_not_of_the_endpoints(shorthand):
    """``redis_url`` reached the endpoints' options: the URLs of a project sharing its service failed to load."""
    code = """
        from django.urls import resolve
        from pubsubsse.django import get_service
        assert resolve("/sse/add/user")
        print(type(get_service().backend).__name__)
    """
    url = {"redis_url": "redis://127.0.0.1:1/0", "postgres_dsn": "postgresql://postgres@127.0.0.1:1/x"}[shorthand]
    result = run_django(code, f'PUBSUBSSE={{"{shorthand}": "{url}"}}')  # nobody there: the service starts unready
    expected = {"redis_url": "RedisBackend", "postgres_dsn": "PostgresBackend"}[shorthand]
    assert result.returncode == 0 and result.stdout.strip() == expected, result.stderr


@pytest.mark.timeout(60)
def test_broadcasts_push_saved_and_deleted_rows_with_the_transaction():
    """``broadcasts``: a row's template rendered once per change; a rolled back save sends nothing."""
    import uuid

    table = f"todos_{uuid.uuid4().hex[:10]}"
    code = (
        _RECEIVED
        + f"""
    from django.db import connection, models
    from pubsubsse.django import broadcasts
    from pubsubsse.html import turbo

    class Todo(models.Model):
        title = models.CharField(max_length=50)

        class Meta:
            app_label = "pubsubsse"
            db_table = {table!r}
            managed = False

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE {table} (id serial PRIMARY KEY, title varchar(50) NOT NULL)")
    try:
        stop = broadcasts(Todo, "orders", "row.html")
        with transaction.atomic():
            todo = Todo.objects.create(title="milk")
            assert received() == []  # not before the commit
        try:
            with transaction.atomic():
                Todo.objects.create(title="rolled back")
                raise RuntimeError
        except RuntimeError:
            pass
        todo.title = "oat milk"
        todo.save()  # outside a transaction: at once
        todo_id = todo.pk
        todo.delete()
        row = '<li id="todo_%d">%s</li>'
        wait([
            turbo("append", "todos", row % (todo_id, "milk")),
            turbo("replace", "todo_%d" % todo_id, row % (todo_id, "oat milk")),
            turbo("remove", "todo_%d" % todo_id),
        ])
        stop()
        Todo.objects.create(title="after stop")
        time.sleep(0.2)
        assert len(received()) == 3
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE {table}")
    print("ok")
    """
    )
    templates = (
        "TEMPLATES=[{'BACKEND': 'django.template.backends.django.DjangoTemplates', 'OPTIONS': {'loaders': "
        "[('django.template.loaders.locmem.Loader', "
        "{'row.html': '<li id=\"todo_{{ todo.pk }}\">{{ object.title }}</li>'})]}}]"
    )
    result = run_django(code, _databases() + ", PUBSUBSSE={'client_timeout': None}, " + templates)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
