"""What a user installs: the wheel in a fresh venv with no test extras, serving the README's app.

The wheel is built from this checkout and installed in a fresh venv per adapter, each with only
its own extras: ``[flask,gevent]`` serving the README's Flask app with the README's command (then
``[redis]`` is added and the same app runs as two workers sharing one service),
``[django,gevent]`` serving the Django example, and ``[gevent]`` alone serving the plain WSGI
example. Nothing from the test extras may be needed: a missing runtime dependency fails here.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from ..servers import ROOT, start_gunicorn_gevent

VENV_PYTHON = "bin/python"


def readme_app() -> str:
    """The Flask example of the README, marked ``<!-- app.py: ... -->``."""
    after = (ROOT / "README.md").read_text().split("<!-- app.py:", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of this checkout."""
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)], check=True)
    (built,) = wheels.glob("pubsubsse-*.whl")
    return built


def fresh_venv(tmp_path_factory, wheel, extras: str):
    """A fresh venv with the wheel installed with ``extras`` only."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    install(root, f"{wheel}[{extras}]")
    return root


def absent(root, *modules: str) -> None:
    """None of ``modules`` can be imported in the venv: no extra brought them in."""
    for module in modules:
        found = subprocess.run([str(root / VENV_PYTHON), "-c", f"import {module}"], capture_output=True)
        assert found.returncode != 0, f"{module} is installed"


def install(root, requirement: str) -> None:
    subprocess.run(
        [str(root / VENV_PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
        check=True,
        timeout=600,
    )


def serve(root, app_dir, extra_args=(), env=None):
    """The README's command: ``gunicorn -k gevent -b 127.0.0.1:PORT app:app``, from the venv."""
    env = {"PATH": "/usr/bin:/bin", **(env or {})}
    return start_gunicorn_gevent(str(root / VENV_PYTHON), "app:app", app_dir, env, extra_args)


def stop(proc) -> str:
    proc.terminate()
    output, _ = proc.communicate(timeout=30)
    return output


def check_serving(base: str) -> None:
    """A client subscribes to T-orders, opens its stream and gets what the app publishes."""
    with httpx.Client(base_url=base, timeout=10) as http:
        assert "PubSubSSE" in http.get("/sse/pubsubsse.js").text  # the browser client, from the wheel
        assert "pubsubsse-stream-source" in http.get("/sse/pubsubsse-html.js").text  # the live HTML helper too
        client = http.get("/sse/add/user").json()["client_id"]
        assert http.get("/sse/sub", params={"client_id": client, "topic": "T-orders"}).json() == {"ok": "true"}
        with http.stream("GET", "/sse/event", params={"client_id": client}) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 3000"
            assert http.post("/orders/7/shipped").status_code == 204
            for line in lines:
                if '"updates":[' in line:
                    assert '{"order":7,"status":"shipped"}' in line
                    return
        raise AssertionError("no update arrived")


@pytest.mark.timeout(900)
def test_the_wheel_with_flask_and_gevent_then_redis_serves_the_readme_app(
    wheel, tmp_path_factory, tmp_path, redis_server
):
    """``pip install pubsubsse[flask,gevent]``, as the README says, then ``[redis]`` for two workers."""
    root = fresh_venv(tmp_path_factory, wheel, "flask,gevent")
    python = str(root / VENV_PYTHON)
    absent(root, "pytest", "redis", "psycopg", "hypothesis", "playwright", "django")  # no test extras here
    (tmp_path / "app.py").write_text(readme_app())

    proc, base = serve(root, tmp_path)
    try:
        check_serving(base)
    finally:
        output = stop(proc)
    assert "Traceback" not in output, output

    install(root, f"{wheel}[redis]")
    env = {"FLASK_PUBSUBSSE_REDIS_URL": redis_server.url, "FLASK_PUBSUBSSE_REDIS_KEY": "install-test"}
    proc, base = serve(root, tmp_path, ["-w", "2"], env)
    try:
        for _ in range(3):  # whichever worker answers
            check_serving(base)
        publisher = (
            "import sys; from pubsubsse import Publisher; "
            "Publisher(sys.argv[1], redis_key='install-test').publish('orders', 1)"
        )
        subprocess.run([python, "-c", publisher, redis_server.url], check=True, timeout=60)
    finally:
        output = stop(proc)
    assert "Traceback" not in output, output


@pytest.mark.timeout(900)
def test_the_wheel_with_django_serves_the_django_example_without_flask(wheel, tmp_path_factory, tmp_path):
    """``pip install pubsubsse[django,gevent]`` and the example project, copied out of the checkout."""
    import shutil

    from .test_django import check_django_demo, serve_django_demo

    root = fresh_venv(tmp_path_factory, wheel, "django,gevent")
    absent(root, "flask", "click", "pytest")
    project = tmp_path / "django_demo"
    shutil.copytree(ROOT / "example" / "django_demo", project)
    proc, base = serve_django_demo(str(root / VENV_PYTHON), project, env={"PATH": "/usr/bin:/bin"})
    try:
        check_django_demo(base)
    finally:
        output = stop(proc)
    assert "Traceback" not in output, output


def plain_wsgi_app() -> str:
    """The plain WSGI example of the frameworks guide, marked ``<!-- wsgi app.py: ... -->``."""
    after = (ROOT / "docs" / "guides" / "frameworks.md").read_text().split("<!-- wsgi app.py:", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.timeout(900)
def test_the_wheel_alone_serves_the_plain_wsgi_example(wheel, tmp_path_factory, tmp_path):
    """``pip install pubsubsse[gevent]``: no framework, the frameworks guide's plain WSGI app."""
    root = fresh_venv(tmp_path_factory, wheel, "gevent")
    absent(root, "flask", "click", "django", "pytest")
    (tmp_path / "app.py").write_text(plain_wsgi_app())
    proc, base = serve(root, tmp_path)
    try:
        check_serving(base)
        from_flask = subprocess.run(
            [str(root / VENV_PYTHON), "-c", "from pubsubsse import PubSubSSE"], capture_output=True, text=True
        )
        assert "pip install 'pubsubsse[flask]'" in from_flask.stderr, from_flask.stderr
    finally:
        output = stop(proc)
    assert "Traceback" not in output, output
